"""Batches: create one (atomically claiming its servers), read them, page their servers, history."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import JSON, String, and_, bindparam, insert, literal, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.db.engine import read_connection
from orchestrator.db.models import (
    BATCHES_TABLE,
    Batch,
    BatchCodeCount,
    BatchServer,
    BatchWaveCount,
    ServerHistory,
    UtcDateTime,
)
from orchestrator.db.transitions import record_batch_event
from orchestrator.db.webhook_outbox import enqueue_batch_event
from orchestrator.domain.policy import RolloutPolicy
from orchestrator.domain.rollout import wave_of_each
from orchestrator.domain.spread import domain_sizes, domains_of, wave_of_each_by_domain
from orchestrator.domain.states import ACTIVE_SERVER_STATES, BatchState, ServerState
from orchestrator.errors import Conflict, NotFound, ServiceError
from orchestrator.services.approvals import approvals_of
from orchestrator.services.cursors import BadCursor, decode, decode_int, encode
from orchestrator.services.exports import failure_codes
from orchestrator.services.sealing import seal
from orchestrator.services.server_pages import history_page_query, server_page_query
from orchestrator.services.views import (
    SERVER_VIEW_COLUMNS,
    batch_view,
    history_view,
    server_view,
)
from orchestrator.services.webhooks import delivery_counts

CHUNK = 1000


class IdempotencyMismatch(ServiceError):
    code = "idempotency_key_reused"


@dataclass(frozen=True)
class NewBatch:
    """A validated request, as plain values: what creating (or dry-running) a batch needs."""

    project_id: str
    region: str
    servers: tuple[str, ...]  # the targets, each once (a selector's already resolved)
    cloud_init: bool
    os_change: dict[str, Any]  # as stored: without adminpass or user_data
    policy: dict[str, Any]
    on_conflict: str
    fingerprint: str  # of the request, for Idempotency-Key replays
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    selector: dict[str, Any] | None = None
    notify_url: str | None = None
    # Pre-flight's word on each server (empty: not checked, e.g. rows made by a test).
    plans: Mapping[str, ServerPlan] = field(default_factory=dict)
    # "rollback": each server goes to its own image in `own_images` (not os_change's).
    kind: str = "change"
    own_images: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ServerPlan:
    """What submission decided for one server: its image, the facts it was judged on and,
    when it is incompatible (with `on_incompatible: skip`), why it is skipped."""

    target_image: str | None
    facts: dict[str, Any] | None
    incompatible: dict[str, Any] | None = None  # {"code", "message", "reasons"}


@dataclass(frozen=True)
class CreatedBatch:
    batch: dict[str, Any]
    created: bool


def create_batch(
    sessions: sessionmaker[Session],
    spec: NewBatch,
    *,
    now: datetime,
    secret_key: str | None,
    idempotency_key: str | None = None,
    actor: str = "api",
    parent_id: str | None = None,
) -> CreatedBatch:
    """Store a batch and claim its servers in one transaction, or store nothing at all.

    A server pending or in flight in another batch is a conflict: the whole request is
    refused (409), or with `on_conflict: skip` that server is stored `skipped`. The unique
    index on active servers is the arbiter, so concurrent requests cannot both win one.
    """
    fingerprint = spec.fingerprint
    secrets = spec.secrets
    if secrets and not secret_key:
        raise ServiceError("ORCH_SECRET_KEY is not configured; secrets cannot be stored")
    for _ in range(5):  # with on_conflict=skip, a lost race is simply evaluated again
        with sessions() as session:
            if idempotency_key:
                replay = _replay(session, idempotency_key, fingerprint)
                if replay is not None:
                    return replay
            # With "reject", the unique index is the check (no query per 1000 servers first);
            # with "skip", the conflicting servers must be known before writing.
            conflicts = (
                active_conflicts(session, spec.servers) if spec.on_conflict == "skip" else []
            )
            batch_id = str(uuid.uuid4())
            try:
                _insert_batch(
                    session,
                    batch_id,
                    spec,
                    now=now,
                    sealed=seal(secret_key, secrets) if secrets and secret_key else None,
                    skipped={c["server_id"]: c["batch_id"] for c in conflicts},
                    idempotency_key=idempotency_key,
                    fingerprint=fingerprint,
                    actor=actor,
                    parent_id=parent_id,
                )
                session.commit()
            except (IntegrityError, psycopg.errors.UniqueViolation):
                # Another request claimed one of these servers (or this key) between our
                # check and our insert: the database's unique index decided.
                session.rollback()
                if idempotency_key:
                    replay = _replay(session, idempotency_key, fingerprint)
                    if replay is not None:
                        return replay
                if spec.on_conflict == "skip":
                    continue
                raise _conflict(active_conflicts(session, spec.servers)) from None
            batch = session.get_one(Batch, batch_id)
            return CreatedBatch(batch_view(batch), created=True)
    raise Conflict("the servers kept changing batches; try again")


def _insert_batch(
    session: Session,
    batch_id: str,
    spec: NewBatch,
    *,
    now: datetime,
    sealed: bytes | None,
    skipped: dict[str, str],
    idempotency_key: str | None,
    fingerprint: str,
    actor: str,
    parent_id: str | None,
) -> None:
    policy = spec.policy
    total = len(spec.servers)
    waves, domains, batch_domains = waves_and_domains(spec)
    incompatible = {
        server_id: plan.incompatible
        for server_id, plan in spec.plans.items()
        if plan.incompatible is not None and server_id not in skipped
    }
    n_skipped = len(skipped) + len(incompatible)
    session.add(
        Batch(
            id=batch_id,
            created_at=now,
            updated_at=now,
            state=BatchState.PENDING.value,
            project_id=spec.project_id,
            region=spec.region,
            cloud_init=spec.cloud_init,
            os_change=spec.os_change,
            sealed_secrets=sealed,
            policy=policy,
            total=total,
            n_pending=total - n_skipped,
            n_submitting=0,
            n_running=0,
            n_succeeded=0,
            n_failed=0,
            n_cancelled=0,
            n_skipped=n_skipped,
            cancel_requested=False,
            current_wave=1,
            waves_total=max(waves, default=1),
            selector=spec.selector,
            notify_url=spec.notify_url,
            parent_id=parent_id,
            idempotency_key=idempotency_key,
            request_fingerprint=fingerprint,
            kind=spec.kind,
            domains=batch_domains,
            submitted_by=actor,
        )
    )
    session.flush()
    _insert_servers(session, batch_id, spec, waves, domains, skipped, incompatible, now)
    record_batch_event(
        session,
        batch_id,
        from_state=None,
        to=BatchState.PENDING,
        reason="accepted",
        actor=actor,
        now=now,
        details={
            "total": total,
            "skipped_conflicts": len(skipped),
            "skipped_incompatible": len(incompatible),
            "parent_id": parent_id,
            "kind": spec.kind,
        },
    )
    enqueue_batch_event(
        session, batch_id, previous=None, state=BatchState.PENDING, reason="accepted", now=now
    )


def waves_and_domains(
    spec: NewBatch,
) -> tuple[list[int], dict[str, dict[str, str]], dict[str, Any] | None]:
    """Each server's wave and failure domains (from the facts frozen at submission), and what
    the batch keeps of them: servers per domain value, and each wave's domain."""
    rollout = RolloutPolicy.from_json(spec.policy)
    kinds = rollout.domain_kinds
    if not kinds:
        return wave_of_each(len(spec.servers), rollout.waves), {}, None
    none = ServerPlan(None, None)
    domains = {
        server_id: domains_of(kinds, spec.plans.get(server_id, none).facts, server_id)
        for server_id in spec.servers
    }
    by_domain = rollout.domain_waves
    labels: list[str] | None = None
    if by_domain is None:
        waves = wave_of_each(len(spec.servers), rollout.waves)
    else:
        values = [domains[server_id][by_domain.by] for server_id in spec.servers]
        waves, labels = wave_of_each_by_domain(values, by_domain, rollout.waves)
    return waves, domains, {"sizes": domain_sizes(domains.values()), "wave_labels": labels}


