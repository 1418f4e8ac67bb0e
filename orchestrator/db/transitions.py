"""The one place a state changes: check the table, compare-and-set the row, append history.

Expected outcomes are values: a lost compare-and-set returns False (someone else moved the row
first), it does not raise. An illegal transition is a programming error and raises.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, insert, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from orchestrator.db.models import Batch, BatchEvent, BatchServer, BatchWaveCount, ServerHistory
from orchestrator.db.webhook_outbox import enqueue_batch_event
from orchestrator.domain.states import (
    BatchState,
    ServerState,
    check_batch_transition,
    check_server_transition,
)

log = logging.getLogger("reimage.transitions")


def record_server_transition(
    session: Session,
    batch_server_id: int,
    *,
    expected: ServerState,
    to: ServerState,
    reason: str,
    now: datetime,
    details: dict[str, Any] | None = None,
    values: dict[str, Any] | None = None,
    guard: dict[str, Any] | None = None,
    where: Sequence[ColumnElement[bool]] = (),
) -> bool:
    """Move one server from `expected` to `to` if it is still there; False when it is not.

    `values` are written with the state; `guard` adds `column == value` conditions to the
    compare-and-set (e.g. `call_started_at=None` so two tasks cannot both start a call), and
    `where` any other condition (e.g. that the batch still runs, checked in the same statement).
    The caller commits: the row, its history and the batch counts land together or not at all.
    """
    check_server_transition(expected, to)
    conditions = [
        BatchServer.id == batch_server_id,
        BatchServer.state == expected.value,
        *where,
    ]
    for column, value in (guard or {}).items():
        attribute = getattr(BatchServer, column)
        conditions.append(attribute.is_(None) if value is None else attribute == value)
    changes: dict[str, Any] = {"state": to.value, "updated_at": now, **(values or {})}
    if to.is_terminal:
        changes.setdefault("finished_at", now)
    row = session.execute(
        update(BatchServer)
        .where(*conditions)
        .values(**changes)
        .returning(
            BatchServer.batch_id,
            BatchServer.server_id,
            BatchServer.attempt,
            BatchServer.job_id,
            BatchServer.wave,
        )
    ).one_or_none()
    if row is None:
        return False
    batch_id, server_id, attempt, job_id, wave = row
    session.execute(
        insert(ServerHistory).values(
            batch_server_id=batch_server_id,
            batch_id=batch_id,
            server_id=server_id,
            from_state=expected.value,
            to_state=to.value,
            at=now,
            reason=reason,
            attempt=attempt,
            job_id=job_id,
            details=details or {},
        )
    )
    if expected != to:
        _move_count(session, batch_id, expected, to, now)
        move_wave_count(session, batch_id, wave, expected, to)
    return True


def record_server_transitions(
    session: Session,
    batch_server_ids: list[int],
    *,
    expected: ServerState,
    to: ServerState,
    reason: str,
    now: datetime,
    details: dict[str, Any] | None = None,
    values: dict[str, Any] | None = None,
) -> list[int]:
    """The same as record_server_transition for many rows at once (one compare-and-set
    statement, one history insert, one count update per batch); answers the ids that moved."""
    check_server_transition(expected, to)
    if not batch_server_ids:
        return []
    changes: dict[str, Any] = {"state": to.value, "updated_at": now, **(values or {})}
    if to.is_terminal:
        changes.setdefault("finished_at", now)
    moved = session.execute(
        update(BatchServer)
        .where(BatchServer.id.in_(batch_server_ids), BatchServer.state == expected.value)
        .values(**changes)
        .returning(
            BatchServer.id,
            BatchServer.batch_id,
            BatchServer.server_id,
            BatchServer.attempt,
            BatchServer.job_id,
            BatchServer.wave,
        )
        .execution_options(synchronize_session=False)
    ).all()
    if not moved:
        return []
    session.execute(
        insert(ServerHistory),
        [
            {
                "batch_server_id": row_id,
                "batch_id": batch_id,
                "server_id": server_id,
                "from_state": expected.value,
                "to_state": to.value,
                "at": now,
                "reason": reason,
                "attempt": attempt,
                "job_id": job_id,
                "details": details or {},
            }
            for row_id, batch_id, server_id, attempt, job_id, _ in moved
        ],
    )
    if expected != to:
        per_batch: dict[str, int] = {}
        per_wave: dict[tuple[str, int], int] = {}
        for _, batch_id, _, _, _, wave in moved:
            per_batch[batch_id] = per_batch.get(batch_id, 0) + 1
            per_wave[(batch_id, wave)] = per_wave.get((batch_id, wave), 0) + 1
        for batch_id, n in per_batch.items():
            _move_count(session, batch_id, expected, to, now, n)
        for (batch_id, wave), n in per_wave.items():
            move_wave_count(session, batch_id, wave, expected, to, n)
    return [row[0] for row in moved]


def _move_count(
    session: Session,
    batch_id: str,
    from_state: ServerState,
    to: ServerState,
    now: datetime,
    n: int = 1,
) -> None:
    from_column = getattr(Batch, f"n_{from_state.value}")
    to_column = getattr(Batch, f"n_{to.value}")
    session.execute(
        update(Batch)
        .where(Batch.id == batch_id)
        .values({from_column: from_column - n, to_column: to_column + n, Batch.updated_at: now})
    )


def add_wave_count(session: Session, batch_id: str, wave: int, state: str, delta: int) -> None:
    """Add `delta` to one (batch, wave, state) count, creating it at first use."""
    upsert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = upsert(BatchWaveCount).values(batch_id=batch_id, wave=wave, state=state, n=delta)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["batch_id", "wave", "state"],
            set_={"n": BatchWaveCount.__table__.c.n + delta},
        )
    )


def move_wave_count(
    session: Session,
    batch_id: str,
    wave: int,
    from_state: ServerState,
    to: ServerState,
    n: int = 1,
) -> None:
    add_wave_count(session, batch_id, wave, from_state.value, -n)
    add_wave_count(session, batch_id, wave, to.value, n)


def record_batch_transition(
    session: Session,
    batch_id: str,
    *,
    expected: BatchState,
    to: BatchState,
    reason: str,
    actor: str,
    now: datetime,
    details: dict[str, Any] | None = None,
    values: dict[str, Any] | None = None,
) -> bool:
    """Move a batch from `expected` to `to` if it is still there, with an event row."""
    check_batch_transition(expected, to)
    changes: dict[str, Any] = {"state": to.value, "updated_at": now, **(values or {})}
    if to.is_terminal:
        changes.setdefault("finished_at", now)
    result = session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.state == expected.value)
        .values(**changes)
        .returning(Batch.id)
    ).one_or_none()
    if result is None:
        return False
    record_batch_event(
        session,
        batch_id,
        from_state=expected,
        to=to,
        reason=reason,
        actor=actor,
        now=now,
        details=details,
    )
    # The webhook rows commit or roll back with the change they report.
    enqueue_batch_event(session, batch_id, previous=expected, state=to, reason=reason, now=now)
    log.info(
        "batch state change",
        extra={
            "batch_id": batch_id,
            "from_state": expected.value,
            "to_state": to.value,
            "reason": reason,
            "actor": actor,
        },
    )
    return True


def record_batch_event(
    session: Session,
    batch_id: str,
    *,
    from_state: BatchState | None,
    to: BatchState,
    reason: str,
    actor: str,
    now: datetime,
    details: dict[str, Any] | None = None,
) -> None:
    session.execute(
        insert(BatchEvent).values(
            batch_id=batch_id,
            at=now,
            from_state=from_state.value if from_state else None,
            to_state=to.value,
            reason=reason,
            actor=actor,
            details=details or {},
        )
    )
