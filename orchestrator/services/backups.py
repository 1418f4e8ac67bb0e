"""Backups before the change (issue 14, part 3): the CreateImage of each server's system disk
before its changeos, following the image to `active` (or to a failure, which fails the server
with `backup_failed` and no change), the quota read at submission, and the retention sweep.

The CreateImage is recorded before it is sent, like a changeos (the row moves to `backing_up`
first, in the same compare-and-set as the batch's pause/cancel/budget check); its answer gives
the IMS job the row then follows on its due time. An answer that never came is settled by name
(every backup's name is unique per batch and server): an image of that name is followed; none,
once any call could have landed, sends the request again (a backup changes nothing on the
server, and IMS refuses a second image of the same name).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from orchestrator.cloud.catalog import ImsClient
from orchestrator.cloud.errors import (
    ConfigError,
    EcsError,
    JobGone,
    OutcomeUnknown,
    Rejected,
    Retryable,
)
from orchestrator.db.bookkeeping import record_backup, record_backup_deleted
from orchestrator.db.models import Batch, BatchServer
from orchestrator.db.transitions import (
    Condition,
    ServerColumns,
    record_server_note,
    record_server_transition,
)
from orchestrator.domain.backups import (
    BACKUP_FAILED,
    BACKUP_QUOTA,
    BackupLook,
    BackupProgress,
    backup_name,
    judge_image_job,
    judge_listed_image,
    may_delete,
    quota_problem,
)
from orchestrator.domain.states import ACTIVE_SERVER_STATES, ServerState
from orchestrator.domain.verdicts import ServerSnapshot
from orchestrator.errors import ServiceError
from orchestrator.runtime import Runtime
from orchestrator.services.control import config_error_reason, pause_for_config_error

# How often a backup's IMS job is asked about (an image takes minutes; IMS jobs are cheap).
BACKUP_POLL_S = 5.0
DELETES_PER_SWEEP = 100

log = logging.getLogger("reimage.backups")


class BackupQuota(ServiceError):
    """The batch needs more backup images than the project's IMS quota leaves."""

    code = BACKUP_QUOTA


def call_window_s(rt: Runtime) -> float:
    """How long a CreateImage can possibly stay in flight before its client gives up."""
    return rt.settings.ecs_connect_timeout_s + rt.settings.ecs_read_timeout_s + 5


async def start_backup(
    rt: Runtime,
    ims: ImsClient,
    row: BatchServer,
    batch: Batch,
    before: ServerSnapshot,
    *,
    may_send: Condition,
    token_deadline_s: float,
) -> str:
    """Record the backup request, then send CreateImage at once (the changeos waits)."""
    if not await ims.take_rate_token(within_s=token_deadline_s):
        return "rate_wait_expired"
    now = rt.clock()
    name = backup_name(batch.id, row.server_id)
    backup: dict[str, Any] = {
        "name": name,
        "status": "requested",
        "requested_at": now.timestamp(),
        "from_image": before.image_id,
    }
    with rt.sessions() as session:
        won = record_server_transition(
            session,
            row.id,
            expected=ServerState.SUBMITTING,
            to=ServerState.BACKING_UP,
            reason="backup_requested",
            now=now,
            guard={"call_started_at": None, "attempt": row.attempt},
            condition=may_send,
            values={
                "backup": backup,
                "previous_image": before.image_id,
                "dispatched_at": None,
                # Looked at again once any call could have landed, if no answer comes first.
                "next_poll_at": now + timedelta(seconds=call_window_s(rt)),
            },
            details={"backup": backup},
        )
        session.commit()
    if not won:
        return "lost_race"
    try:
        job_id = await ims.create_server_image(
            row.server_id,
            name=name,
            description=f"reimage backup before batch {batch.id}",
            token_taken=True,
        )
    except OutcomeUnknown:
        return "backup_outcome_unknown"  # settled by name at the row's due time
    except Retryable as exc:
        return _back_to_submitting(rt, row, "backup_retry", exc, retry_in_s=30.0)
    except ConfigError as exc:
        pause_for_config_error(rt, batch.id, config_error_reason(exc, "IMS"))
        return _back_to_submitting(rt, row, "config_error", exc, retry_in_s=30.0)
    except Rejected as exc:
        return _failed(rt, row, exc.code, f"the backup was refused: {exc.message}", backup)
    with rt.sessions() as session:
        record_backup(
            session,
            row.id,
            backup={**backup, "status": "creating", "job_id": job_id},
            next_poll_at=rt.clock() + timedelta(seconds=BACKUP_POLL_S),
            now=rt.clock(),
        )
        session.commit()
    return "backup_started"


