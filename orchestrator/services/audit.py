"""The audit log: one append-only row per mutating API request (who, what, which batch, when,
from where, outcome), and the filtered, keyset-paged reading of it for admins."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.db.models import AuditEntry
from orchestrator.services.cursors import decode_int, encode
from orchestrator.services.views import iso


def record(sessions: sessionmaker[Session], entry: dict[str, Any]) -> None:
    with sessions.begin() as session:
        session.execute(insert(AuditEntry).values(**entry))


def audit_view(row: AuditEntry) -> dict[str, Any]:
    return {
        "id": row.id,
        "at": iso(row.at),
        "actor": row.actor,
        "role": row.role,
        "action": row.action,
        "method": row.method,
        "path": row.path,
        "batch_id": row.batch_id,
        "project_id": row.project_id,
        "remote_addr": row.remote_addr,
        "status": row.status,
        "outcome": row.outcome,
        "details": row.details,
    }


def list_audit(
    sessions: sessionmaker[Session],
    *,
    actor: str | None = None,
    action: str | None = None,
    batch_id: str | None = None,
    outcome: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Newest first, keyset-paged on the id."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit + 1)
    conditions = {
        AuditEntry.actor: actor,
        AuditEntry.action: action,
        AuditEntry.batch_id: batch_id,
        AuditEntry.outcome: outcome,
    }
    for column, value in conditions.items():
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    if until is not None:
        query = query.where(AuditEntry.at < until)
    if cursor:
        query = query.where(AuditEntry.id < decode_int(cursor))
    with sessions() as session:
        rows = list(session.scalars(query))
    page = rows[:limit]
    next_cursor = encode(str(page[-1].id)) if len(rows) > limit else None
    return {"items": [audit_view(r) for r in page], "next_cursor": next_cursor}