def _insert_servers(
    session: Session,
    batch_id: str,
    spec: NewBatch,
    waves: Sequence[int],
    domains: dict[str, dict[str, str]],
    skipped: dict[str, str],
    incompatible: dict[str, dict[str, Any]],
    now: datetime,
) -> None:
    """Bulk paths: the rows in chunks without RETURNING (an executemany that psycopg pipelines),
    then every creation history row in one INSERT ... SELECT from the rows just written."""
    servers = spec.servers
    postgres = session.get_bind().dialect.name == "postgresql"
    none = ServerPlan(None, None)

    def plan(server_id: str) -> ServerPlan:
        return spec.plans.get(server_id, none)

    def as_json(value: Any) -> Any:
        # COPY takes JSON as text; an executemany takes the value itself.
        return json.dumps(value) if postgres and value is not None else value

    def facts(server_id: str) -> Any:
        return as_json(plan(server_id).facts)

    def left_out(server_id: str) -> bool:
        return server_id in skipped or server_id in incompatible

    rows = [
        {
            "batch_id": batch_id,
            "server_id": server_id,
            "position": position,
            "wave": waves[position],
            "state": (ServerState.SKIPPED if left_out(server_id) else ServerState.PENDING).value,
            "attempt": 0,
            "retries": 0,
            "polls": 0,
            "outcome_unknown": False,
            "broken": False,
            "created_at": now,
            "updated_at": now,
            "finished_at": now if left_out(server_id) else None,
            "target_image": plan(server_id).target_image,
            "facts": facts(server_id),
            "domains": as_json(domains.get(server_id)),
            "error_code": (incompatible.get(server_id) or {}).get("code"),
            "error_message": (incompatible.get(server_id) or {}).get("message"),
        }
        for position, server_id in enumerate(servers)
    ]
    counts: dict[tuple[int, str], int] = {}
    for position, server_id in enumerate(servers):
        state = ServerState.SKIPPED if left_out(server_id) else ServerState.PENDING
        counts[(waves[position], state.value)] = counts.get((waves[position], state.value), 0) + 1
    session.execute(
        insert(BatchWaveCount),
        [{"batch_id": batch_id, "wave": w, "state": st, "n": n} for (w, st), n in counts.items()],
    )
    # Servers pre-flight refused are stored skipped with their code: counted by code as a
    # transition into skipped would count them.
    per_code: dict[str, tuple[int, str | None]] = {}
    for refusal in incompatible.values():
        code = refusal.get("code")
        if code:
            n, first = per_code.get(code, (0, refusal.get("message")))
            per_code[code] = (n + 1, first)
    if per_code:
        session.execute(
            insert(BatchCodeCount),
            [
                {
                    "batch_id": batch_id,
                    "state": ServerState.SKIPPED.value,
                    "code": code,
                    "n": n,
                    "message": first,
                }
                for code, (n, first) in per_code.items()
            ],
        )
    if postgres:
        _copy_rows(session, BatchServer.__tablename__, rows)
    else:
        for start in range(0, len(rows), CHUNK):
            session.execute(insert(BatchServer), rows[start : start + CHUNK])
    created = select(
        BatchServer.id,
        BatchServer.batch_id,
        BatchServer.server_id,
        literal(None, String).label("from_state"),
        BatchServer.state,
        literal(now, UtcDateTime()).label("at"),
        literal("accepted").label("reason"),
        literal(0).label("attempt"),
        literal(None, String).label("job_id"),
        literal({}, JSON()).label("details"),
    ).where(BatchServer.batch_id == batch_id, BatchServer.state == ServerState.PENDING.value)
    session.execute(
        insert(ServerHistory).from_select(
            [
                "batch_server_id",
                "batch_id",
                "server_id",
                "from_state",
                "to_state",
                "at",
                "reason",
                "attempt",
                "job_id",
                "details",
            ],
            created,
        )
    )
    if skipped or incompatible:
        skipped_rows = session.execute(
            select(BatchServer.id, BatchServer.server_id).where(
                BatchServer.batch_id == batch_id,
                BatchServer.state == ServerState.SKIPPED.value,
            )
        ).all()
        session.execute(
            insert(ServerHistory),
            [
                _skipped_row(row_id, batch_id, sid, skipped.get(sid), incompatible.get(sid), now)
                for row_id, sid in skipped_rows
            ],
        )


