"""IMS jobs that make an image from a server: a job's timeline (fixed when CreateImage accepts
it), the IMS ShowJob body (fleet-safety-api.md section 3), and `ImageJobBook`, which keeps
every such job by id and by server.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from orchestrator.simulator.shared import JsonObject, Timestamps

IMAGE_JOB_TYPE = "createImageByInstance"
IMAGE_JOB_TASK = "CreateImageByInstanceTask"
# Chosen (Unconfirmed): no public source shows a failed image job; IMG.0006 is the error
# table's "the system disk cannot be imaged".
IMAGE_JOB_FAIL_CODE = "IMG.0006"
IMAGE_JOB_FAIL_REASON = "Creating the image from the system disk of the ECS failed."


@dataclass(frozen=True)
class ImageJob:
    """A job that makes the image `image_id` from the server `server_id`."""

    id: str
    image_id: str
    image_name: str
    server_id: str
    created_at: float
    running_at: float
    finished_at: float
    fails: bool  # ends FAIL, and the image is then `killed`

    def is_final(self, now: float) -> bool:
        return now >= self.finished_at

    def status(self, now: float) -> str:
        if self.is_final(now):
            return "FAIL" if self.fails else "SUCCESS"
        return "RUNNING" if now >= self.running_at else "INIT"

    def progress(self, now: float) -> float:
        """The share of the job done, from 0 to 1 (IMS's `process_percent`)."""
        if self.is_final(now):
            return 1.0
        return max(0.0, (now - self.created_at) / (self.finished_at - self.created_at))

    def active_at(self, now: float) -> float | None:
        """When its image became active; None if it has not (yet), or never will."""
        return self.finished_at if self.is_final(now) and not self.fails else None


def image_job_body(job: ImageJob, now: float, timestamps: Timestamps) -> JsonObject:
    """The IMS ShowJob body, every key of the docs' example."""
    status = job.status(now)
    failed = status == "FAIL"
    return {
        "status": status,
        "job_id": job.id,
        "job_type": IMAGE_JOB_TYPE,
        "begin_time": timestamps.ims_ms(job.created_at),
        "end_time": timestamps.ims_ms(job.finished_at) if job.is_final(now) else "",
        "error_code": IMAGE_JOB_FAIL_CODE if failed else None,
        "fail_reason": IMAGE_JOB_FAIL_REASON if failed else None,
        # Chosen (Unconfirmed whether the cloud shows it before SUCCESS): the image id is there
        # from the start, as the image itself is listed from the start.
        "entities": {
            "image_id": job.image_id,
            "image_name": job.image_name,
            "process_percent": round(job.progress(now), 3),
            "current_task": IMAGE_JOB_TASK,
        },
    }


class ImageJobBook:
    """Every image job ever accepted, by id and, in order, by server."""

    def __init__(self) -> None:
        self._jobs: dict[str, ImageJob] = {}
        self._by_server: dict[str, list[ImageJob]] = {}

    def add(self, job: ImageJob) -> None:
        self._jobs[job.id] = job
        self._by_server.setdefault(job.server_id, []).append(job)

    def get(self, job_id: str) -> ImageJob | None:
        return self._jobs.get(job_id)

    def visible(self, job_id: str, now: float, ttl: float | None) -> ImageJob | None:
        """The job as ShowJob sees it: gone `ttl` seconds after it ended, like changeos jobs."""
        job = self._jobs.get(job_id)
        if job is None or (ttl is not None and now >= job.finished_at + ttl):
            return None
        return job

    def running_on(self, server_id: str, now: float) -> bool:
        """Whether an image is being made from the server."""
        jobs = self._by_server.get(server_id, [])
        return bool(jobs) and not jobs[-1].is_final(now)

    def __iter__(self) -> Iterator[ImageJob]:
        return iter(self._jobs.values())

    def __len__(self) -> int:
        return len(self._jobs)