async def follow_backups(
    rt: Runtime, rows: Sequence[BatchServer], batches: dict[str, Batch]
) -> list[str]:
    """Look at each backing-up server's image once (the poll task's share of them)."""
    outcomes: list[str] = []
    async with rt.http.cloud() as http:
        for row in rows:
            batch = batches[row.batch_id]
            ims = rt.ims_client(http, project_id=batch.project_id, region=batch.region)
            try:
                outcomes.append(await follow_backup(rt, ims, row, batch))
            except Retryable:
                _reschedule(rt, row, dict(row.backup or {}), BACKUP_POLL_S)
                outcomes.append("backup_poll_retry")
            except EcsError as exc:
                pause_for_config_error(rt, batch.id, f"IMS refused a backup query: {exc}")
                _reschedule(rt, row, dict(row.backup or {}), 30.0)
                outcomes.append("config_error")
    return outcomes


async def follow_backup(rt: Runtime, ims: ImsClient, row: BatchServer, batch: Batch) -> str:
    backup = dict(row.backup or {})
    look: BackupLook | None = None
    if backup.get("job_id"):
        try:
            job = await ims.show_image_job(str(backup["job_id"]))
            look = judge_image_job(
                status=job.status,
                image_id=job.image_id,
                code=job.error_code,
                reason=job.fail_reason,
            )
        except JobGone:
            look = None  # purged: the image itself tells
        if look is not None and look.progress is BackupProgress.ACTIVE and not look.image_id:
            look = None  # SUCCESS without the image's id: find it by name
    if look is None:
        images = await ims.find_images_by_name(str(backup.get("name") or ""))
        image = images[0] if images else None
        look = judge_listed_image(image.status if image else None, image.id if image else None)
    if look.progress is BackupProgress.WAITING:
        if look.image_id:
            backup["image_id"] = look.image_id
        _reschedule(rt, row, backup, BACKUP_POLL_S)
        return "backup_waiting"
    if look.progress is BackupProgress.FAILED:
        return _failed(rt, row, look.code or BACKUP_FAILED, look.message or "", backup)
    if look.progress is BackupProgress.NOT_FOUND:
        requested = float(backup.get("requested_at") or 0)
        if rt.clock().timestamp() - requested < call_window_s(rt):
            _reschedule(rt, row, backup, BACKUP_POLL_S)
            return "backup_waiting"
        # No job and no image once any call could have landed: it did not; ask again.
        return _back_to_submitting(rt, row, "backup_not_found", None, retry_in_s=0.0)
    return _ready(rt, row, batch, backup, str(look.image_id))


def _ready(
    rt: Runtime, row: BatchServer, batch: Batch, backup: dict[str, Any], image_id: str
) -> str:
    now = rt.clock()
    retention = batch.rollout_policy.backup_retention_s or 0.0
    done = {**backup, "status": "active", "image_id": image_id, "active_at": now.timestamp()}
    with rt.sessions() as session:
        record_server_transition(
            session,
            row.id,
            expected=ServerState.BACKING_UP,
            to=ServerState.SUBMITTING,
            reason="backup_ready",
            now=now,
            values={
                "backup": done,
                "backup_expires_at": now + timedelta(seconds=retention),
                "next_poll_at": None,
                "next_attempt_at": now,
                "dispatched_at": None,
                # The changeos reads the server again: a backup took minutes.
                "facts_not_before": now,
            },
            details={"backup": done},
        )
        session.commit()
    return "backup_ready"


def _failed(rt: Runtime, row: BatchServer, code: str, message: str, backup: dict[str, Any]) -> str:
    now = rt.clock()
    with rt.sessions() as session:
        record_server_transition(
            session,
            row.id,
            expected=ServerState.BACKING_UP,
            to=ServerState.FAILED,
            reason=BACKUP_FAILED,
            now=now,
            values={
                "backup": {**backup, "status": "failed"},
                "next_poll_at": None,
                "error_code": BACKUP_FAILED,
                "error_message": f"{code}: {message}; no change was sent",
            },
            details={"backup": backup, "code": code, "message": message, "changeos_sent": False},
        )
        session.commit()
    log.warning("backup failed", extra={"code": code})
    return BACKUP_FAILED


