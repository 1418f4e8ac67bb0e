"""changeos jobs: a job's timeline (fixed when it is accepted), the ShowJob body, and `JobBook`,
which keeps every job with its per-server order, the concurrency count and the purge of old ones,
and answers the peak concurrency per failure domain (zone, server group) by a sweep.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.simulator.shared import JsonObject, Timestamps

JOB_TYPE = "changeOS"
JOB_FAIL_CODE = "Ecs.0202"
JOB_FAIL_REASON = "Creating the system disk failed."
NEVER = math.inf  # the end of a stuck job


@dataclass(frozen=True)
class SimJob:
    """A changeos job: its whole timeline is fixed when it is accepted."""

    id: str
    sub_job_id: str
    server_id: str
    image_id: str
    key_name: str | None
    created_at: float
    running_at: float
    finished_at: float  # NEVER: stuck, RUNNING forever
    fails: bool
    number: int = 0  # its rank among the server's jobs, from 0
    broken: bool = False  # a SUCCESS that leaves the server in ERROR on its old image
    disk_size: int = 40  # GB of the system disk the job creates in place of the old one
    # What a failed job reports (only read when `fails`).
    fail_code: str = JOB_FAIL_CODE
    fail_reason: str = JOB_FAIL_REASON
    # The failure domains of its server when it was accepted: a server replaced later (in
    # another zone or group) does not move the jobs it already ran.
    availability_zone: str = ""
    server_group: str | None = None

    @property
    def stuck(self) -> bool:
        return self.finished_at == NEVER

    def is_final(self, now: float) -> bool:
        return now >= self.finished_at

    def status(self, now: float) -> str:
        if self.is_final(now):
            return "FAIL" if self.fails else "SUCCESS"
        return "RUNNING" if now >= self.running_at else "INIT"


def job_body(job: SimJob, now: float, timestamps: Timestamps) -> JsonObject:
    """The ShowJob body as captured from the cloud, every key included."""
    status = job.status(now)
    failed = status == "FAIL"
    end_time = timestamps.iso_ms(job.finished_at) if job.is_final(now) else ""
    entities: JsonObject = {"server_id": job.server_id}
    if status != "INIT":  # as captured: a job has no sub-jobs until it starts running
        entities["sub_jobs_total"] = 1
        entities["sub_jobs"] = [
            {
                "status": status,
                "entities": {
                    "server_id": job.server_id,
                    "errorcode_message": job.fail_reason if failed else None,
                },
                "job_id": job.sub_job_id,
                "job_type": JOB_TYPE,
                "begin_time": timestamps.iso_ms(job.running_at),
                "end_time": end_time,
                "error_code": job.fail_code if failed else None,
                "fail_reason": job.fail_reason if failed else None,
            }
        ]
    return {
        "status": status,
        "entities": entities,
        "job_id": job.id,
        "job_type": JOB_TYPE,
        "begin_time": timestamps.iso_ms(job.created_at),
        "end_time": end_time,
        "error_code": job.fail_code if failed else None,
        "fail_reason": job.fail_reason if failed else None,
    }


class JobBook:
    """Every job ever accepted. Purged jobs keep their record (the server's state and the
    ground truth derive from it); they only stop being visible to ShowJob."""

    def __init__(self) -> None:
        self._jobs: dict[str, SimJob] = {}
        self._by_server: dict[str, list[SimJob]] = {}
        self._ends: list[float] = []  # heap of the ends of jobs maybe still running
        self._purge_queue: list[tuple[float, str]] = []  # heap of (end, job id), purge order
        self._purged: set[str] = set()
        self.max_concurrent = 0

    def add(self, job: SimJob, now: float) -> None:
        self._jobs[job.id] = job
        self._by_server.setdefault(job.server_id, []).append(job)
        heapq.heappush(self._ends, job.finished_at)
        if not job.stuck:
            heapq.heappush(self._purge_queue, (job.finished_at, job.id))
        while self._ends and self._ends[0] <= now:
            heapq.heappop(self._ends)
        self.max_concurrent = max(self.max_concurrent, len(self._ends))

    def record(self, job_id: str) -> SimJob | None:
        """The job, purged or not."""
        return self._jobs.get(job_id)

    def visible(self, job_id: str) -> SimJob | None:
        """The job as ShowJob sees it: None once purged."""
        return None if job_id in self._purged else self._jobs.get(job_id)

    def of_server(self, server_id: str) -> list[SimJob]:
        return self._by_server.get(server_id, [])

    def purge(self, now: float, ttl: float | None) -> None:
        """Forget (for ShowJob) the jobs that ended at least `ttl` seconds ago."""
        if ttl is None:
            return  # the queue waits: a ttl set later purges them in end order
        while self._purge_queue and self._purge_queue[0][0] + ttl <= now:
            self._purged.add(heapq.heappop(self._purge_queue)[1])

    @property
    def purged_count(self) -> int:
        return len(self._purged)

    def running_count(self, now: float) -> int:
        return sum(1 for end in self._ends if end > now)

    def broken_count(self, now: float) -> int:
        """Jobs that ended SUCCESS and left their server broken."""
        return sum(1 for job in self._jobs.values() if job.broken and job.is_final(now))

    def count_by(self, domain: Callable[[SimJob], str | None]) -> Counter[str]:
        """How many jobs each `domain` (a zone, a group; None: the job counts for none) had."""
        return Counter(key for key in map(domain, self._jobs.values()) if key is not None)

    def peak_by(self, domain: Callable[[SimJob], str | None]) -> dict[str, int]:
        """Per `domain`, the most jobs that ran at one moment, each from its acceptance to its
        end (a stuck one: forever); None: the job counts for none.

        One sweep over the start and end events, sorted: O(n log n) over every job ever
        accepted, purged ones included (they ran all the same), cheap at stats time for tens
        of thousands of jobs. The peak only rises at a start, and every start is in the past,
        so ends still to come (a running job) change nothing.
        """
        events: dict[str, list[tuple[float, int]]] = {}
        for job in self._jobs.values():
            key = domain(job)
            # A job that ended the moment it began never ran beside another: as for
            # `max_concurrent`, which drops the ends at or before a new start.
            if key is None or job.finished_at <= job.created_at:
                continue
            events.setdefault(key, []).extend(((job.created_at, 1), (job.finished_at, -1)))
        peaks: dict[str, int] = {}
        for key, timeline in events.items():
            # At one moment an end (-1) sorts before a start (+1): a job that ended exactly
            # when another started does not overlap it.
            timeline.sort()
            running = peak = 0
            for _, change in timeline:
                running += change
                peak = max(peak, running)
            peaks[key] = peak
        return peaks
