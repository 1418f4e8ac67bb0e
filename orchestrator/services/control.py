"""Batch-level decisions shared by workers and the API: pausing a batch with a reason."""

from __future__ import annotations

from orchestrator.db.transitions import record_batch_transition
from orchestrator.domain.states import BatchState
from orchestrator.runtime import Runtime


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
                values={"pause_reason": why},
                details={"why": why},
            ):
                session.commit()
                return True
    return False