def _copy_rows(session: Session, table: str, rows: list[dict[str, Any]]) -> None:
    """PostgreSQL's COPY, the fastest way in, inside the session's own transaction."""
    if not rows:
        return
    columns = list(rows[0])
    driver = session.connection().connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"  # names from our own model
    with driver.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row([row[c] for c in columns])


def _skipped_row(
    row_id: int,
    batch_id: str,
    server_id: str,
    conflict_batch: str | None,
    incompatible: dict[str, Any] | None,
    now: datetime,
) -> dict[str, Any]:
    """The creation row of a server stored `skipped`: in another batch, or incompatible."""
    if conflict_batch is not None:
        reason, details = "active_in_other_batch", {"other_batch_id": conflict_batch}
    else:
        reason, details = "incompatible", dict(incompatible or {})
    return {
        "batch_server_id": row_id,
        "batch_id": batch_id,
        "server_id": server_id,
        "from_state": None,
        "to_state": ServerState.SKIPPED.value,
        "at": now,
        "reason": reason,
        "attempt": 0,
        "job_id": None,
        "details": details,
    }


def replay(sessions: sessionmaker[Session], key: str, fingerprint: str) -> CreatedBatch | None:
    """The batch an Idempotency-Key already made (IdempotencyMismatch for another body)."""
    with sessions() as session:
        return _replay(session, key, fingerprint)


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
    """The batch with its counts per state and per wave (both kept, never counted here)."""
    with sessions() as session:
        batch = session.get(Batch, batch_id)
        if batch is None:
            raise NotFound(f"batch {batch_id} does not exist")
        per_wave = session.execute(
            select(BatchWaveCount.wave, BatchWaveCount.state, BatchWaveCount.n).where(
                BatchWaveCount.batch_id == batch_id
            )
        ).all()
        view = batch_view(batch)
        view["webhooks"] = delivery_counts(session, batch_id)
        view["approvals"] = approvals_of(session, batch)
        view["failure_codes"] = failure_codes(session, batch_id)
    waves: dict[int, dict[str, int]] = {}
    for wave, state, n in per_wave:
        waves.setdefault(wave, {s.value: 0 for s in ServerState})[state] = int(n)
    view["waves"] = [
        {"wave": wave, "size": sum(counts.values()), "counts": counts}
        for wave, counts in sorted(waves.items())
    ]
    return view


