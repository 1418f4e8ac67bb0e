"""Writes that change no state: leases on due work, due times, the kept job result, what a batch
learned and the secrets it no longer needs. Each one is a named function here (states change
only in `transitions`); the ones about a server in flight are guarded by the state they serve.
The caller commits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Update, bindparam, or_, select, update
from sqlalchemy.orm import Session

from orchestrator.db.models import BATCH_SERVERS_TABLE, Batch, BatchServer
from orchestrator.domain.states import FINAL_JOB_STATUSES, TERMINAL_BATCH_STATES, ServerState

# The table, not the mapped class (see models): these run for every server, often.
_SERVERS = BATCH_SERVERS_TABLE
_reschedules: dict[tuple[str, ...], Update] = {}


def lease_expired(column: Any, now: datetime, lease_s: float) -> ColumnElement[bool]:
    return or_(column.is_(None), column < now - timedelta(seconds=lease_s))


def lease_submits(
    session: Session, batch_server_ids: Sequence[int], *, now: datetime, lease_s: float
) -> list[int]:
    """Take the rows whose lease expired (compare-and-set on the lease, so a second tick does
    not hand the same ids out again); answers those taken."""
    taken = session.execute(
        update(_SERVERS)
        .where(
            BatchServer.id.in_(batch_server_ids),
            lease_expired(BatchServer.dispatched_at, now, lease_s),
        )
        .values(dispatched_at=now)
        .returning(BatchServer.id)
        .execution_options(synchronize_session=False)
    ).all()
    return sorted(row_id for (row_id,) in taken)


def release_dispatch(session: Session, batch_server_id: int) -> None:
    """The task is done with the row for now: the next tick may hand it out again."""
    session.execute(
        update(_SERVERS).where(BatchServer.id == batch_server_id).values(dispatched_at=None)
    )


def lease_polls(
    session: Session, batch_server_ids: Sequence[int], *, now: datetime, lease_s: float
) -> list[int]:
    """Take the due polls: pushing `next_poll_at` one lease ahead is the claim (the poll task
    then sets the real one); answers those taken."""
    rows = session.execute(
        update(_SERVERS)
        .where(BatchServer.id.in_(batch_server_ids), BatchServer.next_poll_at <= now)
        .values(next_poll_at=now + timedelta(seconds=lease_s))
        .returning(BatchServer.id)
        .execution_options(synchronize_session=False)
    ).all()
    return [row_id for (row_id,) in rows]


def lease_polls_until(
    session: Session, batch_server_ids: Sequence[int], *, due_by: datetime, until: datetime
) -> list[int]:
    """Take the listed rows whose next look is due by `due_by`, for a message that a task
    sends itself (services.follow_ups): `next_poll_at` pushed to `until`; answers those taken."""
    rows = session.execute(
        update(_SERVERS)
        .where(BatchServer.id.in_(batch_server_ids), BatchServer.next_poll_at <= due_by)
        .values(next_poll_at=until)
        .returning(BatchServer.id)
        .execution_options(synchronize_session=False)
    ).all()
    return [row_id for (row_id,) in rows]


def lease_ended_jobs(
    session: Session,
    project_id: str,
    region: str,
    *,
    until: datetime,
    polled_since: datetime | None = None,
) -> list[int]:
    """Take the running servers of (project, region)'s open batches whose job has ended (their
    server check is what is left), to poll at once: `next_poll_at` pushed to `until`.
    `polled_since`: only those polled since then (a poll writes `updated_at`); the others
    were taken by the sweep before, and their polls are on their way."""
    conditions = [
        BatchServer.batch_id.in_(
            select(Batch.id).where(
                Batch.project_id == project_id,
                Batch.region == region,
                Batch.state.not_in([s.value for s in TERMINAL_BATCH_STATES]),
            )
        ),
        BatchServer.state == ServerState.RUNNING.value,
        BatchServer.job_status.in_(sorted(FINAL_JOB_STATUSES)),
    ]
    if polled_since is not None:
        conditions.append(BatchServer.updated_at >= polled_since)
    rows = session.execute(
        update(_SERVERS)
        .where(*conditions)
        .values(next_poll_at=until)
        .returning(BatchServer.id)
        .execution_options(synchronize_session=False)
    ).all()
    return sorted(row_id for (row_id,) in rows)


def reschedule_poll(
    session: Session,
    batch_server_id: int,
    *,
    polls: int,
    next_poll_at: datetime,
    now: datetime,
    error: tuple[str, str] | None = None,
    job_result: dict[str, Any] | None = None,
    job_status: str | None = None,
) -> None:
    """Ask about a running server's job again at `next_poll_at` (with the last error seen);
    `job_result`: the ended job's body, kept until the server itself has been checked."""
    values: dict[str, Any] = {"polls": polls, "next_poll_at": next_poll_at, "updated_at": now}
    if error is not None:
        values["error_code"], values["error_message"] = error
    if job_result is not None:
        values["job_result"], values["job_status"] = job_result, job_status
    columns = tuple(sorted(values))
    statement = _reschedules.get(columns)
    if statement is None:
        # Built once per set of columns: this runs for nearly every poll.
        c = _SERVERS.c
        statement = (
            update(_SERVERS)
            .where(c.id == bindparam("row_id"), c.state == ServerState.RUNNING.value)
            .values({c[k]: bindparam(f"v_{k}") for k in columns})
        )
        _reschedules[columns] = statement
    session.execute(
        statement, {"row_id": batch_server_id, **{f"v_{k}": v for k, v in values.items()}}
    )


def record_probes(
    session: Session,
    batch_server_id: int,
    *,
    health: dict[str, Any],
    next_probe_at: datetime,
    now: datetime,
) -> None:
    """A verifying server's probes so far and when the next one is due."""
    session.execute(
        update(_SERVERS)
        .where(
            BatchServer.id == batch_server_id,
            BatchServer.state == ServerState.VERIFYING.value,
        )
        .values(health=health, next_poll_at=next_probe_at, updated_at=now)
    )


def record_backup(
    session: Session,
    batch_server_id: int,
    *,
    backup: dict[str, Any],
    next_poll_at: datetime,
    now: datetime,
) -> None:
    """A backing-up server's backup as last seen (its IMS job, the image) and its next look."""
    session.execute(
        update(_SERVERS)
        .where(
            BatchServer.id == batch_server_id,
            BatchServer.state == ServerState.BACKING_UP.value,
        )
        .values(backup=backup, next_poll_at=next_poll_at, updated_at=now)
    )


def record_backup_deleted(
    session: Session, batch_server_id: int, *, backup: dict[str, Any], now: datetime
) -> bool:
    """The retention sweep deleted the backup image (once: guarded on its expiry)."""
    moved = session.execute(
        update(_SERVERS)
        .where(BatchServer.id == batch_server_id, BatchServer.backup_expires_at.is_not(None))
        .values(
            backup={**backup, "status": "deleted", "deleted_at": now.timestamp()},
            backup_expires_at=None,
        )
        .returning(BatchServer.id)
    ).one_or_none()
    return moved is not None


def learn_job_seconds(session: Session, batch_id: str, expected_job_s: float) -> None:
    session.execute(update(Batch).where(Batch.id == batch_id).values(expected_job_s=expected_job_s))


def erase_sealed_secrets(session: Session, batch_id: str) -> None:
    """No server of the batch will be sent a change any more: nobody needs its secrets."""
    session.execute(update(Batch).where(Batch.id == batch_id).values(sealed_secrets=None))