def _back_to_submitting(
    rt: Runtime, row: BatchServer, reason: str, exc: EcsError | None, *, retry_in_s: float
) -> str:
    now = rt.clock()
    values: ServerColumns = {
        "backup": None,
        "next_poll_at": None,
        "dispatched_at": None,
        "next_attempt_at": now + timedelta(seconds=retry_in_s),
        "retries": row.retries + 1,
    }
    if exc is not None:
        values["error_code"], values["error_message"] = exc.code, exc.message
    with rt.sessions() as session:
        record_server_transition(
            session,
            row.id,
            expected=ServerState.BACKING_UP,
            to=ServerState.SUBMITTING,
            reason=reason,
            now=now,
            values=values,
            details={"backup": row.backup, **(exc.as_details() if exc else {})},
        )
        session.commit()
    return reason


def _reschedule(rt: Runtime, row: BatchServer, backup: dict[str, Any], delay_s: float) -> None:
    with rt.sessions() as session:
        record_backup(
            session,
            row.id,
            backup=backup,
            next_poll_at=rt.clock() + timedelta(seconds=delay_s),
            now=rt.clock(),
        )
        session.commit()


async def read_quota(rt: Runtime, *, project_id: str, region: str, needed: int) -> dict[str, Any]:
    """The numbers at submission: backups needed, the quota, used, left, and whether it is
    enough (`enough` False: a real submission is refused with BackupQuota, 422)."""
    async with rt.http.cloud() as http:
        quota = await rt.ims_client(http, project_id=project_id, region=region).image_quota()
    problem = quota_problem(needed=needed, left=quota.left, quota=quota.quota, used=quota.used)
    return {
        "needed": needed,
        "left": quota.left,
        "quota": quota.quota,
        "used": quota.used,
        "enough": problem is None,
    }


def refuse_over_quota(numbers: dict[str, Any]) -> None:
    if numbers["enough"]:
        return
    raise BackupQuota(
        f"the batch needs {numbers['needed']} backup image(s); the project's IMS quota leaves "
        f"{numbers['left']} ({numbers['used']} of {numbers['quota']} used); nothing stored",
        {"backup_quota": {k: v for k, v in numbers.items() if k != "enough"}},
    )


async def sweep_expired_backups(rt: Runtime, *, now: datetime) -> int:
    """Delete backup images past their retention, of servers no batch is working on (never
    while a rollback may need one); each deletion is noted in the server's history."""
    active = [s.value for s in ACTIVE_SERVER_STATES]
    with rt.sessions() as session:
        due: list[tuple[BatchServer, str, str]] = [
            (row, project_id, region)
            for row, project_id, region in session.execute(
                select(BatchServer, Batch.project_id, Batch.region)
                .join(Batch, Batch.id == BatchServer.batch_id)
                .where(BatchServer.backup_expires_at <= now)
                .order_by(BatchServer.backup_expires_at)
                .limit(DELETES_PER_SWEEP)
            )
        ]
        busy = set(
            session.scalars(
                select(BatchServer.server_id).where(
                    BatchServer.server_id.in_([row.server_id for row, _, _ in due]),
                    BatchServer.state.in_(active),
                )
            )
        )
    deleted = 0
    async with rt.http.cloud() as http:
        for row, project_id, region in due:
            if not may_delete(expired=True, server_active=row.server_id in busy):
                continue
            image_id = str((row.backup or {}).get("image_id") or "")
            try:
                if image_id:
                    ims = rt.ims_client(http, project_id=project_id, region=region)
                    await ims.delete_image(image_id)
            except Retryable:
                continue  # the next sweep tries again
            except EcsError as exc:
                log.warning("backup image not deleted", extra={"code": exc.code})
                continue
            at = rt.clock()
            with rt.sessions() as session:
                if record_backup_deleted(session, row.id, backup=dict(row.backup or {}), now=at):
                    record_server_note(
                        session,
                        row.id,
                        reason="backup_deleted",
                        now=at,
                        details={"image_id": image_id, "retention_ended": True},
                    )
                session.commit()
            deleted += 1
    return deleted