def batch_project(sessions: sessionmaker[Session], batch_id: str) -> str | None:
    """The project a batch belongs to, or None when there is no such batch."""
    with sessions() as session:
        return session.scalar(select(Batch.project_id).where(Batch.id == batch_id))


def list_batches(
    sessions: sessionmaker[Session],
    *,
    limit: int,
    cursor: str | None,
    projects: list[str] | None = None,
    state: str | None = None,
    search: str | None = None,
    oldest_first: bool = False,
) -> dict[str, Any]:
    """Newest (or oldest) first, keyset-paged on (created_at, id); only `projects`' batches
    when given, only those in `state`, only those whose id or submitter starts with `search`
    (the filter and search box of the web page's list)."""
    keys = (Batch.created_at, Batch.id)
    query = select(Batch).limit(limit + 1)
    query = query.order_by(*(key.asc() if oldest_first else key.desc() for key in keys))
    if projects is not None:
        query = query.where(Batch.project_id.in_(projects))
    if state:
        query = query.where(Batch.state == state)
    if search:
        query = query.where(
            or_(
                Batch.id.startswith(search.lower(), autoescape=True),
                Batch.submitted_by.startswith(search, autoescape=True),
            )
        )
    if cursor:
        created_at, batch_id = _decode_batch_cursor(cursor)
        if oldest_first:
            after = or_(
                Batch.created_at > created_at,
                and_(Batch.created_at == created_at, Batch.id > batch_id),
            )
        else:
            after = or_(
                Batch.created_at < created_at,
                and_(Batch.created_at == created_at, Batch.id < batch_id),
            )
        query = query.where(after)
    with sessions() as session:
        rows = list(session.scalars(query))
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        last = page[-1]
        next_cursor = encode(f"{last.created_at.isoformat()}|{last.id}")
    return {"items": [batch_view(b) for b in page], "next_cursor": next_cursor}


_BATCH_EXISTS = select(BATCHES_TABLE.c.id).where(BATCHES_TABLE.c.id == bindparam("batch_id"))


