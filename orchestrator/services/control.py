"""Batch controls: pause, resume, cancel (operators), and pausing on a configuration error
(workers). Durable database flags, idempotent, effective before the next submission."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.db.models import Batch
from orchestrator.db.transitions import BatchColumns, record_batch_transition
from orchestrator.domain.states import BatchState
from orchestrator.errors import Conflict, NotFound
from orchestrator.runtime import Runtime
from orchestrator.services.views import batch_view


def config_error_reason(exc: Exception, service: str = "cloud") -> str:
    """What a batch paused on a configuration error says: a certificate we do not trust is
    not a credentials problem, and the operator's fix differs (ORCH_ECS_CA_BUNDLE)."""
    if str(getattr(exc, "code", "")).startswith("TLS."):
        return f"{service}'s TLS certificate is not trusted (ORCH_ECS_CA_BUNDLE?): {exc}"
    return f"{service} refused our credentials: {exc}"


def pause_for_config_error(rt: Runtime, batch_id: str, why: str) -> bool:
    """Credentials or permissions are wrong: stop the batch instead of failing every server."""
    with rt.sessions() as session:
        for expected in (BatchState.RUNNING, BatchState.PENDING):
            if record_batch_transition(
                session,
                batch_id,
                expected=expected,
                to=BatchState.PAUSED,
                reason="config_error",
                actor="worker",
                now=rt.clock(),
                values={"pause_reason": why, "paused_by": "worker"},
                details={"why": why},
            ):
                session.commit()
                return True
    return False


def pause_project_batches(rt: Runtime, project_id: str, region: str, why: str) -> int:
    """Pause every active batch of a cloud project and region (their credentials are bad)."""
    with rt.sessions() as session:
        ids = list(
            session.scalars(
                select(Batch.id).where(
                    Batch.project_id == project_id,
                    Batch.region == region,
                    Batch.state.in_([BatchState.PENDING.value, BatchState.RUNNING.value]),
                )
            )
        )
    return sum(pause_for_config_error(rt, batch_id, why) for batch_id in ids)


def _load(session: Session, batch_id: str) -> Batch:
    batch = session.get(Batch, batch_id)
    if batch is None:
        raise NotFound(f"batch {batch_id} does not exist")
    return batch


# An operator's pause or cancel is a compare-and-set on the batch's state; a tick that moves the
# batch in between (it starts, a wave ends) makes it read and try again, never drop the request.
CHANGE_ATTEMPTS = 5


def _kept_changing(batch_id: str, action: str) -> Conflict:
    return Conflict(
        f"batch {batch_id} changed state {CHANGE_ATTEMPTS} times while we tried to {action} it: "
        "try again",
        {"batch_id": batch_id},
    )


def _finished(batch: Batch, action: str) -> Conflict:
    return Conflict(
        f"cannot {action} a batch that is {batch.state}",
        {"state": batch.state, "batch_id": batch.id},
    )


def pause_batch(
    sessions: sessionmaker[Session],
    batch_id: str,
    *,
    actor: str,
    reason: str | None,
    now: datetime,
) -> dict[str, Any]:
    why = reason or f"paused by {actor}"
    return _change_against_the_tick(
        sessions,
        batch_id,
        "pause",
        already=lambda batch, state: state is BatchState.PAUSED,
        to=lambda state: BatchState.PAUSED,
        reason="paused",
        actor=actor,
        now=now,
        values={"pause_reason": why, "paused_by": actor},
        details={"why": why},
    )


def _change_against_the_tick(
    sessions: sessionmaker[Session],
    batch_id: str,
    action: str,
    *,
    already: Callable[[Batch, BatchState], bool],
    to: Callable[[BatchState], BatchState],
    reason: str,
    actor: str,
    now: datetime,
    values: BatchColumns,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An operator's change as a compare-and-set on the batch's state, read again and tried
    again when the tick moved the batch in between; never answered and dropped."""
    with sessions() as session:
        for _ in range(CHANGE_ATTEMPTS):
            batch = _load(session, batch_id)
            state = BatchState(batch.state)
            if already(batch, state):
                return batch_view(batch)
            if state.is_terminal:
                raise _finished(batch, action)
            if record_batch_transition(
                session,
                batch_id,
                expected=state,
                to=to(state),
                reason=reason,
                actor=actor,
                now=now,
                values=values,
                details=details,
            ):
                session.commit()
                session.expire_all()
                return batch_view(_load(session, batch_id))
            session.rollback()
            session.expire_all()
        raise _kept_changing(batch_id, action)


def resume_batch(
    sessions: sessionmaker[Session], batch_id: str, *, actor: str, now: datetime
) -> dict[str, Any]:
    with sessions() as session:
        batch = _load(session, batch_id)
        state = BatchState(batch.state)
        if state in (BatchState.RUNNING, BatchState.PENDING):
            return batch_view(batch)
        if state.is_terminal:
            raise _finished(batch, "resume")
        if batch.approval_gate is not None:
            # Four eyes: an approval gate opens with approvals, never with a resume.
            raise Conflict(
                f"batch {batch_id} is awaiting approval: approvers POST .../approve "
                "(or .../reject to cancel it)",
                {"state": batch.state, "batch_id": batch_id, "gate": batch.approval_gate},
            )
        if record_batch_transition(
            session,
            batch_id,
            expected=BatchState.PAUSED,
            to=BatchState.RUNNING,
            reason="resumed",
            actor=actor,
            now=now,
            values={"pause_reason": None, "paused_by": None},
            details={"was_paused_by": batch.paused_by, "why": batch.pause_reason},
        ):
            session.commit()
        session.expire_all()
        return batch_view(_load(session, batch_id))


def cancel_batch(
    sessions: sessionmaker[Session], batch_id: str, *, actor: str, now: datetime
) -> dict[str, Any]:
    """Stop new submissions; changes already sent are followed to their end (they cannot be
    undone), then the batch ends `cancelled`."""
    return _change_against_the_tick(
        sessions,
        batch_id,
        "cancel",
        already=lambda batch, state: (
            state is BatchState.CANCELLED or (batch.cancel_requested and not state.is_terminal)
        ),
        to=lambda state: state,
        reason="cancel_requested",
        actor=actor,
        now=now,
        values={"cancel_requested": True},
    )
