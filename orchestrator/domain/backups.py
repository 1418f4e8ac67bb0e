"""Backups before a change (issue 14, part 3): the decisions, as pure functions.

A change of OS deletes the old system disk and every snapshot of it (fleet-safety-api.md
section 11), so with `policy.backup` each system disk is first saved as an IMS private image
(section 2). These rules say when a server needs one, what it is called (unique per batch and
server, so a CreateImage whose answer was lost is found again by name), what the image's IMS
job says, how many a batch needs against the quota, and when an image may be deleted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

BACKUP_FAILED = "backup_failed"
BACKUP_QUOTA = "backup_quota"


def needs_backup(backup_policy: Mapping[str, Any] | None, *, phase: str, backup: Any) -> bool:
    """A change (not a rollback: the server is going back, its disk is what is undone) with
    backups on, whose backup is not yet active."""
    if not backup_policy or phase != "change":
        return False
    return not (isinstance(backup, Mapping) and backup.get("status") == "active")


def backup_name(batch_id: str, server_id: str) -> str:
    """IMS names: 1-128 characters of letters, digits, `-`, `_`, `.`, spaces (section 2)."""
    return f"reimage-{batch_id[:8]}-{server_id}"


class BackupProgress(StrEnum):
    ACTIVE = "active"  # the image is usable: the changeos may go
    FAILED = "failed"  # the job failed, or the image was killed: no change is sent
    WAITING = "waiting"  # still being made: look again later
    NOT_FOUND = "not_found"  # no job and no image of that name: the request did not land


@dataclass(frozen=True)
class BackupLook:
    progress: BackupProgress
    image_id: str | None = None
    code: str | None = None
    message: str | None = None


def judge_image_job(
    *, status: str | None, image_id: str | None, code: str | None, reason: str | None
) -> BackupLook:
    """What an IMS job says of the backup (SUCCESS with the image's id, FAIL with why)."""
    if status == "SUCCESS":
        return BackupLook(BackupProgress.ACTIVE, image_id)
    if status == "FAIL":
        return BackupLook(
            BackupProgress.FAILED, image_id, code or BACKUP_FAILED, reason or "the IMS job failed"
        )
    return BackupLook(BackupProgress.WAITING, image_id)


def judge_listed_image(status: str | None, image_id: str | None) -> BackupLook:
    """What the image itself says, when its job is unknown (a lost answer) or purged."""
    if status is None:
        return BackupLook(BackupProgress.NOT_FOUND)
    if status == "active":
        return BackupLook(BackupProgress.ACTIVE, image_id)
    if status in ("killed", "deleted"):
        return BackupLook(
            BackupProgress.FAILED, image_id, BACKUP_FAILED, f"the backup image is {status}"
        )
    return BackupLook(BackupProgress.WAITING, image_id)


def quota_problem(*, needed: int, left: int, quota: int, used: int) -> dict[str, int] | None:
    """The numbers of a refusal when the batch needs more backups than the quota leaves."""
    if needed <= left:
        return None
    return {"needed": needed, "left": left, "quota": quota, "used": used}


def may_delete(*, expired: bool, server_active: bool) -> bool:
    """A backup image past its retention, of a server no batch is working on: never while a
    rollback may need it (a health gate, a rollback, an on-demand rollback in flight)."""
    return expired and not server_active
