"""Whether a server's OS is up and serving (`GET /_sim/health/{server_id}`, the target a health
gate probes): the verdict (`assess`), derived from the server's jobs like every other state, and
the record of the probes received (`HealthProbes`), against which a test checks that a client
never called a server healthy before the simulator did.

Healthy: the server exists, is ACTIVE, idle, runs an image not listed as broken, and
`boot_seconds` have passed since its last change of OS ended (a change succeeds once the new
disk is attached; the OS still boots and takes its keys for minutes after: fleet-safety-api.md
section 11). An image being made from the server does not matter: IMS's guide says running work
is not affected.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.simulator.jobs import SimJob
from orchestrator.simulator.servers import SimServer, observe
from orchestrator.simulator.shared import JsonObject, Timestamps


@dataclass(frozen=True)
class Health:
    """One probe's verdict."""

    healthy: bool
    why: str = ""  # when not healthy
    status: str | None = None  # the server's, when it exists
    image_id: str | None = None
    since: float | None = None  # when healthy: the moment (model time) it became so


def assess(
    server: SimServer | None,
    jobs: Sequence[SimJob],
    *,
    broken_images: frozenset[str],
    boot_seconds: float,
    now: float,
) -> Health:
    """The server's health at `now`; `jobs` are its changeos jobs, oldest first."""
    if server is None:
        return Health(False, "no such server")
    seen = observe(server, jobs, now)
    why = _why_not(server, seen.status, seen.image_id, broken_images, now)
    since = _ready_at(server, jobs, boot_seconds)
    if why is None and now < since:
        why = f"still booting: up in {since - now:.1f} s"
    if why is not None:
        return Health(False, why, status=seen.status, image_id=seen.image_id)
    return Health(True, status=seen.status, image_id=seen.image_id, since=since)


def _why_not(
    server: SimServer, status: str, image_id: str, broken_images: frozenset[str], now: float
) -> str | None:
    """What keeps the server from being healthy, whatever the time since its last change."""
    if status == "REBUILD":
        return "its OS is being changed (REBUILD)"
    if status != "ACTIVE":
        return f"the server is {status}"
    task = server.busy_task(now)
    if task is not None:
        return f"the server is busy ({task})"
    if image_id.lower() in broken_images:
        return f"the image {image_id} boots broken"
    return None


def _ready_at(server: SimServer, jobs: Sequence[SimJob], boot_seconds: float) -> float:
    """When the server became (or becomes) healthy, given it is ACTIVE and idle now."""
    ready = server.created_at if server.busy_until is None else server.busy_until
    changes = jobs[server.first_job :]  # those before the server was last replaced do not count
    if changes:
        ready = max(ready, changes[-1].finished_at + boot_seconds)
    return ready


def health_body(server_id: str, health: Health, timestamps: Timestamps) -> JsonObject:
    """What the endpoint answers (200 when `healthy`, else 503); `healthy_since` in Unix time."""
    body: JsonObject = {
        "healthy": health.healthy,
        "server_id": server_id,
        "status": health.status,
        "image_id": health.image_id,
    }
    if health.healthy:
        assert health.since is not None  # assess() sets it on every healthy verdict
        body["healthy_since"] = timestamps.unix(health.since)
    else:
        body["why"] = health.why
    return body


class HealthProbes:
    """The probes received, per server, and the first healthy answer since each server's
    latest job."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        # server id -> (how many jobs it had then, Unix time of the first healthy answer)
        self._first_healthy: dict[str, tuple[int, float]] = {}

    def record(self, server_id: str, health: Health, *, job_count: int, at: float) -> None:
        self._counts[server_id] += 1
        if not health.healthy:
            return
        known = self._first_healthy.get(server_id)
        if known is None or known[0] != job_count:  # none yet since the latest job
            self._first_healthy[server_id] = (job_count, at)

    @property
    def total(self) -> int:
        return self._counts.total()

    def by_server(self) -> dict[str, int]:
        return dict(self._counts)

    def first_healthy(self, job_count_of: dict[str, int]) -> dict[str, float]:
        """Unix time of the first healthy answer per server, since its latest job (a server
        given a job since has none until it is healthy again); `job_count_of` gives the jobs
        each server has now."""
        return {
            server_id: at
            for server_id, (job_count, at) in self._first_healthy.items()
            if job_count_of.get(server_id, 0) == job_count
        }
