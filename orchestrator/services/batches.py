"""Batches: create one (atomically claiming its servers), read them, page their servers, history."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import and_, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.db.models import Batch, BatchServer, ServerHistory
from orchestrator.db.transitions import record_batch_event
from orchestrator.domain.states import ACTIVE_SERVER_STATES, BatchState, ServerState
from orchestrator.errors import Conflict, NotFound, ServiceError
from orchestrator.sealing import seal
from orchestrator.services.views import batch_view, history_view, server_view

CHUNK = 1000


class IdempotencyMismatch(ServiceError):
    code = "idempotency_key_reused"


class BatchSpec(Protocol):
    """What creating a batch needs from a validated request."""

    project_id: str
    region: str
    servers: Sequence[str]
    cloud_init: bool

    def secrets(self) -> dict[str, str]: ...

    def public_os_change(self) -> dict[str, Any]: ...

    def policy_json(self) -> dict[str, Any]: ...

    def canonical_fingerprint(self) -> str: ...


@dataclass(frozen=True)
class CreatedBatch:
    batch: dict[str, Any]
    created: bool


def create_batch(
    sessions: sessionmaker[Session],
    spec: BatchSpec,
    *,
    now: datetime,
    secret_key: str | None,
    idempotency_key: str | None = None,
    actor: str = "api",
) -> CreatedBatch:
    """Store a batch and claim its servers in one transaction, or store nothing at all."""
    fingerprint = spec.canonical_fingerprint()
    with sessions() as session:
        if idempotency_key:
            replay = _replay(session, idempotency_key, fingerprint)
            if replay is not None:
                return replay
        conflicts = active_conflicts(session, spec.servers)
        if conflicts:
            raise _conflict(conflicts)
        secrets = spec.secrets()
        if secrets and not secret_key:
            raise ServiceError("ORCH_SECRET_KEY is not configured; secrets cannot be stored")
        batch_id = str(uuid.uuid4())
        try:
            _insert_batch(
                session,
                batch_id,
                spec,
                now=now,
                secret_key=secret_key,
                secrets=secrets,
                idempotency_key=idempotency_key,
                fingerprint=fingerprint,
                actor=actor,
            )
            session.commit()
        except IntegrityError:
            # Another request claimed one of these servers (or this key) between our check
            # and our insert: the database's unique index decided; report who won.
            session.rollback()
            if idempotency_key:
                replay = _replay(session, idempotency_key, fingerprint)
                if replay is not None:
                    return replay
            raise _conflict(active_conflicts(session, spec.servers)) from None
        batch = session.get_one(Batch, batch_id)
        return CreatedBatch(batch_view(batch), created=True)


def _insert_batch(
    session: Session,
    batch_id: str,
    spec: BatchSpec,
    *,
    now: datetime,
    secret_key: str | None,
    secrets: dict[str, str],
    idempotency_key: str | None,
    fingerprint: str,
    actor: str,
) -> None:
    session.add(
        Batch(
            id=batch_id,
            created_at=now,
            updated_at=now,
            state=BatchState.PENDING.value,
            project_id=spec.project_id,
            region=spec.region,
            cloud_init=spec.cloud_init,
            os_change=spec.public_os_change(),
            sealed_secrets=seal(secret_key, secrets) if secrets and secret_key else None,
            policy=spec.policy_json(),
            total=len(spec.servers),
            n_pending=len(spec.servers),
            n_submitting=0,
            n_running=0,
            n_succeeded=0,
            n_failed=0,
            n_cancelled=0,
            n_skipped=0,
            cancel_requested=False,
            idempotency_key=idempotency_key,
            request_fingerprint=fingerprint,
        )
    )
    session.flush()
    _insert_servers(session, batch_id, spec.servers, now)
    record_batch_event(
        session,
        batch_id,
        from_state=None,
        to=BatchState.PENDING,
        reason="accepted",
        actor=actor,
        now=now,
        details={"total": len(spec.servers)},
    )


def _insert_servers(session: Session, batch_id: str, servers: Sequence[str], now: datetime) -> None:
    for start in range(0, len(servers), CHUNK):
        chunk = servers[start : start + CHUNK]
        rows = session.execute(
            insert(BatchServer).returning(
                BatchServer.id, BatchServer.server_id, sort_by_parameter_order=True
            ),
            [
                {
                    "batch_id": batch_id,
                    "server_id": server_id,
                    "position": start + offset,
                    "wave": 1,
                    "state": ServerState.PENDING.value,
                    "attempt": 0,
                    "retries": 0,
                    "polls": 0,
                    "outcome_unknown": False,
                    "created_at": now,
                    "updated_at": now,
                }
                for offset, server_id in enumerate(chunk)
            ],
        ).all()
        session.execute(
            insert(ServerHistory),
            [
                {
                    "batch_server_id": row_id,
                    "batch_id": batch_id,
                    "server_id": server_id,
                    "from_state": None,
                    "to_state": ServerState.PENDING.value,
                    "at": now,
                    "reason": "accepted",
                    "attempt": 0,
                    "job_id": None,
                    "details": {},
                }
                for row_id, server_id in rows
            ],
        )


def _replay(session: Session, key: str, fingerprint: str) -> CreatedBatch | None:
    existing = session.scalars(select(Batch).where(Batch.idempotency_key == key)).first()
    if existing is None:
        return None
    if existing.request_fingerprint != fingerprint:
        raise IdempotencyMismatch(
            "this Idempotency-Key was used with a different request body",
            {"batch_id": existing.id},
        )
    return CreatedBatch(batch_view(existing), created=False)


def active_conflicts(session: Session, servers: Iterable[str]) -> list[dict[str, str]]:
    """Servers already pending or in flight in some batch, with that batch."""
    wanted = list(servers)
    active = [s.value for s in ACTIVE_SERVER_STATES]
    found: list[dict[str, str]] = []
    for start in range(0, len(wanted), CHUNK):
        rows = session.execute(
            select(BatchServer.server_id, BatchServer.batch_id, BatchServer.state).where(
                BatchServer.server_id.in_(wanted[start : start + CHUNK]),
                BatchServer.state.in_(active),
            )
        ).all()
        found.extend(
            {"server_id": sid, "batch_id": bid, "state": state} for sid, bid, state in rows
        )
    return found


def _conflict(conflicts: list[dict[str, str]]) -> Conflict:
    return Conflict(
        f"{len(conflicts)} server(s) already belong to an active batch",
        {"conflicts": conflicts},
    )


def get_batch(sessions: sessionmaker[Session], batch_id: str) -> dict[str, Any]:
    with sessions() as session:
        batch = session.get(Batch, batch_id)
        if batch is None:
            raise NotFound(f"batch {batch_id} does not exist")
        return batch_view(batch)


def list_batches(
    sessions: sessionmaker[Session], *, limit: int, cursor: str | None
) -> dict[str, Any]:
    """Newest first, keyset-paged on (created_at, id)."""
    query = select(Batch).order_by(Batch.created_at.desc(), Batch.id.desc()).limit(limit + 1)
    if cursor:
        created_at, batch_id = _decode_batch_cursor(cursor)
        query = query.where(
            or_(
                Batch.created_at < created_at,
                and_(Batch.created_at == created_at, Batch.id < batch_id),
            )
        )
    with sessions() as session:
        rows = list(session.scalars(query))
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        last = page[-1]
        next_cursor = _encode(f"{last.created_at.isoformat()}|{last.id}")
    return {"items": [batch_view(b) for b in page], "next_cursor": next_cursor}


def list_batch_servers(
    sessions: sessionmaker[Session],
    batch_id: str,
    *,
    state: str | None,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """A batch's servers in submission order, keyset-paged on the row id."""
    query = (
        select(BatchServer)
        .where(BatchServer.batch_id == batch_id)
        .order_by(BatchServer.id)
        .limit(limit + 1)
    )
    if state:
        query = query.where(BatchServer.state == state)
    if cursor:
        query = query.where(BatchServer.id > _decode_int_cursor(cursor))
    with sessions() as session:
        if session.get(Batch, batch_id) is None:
            raise NotFound(f"batch {batch_id} does not exist")
        rows = list(session.scalars(query))
    page = rows[:limit]
    next_cursor = _encode(str(page[-1].id)) if len(rows) > limit else None
    return {"items": [server_view(r) for r in page], "next_cursor": next_cursor}