def list_batch_servers(
    sessions: sessionmaker[Session],
    batch_id: str,
    *,
    state: str | None,
    limit: int,
    cursor: str | None,
    server_prefix: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """A batch's servers in submission order, keyset-paged on the row id; optionally only
    those in one state, with one error code, or whose id starts with `server_prefix` (the
    search box of the page)."""
    query, params = server_page_query(
        batch_id,
        state=state,
        code=code,
        server_prefix=server_prefix,
        after=decode_int(cursor) if cursor else None,
        limit=limit + 1,
        columns=SERVER_VIEW_COLUMNS,
    )
    with read_connection(sessions) as connection:
        # Plain rows through Core, not ORM objects: a page is read, never changed (ORM
        # loading was a third of its cost).
        rows = connection.execute(query, params).all()
        # Only an empty page can mean that there is no such batch: one round trip fewer.
        if not rows and connection.scalar(_BATCH_EXISTS, {"batch_id": batch_id}) is None:
            raise NotFound(f"batch {batch_id} does not exist")
    page = rows[:limit]
    next_cursor = encode(str(page[-1].id)) if len(rows) > limit else None
    return {"items": [server_view(r) for r in page], "next_cursor": next_cursor}


def server_history(
    sessions: sessionmaker[Session],
    server_id: str,
    *,
    limit: int,
    cursor: str | None,
    projects: list[str] | None = None,
) -> dict[str, Any]:
    """Every recorded change of one server across all batches, oldest first; only the rows of
    `projects`' batches when given."""
    query, params = history_page_query(
        server_id,
        limit=limit + 1,
        after=decode_int(cursor) if cursor else None,
        projects=projects,
    )
    with read_connection(sessions) as connection:
        rows = connection.execute(query, params).all()  # plain rows: read only
    page = rows[:limit]
    next_cursor = encode(str(page[-1].id)) if len(rows) > limit else None
    return {"items": [history_view(r) for r in page], "next_cursor": next_cursor}


def _decode_batch_cursor(cursor: str) -> tuple[datetime, str]:
    created, sep, batch_id = decode(cursor).partition("|")
    try:
        if not sep:
            raise ValueError
        return datetime.fromisoformat(created), batch_id
    except ValueError:
        raise BadCursor("cursor is not one this API gave out") from None


RETRYABLE_STATES = frozenset(
    {
        ServerState.FAILED.value,
        ServerState.CANCELLED.value,
        ServerState.SKIPPED.value,
        ServerState.SUCCEEDED.value,
    }
)


@dataclass(frozen=True)
class RetrySource:
    batch: dict[str, Any]
    servers: list[str]
    states: list[str]


# What a retry request may say: which states to take, and what to change for the new batch.
RETRY_FIELDS = frozenset(
    {"states", "os_change", "policy", "cloud_init", "on_conflict", "notify_url"}
)


def retry_source(sessions: sessionmaker[Session], batch_id: str, states: object) -> RetrySource:
    """The parent batch and its servers in `states` (default: failed), in their order."""
    wanted = ["failed"] if states is None else states
    if (
        not isinstance(wanted, list)
        or not wanted
        or not all(isinstance(s, str) and s in RETRYABLE_STATES for s in wanted)
    ):
        raise RequestInvalidError(
            {"states": "a non-empty list of: " + ", ".join(sorted(RETRYABLE_STATES))}
        )
    with sessions() as session:
        batch = session.get(Batch, batch_id)
        if batch is None:
            raise NotFound(f"batch {batch_id} does not exist")
        servers = list(
            session.scalars(
                select(BatchServer.server_id)
                .where(BatchServer.batch_id == batch_id, BatchServer.state.in_(wanted))
                .order_by(BatchServer.position)
            )
        )
        view = batch_view(batch)
    if not servers:
        raise RequestInvalidError(
            {"states": f"no server of batch {batch_id} is in {', '.join(wanted)}"}
        )
    return RetrySource(view, servers, wanted)


def retry_payload(source: RetrySource, overrides: dict[str, Any]) -> dict[str, Any]:
    """The request a retry amounts to: the parent's change and policy, with overrides."""
    parent = source.batch
    unknown = set(overrides) - RETRY_FIELDS
    if unknown:
        raise RequestInvalidError({name: "unknown field" for name in sorted(unknown)})
    os_change = overrides.get("os_change")
    if os_change is None:
        os_change = _without_none(parent["os_change"])
        if "keyname" not in os_change and not parent["cloud_init"]:
            raise RequestInvalidError(
                {
                    "os_change": "the parent's password is erased after use: give os_change "
                    "again with adminpass (or keyname)"
                }
            )
    policy = _without_none(parent["policy"])
    if isinstance(overrides.get("policy"), dict):
        policy.update(overrides["policy"])
    payload: dict[str, Any] = {
        "project_id": parent["project_id"],
        "region": parent["region"],
        "servers": source.servers,
        "os_change": os_change,
        "cloud_init": overrides.get("cloud_init", parent["cloud_init"]),
        "policy": policy,
    }
    for name in ("on_conflict", "notify_url"):
        if name in overrides:
            payload[name] = overrides[name]
    if "notify_url" not in overrides and parent.get("notify_url"):
        payload["notify_url"] = parent["notify_url"]  # the child reports where its parent did
    return payload


def _without_none(document: dict[str, Any]) -> dict[str, Any]:
    return {
        key: _without_none(value) if isinstance(value, dict) else value
        for key, value in document.items()
        if value is not None
    }


class RequestInvalidError(ServiceError):
    """A request the service itself found invalid, with field-level reasons."""

    code = "invalid_request"

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("invalid request", {"fields": fields})
        self.fields = fields
