"""Decisions about one server from what the cloud shows of it: pure functions, typed values.

Every path that needs one of these judgements calls the function here: the reconcile after an
unknown outcome and the check after a job (pre-flight, the judgement before a changeos, is
`domain.preflight`). Nothing in this module reads a database, a clock or the network.

The reconcile rule is the project's central promise (DESIGN.md invariant 3): after a changeos
whose answer never arrived, the server is sent the change again only when it is exactly as it
was just before the call. Any sign that something happened (a rebuild running, `ERROR`, another
system disk, a later `updated`, another image) settles the server from what it shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

# Task states the cloud shows while it changes or reinstalls the OS (ecs-api.md section 4).
REBUILD_TASK_STATES = frozenset({"rebuilding", "rebuild_block_device_mapping", "rebuild_spawning"})
# Statuses in which the server is in the middle of an operation, whatever its task state says.
TRANSITIONAL_STATUSES = frozenset({"REBUILD", "BUILD", "RESIZE"})


@dataclass(frozen=True)
class ServerSnapshot:
    """What the cloud shows of a server at one moment: the facts a decision may use.

    `updated` is the cloud's own timestamp string, compared for equality only (no clock of ours
    is involved); `system_disk_id` is the volume attached with `bootIndex` "0" (a change of OS
    replaces it).
    """

    status: str
    task_state: str | None
    image_id: str | None
    updated: str | None = None
    system_disk_id: str | None = None

    @property
    def is_rebuilding(self) -> bool:
        return self.status == "REBUILD" or (self.task_state or "") in REBUILD_TASK_STATES

    @property
    def is_idle(self) -> bool:
        return not self.task_state and self.status not in TRANSITIONAL_STATUSES

    @property
    def is_error(self) -> bool:
        return self.status == "ERROR"

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "task_state": self.task_state,
            "image_id": self.image_id,
            "updated": self.updated,
            "system_disk_id": self.system_disk_id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServerSnapshot:
        def text(name: str) -> str | None:
            value = data.get(name)
            return None if value in (None, "") else str(value)

        return cls(
            status=str(data.get("status") or ""),
            task_state=text("task_state"),
            image_id=text("image_id"),
            updated=text("updated"),
            system_disk_id=text("system_disk_id"),
        )

    def differences(self, other: ServerSnapshot) -> list[str]:
        """The names of the facts that differ between the two snapshots."""
        mine, theirs = self.as_dict(), other.as_dict()
        return [name for name in mine if mine[name] != theirs[name]]


class Reconcile(StrEnum):
    """How a changeos with an unknown outcome is settled from the server itself."""

    RUNNING = "running"  # a rebuild runs: follow it to its end
    SUCCEEDED = "succeeded"  # idle, healthy and on the target image: the change was applied
    BROKEN = "broken"  # on the target image but in ERROR: applied, and left the server broken
    CHANGED = "changed"  # something happened to the server: never sent again automatically
    RESEND = "resend"  # exactly as before the call: the call did not land, it may go again
    WAIT = "wait"  # busy with another operation: look again later


@dataclass(frozen=True)
class ReconcileVerdict:
    outcome: Reconcile
    # The facts that differ from the snapshot taken before the call (empty: none, or no
    # snapshot), so a person can check the decision in the server's history.
    changed: tuple[str, ...] = ()

    def details(self, before: ServerSnapshot | None, seen: ServerSnapshot) -> dict[str, Any]:
        return {
            "server": seen.as_dict(),
            "before_call": before.as_dict() if before is not None else None,
            "changed": list(self.changed),
        }


def reconcile_verdict(
    before: ServerSnapshot | None, seen: ServerSnapshot, *, target_image: str
) -> ReconcileVerdict:
    """Settle a changeos whose answer never arrived from the server as it is now.

    Without a snapshot from before the call (a row written by an older version), nothing proves
    the call did not land, so the server is never sent again: it is CHANGED unless it shows the
    change running or done.
    """
    changed = tuple(before.differences(seen)) if before is not None else ()
    if seen.is_rebuilding:
        return ReconcileVerdict(Reconcile.RUNNING, changed)
    if not seen.is_idle:
        return ReconcileVerdict(Reconcile.WAIT, changed)
    if before is not None and not changed:
        # Checked before the image: a server that was already on the target image (skip
        # matching off) and shows no change was not changed by the lost call either.
        return ReconcileVerdict(Reconcile.RESEND)
    if seen.image_id == target_image:
        outcome = Reconcile.BROKEN if seen.is_error else Reconcile.SUCCEEDED
        return ReconcileVerdict(outcome, changed)
    return ReconcileVerdict(Reconcile.CHANGED, changed)


class AfterJob(StrEnum):
    """What the server shows once its change has ended (or, without a job to ask, now)."""

    SUCCEEDED = "succeeded"  # on the target image, not in ERROR
    JOB_FAILED = "job_failed"  # the job said FAIL (broken too when the server is in ERROR)
    BROKEN = "broken"  # in ERROR although the job succeeded (or no job said anything)
    WRONG_IMAGE = "wrong_image"  # the job succeeded, yet the server runs another image
    NOT_APPLIED = "not_applied"  # no job, and the server is idle on its old image
    WAIT = "wait"  # still rebuilding (or busy): look again later


def after_job_verdict(
    seen: ServerSnapshot, *, target_image: str, job_succeeded: bool | None
) -> AfterJob:
    """A job's word checked against the server. `job_succeeded` None: there is no job to ask
    (its answer was lost, or the cloud purged it), so the server alone decides."""
    if job_succeeded is None:
        if seen.is_rebuilding:
            return AfterJob.WAIT
        if seen.is_error:
            return AfterJob.BROKEN
        if not seen.is_idle:
            return AfterJob.WAIT
        return AfterJob.SUCCEEDED if seen.image_id == target_image else AfterJob.NOT_APPLIED
    if job_succeeded and not seen.is_error and seen.is_rebuilding:
        return AfterJob.WAIT
    if not job_succeeded:
        return AfterJob.JOB_FAILED
    if seen.is_error:
        return AfterJob.BROKEN
    return AfterJob.SUCCEEDED if seen.image_id == target_image else AfterJob.WRONG_IMAGE