def server_history(
    sessions: sessionmaker[Session], server_id: str, *, limit: int, cursor: str | None
) -> dict[str, Any]:
    """Every recorded change of one server across all batches, oldest first."""
    query = (
        select(ServerHistory)
        .where(ServerHistory.server_id == server_id)
        .order_by(ServerHistory.id)
        .limit(limit + 1)
    )
    if cursor:
        query = query.where(ServerHistory.id > _decode_int_cursor(cursor))
    with sessions() as session:
        rows = list(session.scalars(query))
    page = rows[:limit]
    next_cursor = _encode(str(page[-1].id)) if len(rows) > limit else None
    return {"items": [history_view(r) for r in page], "next_cursor": next_cursor}


class BadCursor(ServiceError):
    code = "invalid_cursor"


def _encode(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise BadCursor("cursor is not one this API gave out") from None


def _decode_int_cursor(cursor: str) -> int:
    text = _decode(cursor)
    if not text.isdigit():
        raise BadCursor("cursor is not one this API gave out")
    return int(text)


def _decode_batch_cursor(cursor: str) -> tuple[datetime, str]:
    created, sep, batch_id = _decode(cursor).partition("|")
    try:
        if not sep:
            raise ValueError
        return datetime.fromisoformat(created), batch_id
    except ValueError:
        raise BadCursor("cursor is not one this API gave out") from None
