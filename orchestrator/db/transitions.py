"""The one place a state changes (servers, batches, webhook deliveries): check the table,
compare-and-set the row, append history.

Expected outcomes are values: a lost compare-and-set returns False (someone else moved the row
first), it does not raise. An illegal transition is a programming error and raises.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

from sqlalchemy import (
    ColumnElement,
    Insert,
    Integer,
    Update,
    bindparam,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from orchestrator.db.models import (
    BATCH_CODE_COUNTS_TABLE,
    BATCH_SERVERS_TABLE,
    BATCH_WAVE_COUNTS_TABLE,
    BATCHES_TABLE,
    SERVER_HISTORY_TABLE,
    Batch,
    BatchEvent,
    BatchServer,
    ServerHistory,
    WebhookDelivery,
)
from orchestrator.db.webhook_outbox import enqueue_batch_event
from orchestrator.domain.states import (
    STATES_WITH_A_CODE,
    BatchState,
    DeliveryState,
    ServerState,
    check_batch_transition,
    check_delivery_transition,
    check_server_transition,
)

log = logging.getLogger("reimage.transitions")

# The hot statements go to the tables, not the mapped classes (see models), and they are built
# once per shape, with bound parameters: building a statement and its cache
# key each time was most of a transition's cost (about 110 against 25 microseconds).
_INSERTSERVER_HISTORY_TABLE = insert(SERVER_HISTORY_TABLE)
_server_updates: dict[tuple[tuple[str, ...], tuple[tuple[str, bool], ...], bool], Update] = {}
_conditioned_updates: dict[tuple[Any, ...], Update] = {}


@dataclass(frozen=True)
class Condition:
    """A condition of a compare-and-set that is checked on every send (e.g. that the batch may
    still send), built once per `key` with bound parameters whose values are `params`: the
    statement it makes is then built once too, not on each call (where the cache key's walk
    of a new statement was most of its Python)."""

    key: Hashable
    clause: ColumnElement[bool]
    params: Mapping[str, Any]


_count_moves: dict[tuple[str, str], Update] = {}
_wave_upserts: dict[str, Insert] = {}


class ServerColumns(TypedDict, total=False):
    """What a server transition may write besides the state (never `state` itself: that is
    the transition's `to`). Typed, so mypy sees a wrong column or value."""

    attempt: int
    call_started_at: datetime | None
    outcome_unknown: bool
    before_call: dict[str, Any] | None
    facts_not_before: datetime | None
    target_image: str | None
    phase: str
    previous_image: str | None
    health: dict[str, Any] | None
    backup: dict[str, Any] | None
    backup_expires_at: datetime | None
    dispatched_at: datetime | None
    next_attempt_at: datetime | None
    retries: int
    job_id: str | None
    job_status: str | None
    job_result: dict[str, Any] | None
    broken: bool
    job_seconds: float | None
    next_poll_at: datetime | None
    polls: int
    submitted_at: datetime | None
    finished_at: datetime | None
    error_code: str | None
    error_message: str | None


class ServerGuard(TypedDict, total=False):
    """Extra `column == value` conditions of the compare-and-set (None: IS NULL)."""

    attempt: int
    call_started_at: datetime | None


def record_server_transition(
    session: Session,
    batch_server_id: int,
    *,
    expected: ServerState,
    to: ServerState,
    reason: str,
    now: datetime,
    details: dict[str, Any] | None = None,
    values: ServerColumns | None = None,
    guard: ServerGuard | None = None,
    where: Sequence[ColumnElement[bool]] = (),
    condition: Condition | None = None,
) -> bool:
    """Move one server from `expected` to `to` if it is still there; False when it is not.

    `values` are written with the state; `guard` adds `column == value` conditions to the
    compare-and-set (e.g. `call_started_at=None` so two tasks cannot both start a call), and
    `where` any other condition (e.g. that the batch still runs, checked in the same statement),
    `condition` one built once with bound parameters (see `Condition`).
    The caller commits: the row, its history and the batch counts land together or not at all.
    """
    moved = record_server_transitions(
        session,
        [batch_server_id],
        expected=expected,
        to=to,
        reason=reason,
        now=now,
        details=details,
        values=values,
        guard=guard,
        where=where,
        condition=condition,
    )
    return bool(moved)


def record_server_transitions(
    session: Session,
    batch_server_ids: Sequence[int],
    *,
    expected: ServerState,
    to: ServerState,
    reason: str,
    now: datetime,
    details: dict[str, Any] | None = None,
    values: ServerColumns | None = None,
    guard: ServerGuard | None = None,
    where: Sequence[ColumnElement[bool]] = (),
    condition: Condition | None = None,
) -> list[int]:
    """The one writer of a server's state, for one row or many at once: one compare-and-set
    statement, one history insert, one count update per batch and wave; answers the ids that
    moved. `values["broken"] = True` also counts the server in its batch's `broken`;
    `values["phase"] = "rollback"` counts it in `rolling_back` until it ends."""
    check_server_transition(expected, to)
    if not batch_server_ids:
        return []
    changes: dict[str, Any] = {**(values or {}), "state": to.value, "updated_at": now}
    if to.is_terminal:
        changes.setdefault("finished_at", now)
    guards = guard or {}
    many = len(batch_server_ids) > 1
    shape = (
        tuple(sorted(changes)),
        tuple(sorted((column, value is None) for column, value in guards.items())),
        many,
    )
    statement = _server_update(*shape[:2], many=many)
    if condition is not None:
        conditioned = _conditioned_updates.get((*shape, condition.key))
        if conditioned is None:
            conditioned = statement.where(condition.clause)
            _conditioned_updates[(*shape, condition.key)] = conditioned
        statement = conditioned
    if where:
        statement = statement.where(*where)
    parameters: dict[str, Any] = {f"v_{k}": v for k, v in changes.items()}
    if condition is not None:
        parameters.update(condition.params)
    parameters.update({f"g_{k}": v for k, v in guards.items() if v is not None})
    parameters["expected_state"] = expected.value
    parameters["row_ids" if many else "row_id"] = (
        list(batch_server_ids) if many else batch_server_ids[0]
    )
    moved = session.execute(statement, parameters).all()
    if not moved:
        return []
    session.execute(
        _INSERTSERVER_HISTORY_TABLE,
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
            for row_id, batch_id, server_id, attempt, job_id, *_ in moved
        ],
    )
    _keep_counts(session, moved, expected=expected, to=to, now=now, values=values or {})
    return [row[0] for row in moved]


