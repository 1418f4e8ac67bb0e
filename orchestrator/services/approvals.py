"""Approvals (issue 15, part 4): approving or refusing the gate a batch waits on, and the list
of who approved what and when. The rule (distinct people, never the submitter, how many a gate
needs) is `domain.approvals`; every approval and refusal is a row of its own, a batch event,
and (through the API route) an audit entry.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.db.models import Approval, Batch
from orchestrator.db.transitions import record_batch_transition
from orchestrator.domain.approvals import ApprovalPolicy, approval_refusal, gate_open
from orchestrator.domain.states import BatchState
from orchestrator.errors import Conflict, Forbidden, NotFound
from orchestrator.services.views import batch_view, iso

AWAITING_APPROVAL = "awaiting_approval"


def gate_words(gate: int) -> str:
    return "before the first wave" if gate == 0 else f"after wave {gate}"


def awaiting_reason(gate: int, have: int, needed: int) -> str:
    return f"awaiting approval {gate_words(gate)}: {have} of {needed} (POST .../approve)"


def _waiting(session: Session, batch_id: str) -> tuple[Batch, int]:
    batch = session.get(Batch, batch_id)
    if batch is None:
        raise NotFound(f"batch {batch_id} does not exist")
    if batch.state != BatchState.PAUSED.value or batch.approval_gate is None:
        raise Conflict(
            f"batch {batch_id} is not awaiting approval (it is {batch.state})",
            {"state": batch.state, "batch_id": batch_id},
        )
    return batch, batch.approval_gate


def _record_decision(
    session: Session,
    batch_id: str,
    gate: int,
    *,
    principal: str,
    decision: str,
    comment: str | None,
    now: datetime,
) -> None:
    session.execute(
        insert(Approval).values(
            batch_id=batch_id,
            gate=gate,
            principal=principal,
            decision=decision,
            comment=comment,
            at=now,
        )
    )


def approvers(session: Session, batch_id: str, gate: int) -> list[str]:
    return list(
        session.scalars(
            select(Approval.principal).where(
                Approval.batch_id == batch_id,
                Approval.gate == gate,
                Approval.decision == "approved",
            )
        )
    )


def approve(
    sessions: sessionmaker[Session],
    batch_id: str,
    *,
    principal: str,
    comment: str | None,
    now: datetime,
) -> dict[str, Any]:
    """Count one person's approval of the gate the batch waits on; with enough, it runs on."""
    with sessions() as session:
        batch, gate = _waiting(session, batch_id)
        policy = ApprovalPolicy.from_json(batch.policy.get("approvals")) or ApprovalPolicy()
        already = approvers(session, batch_id, gate)
        refusal = approval_refusal(
            principal=principal, submitter=batch.submitted_by, already=already
        )
        if refusal is not None:
            kind = Forbidden if principal == batch.submitted_by else Conflict
            raise kind(refusal, {"batch_id": batch_id, "gate": gate})
        try:
            _record_decision(
                session,
                batch_id,
                gate,
                principal=principal,
                decision="approved",
                comment=comment,
                now=now,
            )
            session.flush()
        except (IntegrityError, psycopg.errors.UniqueViolation):
            session.rollback()  # the same person, twice at once: counted once
            raise Conflict(f"{principal} has already approved this gate", {"gate": gate}) from None
        have, needed = len({*already, principal}), policy.needed(gate)
        details = {"gate": gate, "approvers": sorted({*already, principal}), "comment": comment}
        if gate_open([*already, principal], needed):
            record_batch_transition(
                session,
                batch_id,
                expected=BatchState.PAUSED,
                to=BatchState.RUNNING,
                reason="approved",
                actor=principal,
                now=now,
                values={"pause_reason": None, "paused_by": None, "approval_gate": None},
                where=[Batch.approval_gate == gate],
                details={**details, "needed": needed},
            )
        else:
            record_batch_transition(
                session,
                batch_id,
                expected=BatchState.PAUSED,
                to=BatchState.PAUSED,
                reason="approval",
                actor=principal,
                now=now,
                values={"pause_reason": awaiting_reason(gate, have, needed)},
                where=[Batch.approval_gate == gate],
                details={**details, "needed": needed},
            )
        session.commit()
        session.expire_all()
        return batch_view(session.get_one(Batch, batch_id))


def reject(
    sessions: sessionmaker[Session],
    batch_id: str,
    *,
    principal: str,
    comment: str | None,
    now: datetime,
) -> dict[str, Any]:
    """Refuse the gate: the batch is cancelled (what was sent is followed to its end)."""
    with sessions() as session:
        _, gate = _waiting(session, batch_id)
        _record_decision(
            session,
            batch_id,
            gate,
            principal=principal,
            decision="rejected",
            comment=comment,
            now=now,
        )
        record_batch_transition(
            session,
            batch_id,
            expected=BatchState.PAUSED,
            to=BatchState.PAUSED,
            reason="rejected",
            actor=principal,
            now=now,
            values={"cancel_requested": True},
            details={"gate": gate, "comment": comment},
        )
        session.commit()
        session.expire_all()
        return batch_view(session.get_one(Batch, batch_id))


def approvals_of(session: Session, batch: Batch) -> dict[str, Any]:
    """Who approved or refused what and when, and the gate waited on now."""
    rows = session.scalars(
        select(Approval).where(Approval.batch_id == batch.id).order_by(Approval.id)
    )
    policy = ApprovalPolicy.from_json(batch.policy.get("approvals"))
    waiting = None
    if batch.approval_gate is not None and policy is not None:
        gate = batch.approval_gate
        waiting = {
            "gate": gate,
            "have": len(set(approvers(session, batch.id, gate))),
            "needed": policy.needed(gate),
        }
    return {
        "waiting": waiting,
        "decisions": [
            {
                "gate": row.gate,
                "principal": row.principal,
                "decision": row.decision,
                "comment": row.comment,
                "at": iso(row.at),
            }
            for row in rows
        ],
    }