def _server_update(
    columns: tuple[str, ...], guards: tuple[tuple[str, bool], ...], *, many: bool
) -> Update:
    """The compare-and-set of a server transition writing `columns`, with `guards` (column,
    is None) and one row id or many, built once."""
    key = (columns, guards, many)
    statement = _server_updates.get(key)
    if statement is None:
        c = BATCH_SERVERS_TABLE.c
        conditions: list[ColumnElement[bool]] = [
            c.id.in_(bindparam("row_ids", expanding=True)) if many else c.id == bindparam("row_id"),
            c.state == bindparam("expected_state"),
        ]
        for column, is_none in guards:
            attribute = c[column]
            conditions.append(
                attribute.is_(None) if is_none else attribute == bindparam(f"g_{column}")
            )
        statement = (
            update(BATCH_SERVERS_TABLE)
            .where(*conditions)
            .values({c[k]: bindparam(f"v_{k}") for k in columns})
            .returning(
                c.id,
                c.batch_id,
                c.server_id,
                c.attempt,
                c.job_id,
                c.wave,
                c.phase,
                c.error_code,
                c.error_message,
            )
        )
        _server_updates[key] = statement
    return statement


def record_server_note(
    session: Session,
    batch_server_id: int,
    *,
    reason: str,
    now: datetime,
    details: dict[str, Any] | None = None,
) -> None:
    """A history row that changes no state (the row's state is both its from and to): what
    happened to a settled server afterwards, e.g. its backup image deleted after retention."""
    found = session.execute(
        select(
            BatchServer.batch_id,
            BatchServer.server_id,
            BatchServer.state,
            BatchServer.attempt,
            BatchServer.job_id,
        ).where(BatchServer.id == batch_server_id)
    ).one_or_none()
    if found is None:
        return
    batch_id, server_id, state, attempt, job_id = found
    session.execute(
        insert(ServerHistory).values(
            batch_server_id=batch_server_id,
            batch_id=batch_id,
            server_id=server_id,
            from_state=state,
            to_state=state,
            at=now,
            reason=reason,
            attempt=attempt,
            job_id=job_id,
            details=details or {},
        )
    )


def _keep_counts(
    session: Session,
    moved: Sequence[Any],
    *,
    expected: ServerState,
    to: ServerState,
    now: datetime,
    values: ServerColumns,
) -> None:
    """The batch's and its waves' counts per state, its counts per error code, its broken and
    rolling-back counts, for the rows that just moved (each returned as id, batch, server,
    attempt, job, wave, phase, error code, error message)."""
    per_batch: dict[str, int] = {}
    per_wave: dict[tuple[str, int], int] = {}
    per_code: dict[tuple[str, str], tuple[int, str | None]] = {}
    rolling_back: dict[str, int] = {}
    starts_rollback = values.get("phase") == "rollback" and expected is not to
    for _, batch_id, _, _, _, wave, phase, code, message in moved:
        per_batch[batch_id] = per_batch.get(batch_id, 0) + 1
        per_wave[(batch_id, wave)] = per_wave.get((batch_id, wave), 0) + 1
        if code:
            n, first = per_code.get((batch_id, code), (0, message))
            per_code[(batch_id, code)] = (n + 1, first)
        if phase == "rollback" and (starts_rollback or to.is_terminal):
            rolling_back[batch_id] = rolling_back.get(batch_id, 0) + (1 if starts_rollback else -1)
    if expected != to:
        for batch_id, n in per_batch.items():
            _move_count(session, batch_id, expected, to, now, n)
        if per_wave:
            _upsert_wave_counts(
                session,
                [
                    (batch_id, wave, state, delta)
                    for (batch_id, wave), n in per_wave.items()
                    for state, delta in ((expected.value, -n), (to.value, n))
                ],
            )
        # A state with a code is terminal: its rows never leave it, so counts only grow.
        if to in STATES_WITH_A_CODE:
            for (batch_id, code), (n, first) in per_code.items():
                add_code_count(session, batch_id, to.value, code, n, first)
    b = BATCHES_TABLE.c
    if values.get("broken"):
        for batch_id, n in per_batch.items():
            session.execute(
                update(BATCHES_TABLE).where(b.id == batch_id).values(n_broken=b.n_broken + n)
            )
    for batch_id, n in rolling_back.items():
        session.execute(
            update(BATCHES_TABLE)
            .where(b.id == batch_id)
            .values(n_rolling_back=b.n_rolling_back + n)
        )


def _move_count(
    session: Session,
    batch_id: str,
    from_state: ServerState,
    to: ServerState,
    now: datetime,
    n: int = 1,
) -> None:
    key = (from_state.value, to.value)
    statement = _count_moves.get(key)
    if statement is None:
        b = BATCHES_TABLE.c
        from_column = b[f"n_{from_state.value}"]
        to_column = b[f"n_{to.value}"]
        statement = (
            update(BATCHES_TABLE)
            .where(b.id == bindparam("batch_id_"))
            .values(
                {
                    from_column: from_column - bindparam("n_", type_=Integer),
                    to_column: to_column + bindparam("n_", type_=Integer),
                    b.updated_at: bindparam("now_"),
                }
            )
        )
        _count_moves[key] = statement
    session.execute(statement, {"batch_id_": batch_id, "n_": n, "now_": now})


def _upsert_wave_counts(session: Session, deltas: Sequence[tuple[str, int, str, int]]) -> None:
    """Add each (batch, wave, state, delta) to its count, creating it at first use."""
    dialect = session.get_bind().dialect.name
    statement = _wave_upserts.get(dialect)
    if statement is None:
        upsert = (
            pg_insert(BATCH_WAVE_COUNTS_TABLE)
            if dialect == "postgresql"
            else sqlite_insert(BATCH_WAVE_COUNTS_TABLE)
        )
        statement = upsert.on_conflict_do_update(
            index_elements=["batch_id", "wave", "state"],
            set_={"n": BATCH_WAVE_COUNTS_TABLE.c.n + upsert.excluded.n},
        )
        _wave_upserts[dialect] = statement
    session.execute(
        statement,
        [{"batch_id": b, "wave": w, "state": st, "n": delta} for b, w, st, delta in deltas],
    )


def add_code_count(
    session: Session, batch_id: str, state: str, code: str, n: int, message: str | None
) -> None:
    """Count `n` more servers of the batch in `state` with `code`; the first message stays."""
    upsert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = upsert(BATCH_CODE_COUNTS_TABLE).values(
        batch_id=batch_id, state=state, code=code, n=n, message=message
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["batch_id", "state", "code"],
            set_={"n": BATCH_CODE_COUNTS_TABLE.c.n + n},
        )
    )


class BatchColumns(TypedDict, total=False):
    """What a batch change may write: the flags and marks that steer it (never `state`)."""

    pause_reason: str | None
    paused_by: str | None
    cancel_requested: bool
    abort_reason: str | None
    current_wave: int
    wave_ended_at: datetime | None
    window_opens_at: datetime | None
    approval_gate: int | None


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
    values: BatchColumns | None = None,
    where: Sequence[ColumnElement[bool]] = (),
) -> bool:
    """Move a batch from `expected` to `to` if it is still there, with an event row. With
    `to == expected` it changes only the flags in `values` (cancel requested, budget spent,
    wave opened or ended), still with an event row and still a compare-and-set on the state
    (and on `where`): no flag of a batch is written anywhere else."""
    if to != expected:
        check_batch_transition(expected, to)
    changes: dict[str, Any] = {**(values or {}), "state": to.value, "updated_at": now}
    if to.is_terminal:
        changes.setdefault("finished_at", now)
    result = session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.state == expected.value, *where)
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
    if to == expected:  # a flag changed, not the state: the event row tells it, no webhook
        return True
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


class DeliveryColumns(TypedDict, total=False):
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None
    next_attempt_at: datetime


def record_delivery_transition(
    session: Session,
    delivery_id: int,
    *,
    to: DeliveryState,
    attempts: int,
    values: DeliveryColumns | None = None,
) -> bool:
    """Settle a pending webhook delivery (delivered, or given up) if its `attempts` are still
    those its claimer counted; `to` PENDING records a failed try that will be retried."""
    if to is not DeliveryState.PENDING:
        check_delivery_transition(DeliveryState.PENDING, to)
    moved = session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.state == DeliveryState.PENDING.value,
            WebhookDelivery.attempts == attempts,
        )
        .values(**(values or {}), state=to.value)
        .returning(WebhookDelivery.id)
    ).one_or_none()
    return moved is not None
