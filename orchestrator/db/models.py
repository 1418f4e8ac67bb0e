"""SQLAlchemy 2.x models: batches, servers in a batch, and their append-only histories."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ColumnExpressionArgument,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    exists,
    false,
    text,
)
from sqlalchemy import Exists as ExistsClause
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from orchestrator.domain.policy import RolloutPolicy
from orchestrator.domain.states import (
    ACTIVE_SERVER_STATES,
    BatchState,
    DeliveryState,
    ServerState,
)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BIGINT on PostgreSQL, INTEGER on SQLite (where only INTEGER PRIMARY KEY autoincrements).
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on PostgreSQL and on SQLite (which stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is UTC:
            return value  # PostgreSQL sessions run in UTC (see db.engine): the common case
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Timestamp = UtcDateTime()


def one_of(column: str, states: type[StrEnum], *, nullable: bool = False) -> CheckConstraint:
    """A state column holds one of its enum's values and nothing else (migration 0009 adds the
    same rule to existing databases: a CHECK on PostgreSQL, triggers on SQLite)."""
    listed = ", ".join(f"'{state.value}'" for state in states)
    condition = f"{column} IN ({listed})"
    if nullable:
        condition = f"({column} IS NULL OR {condition})"
    return CheckConstraint(condition, name=column)


ACTIVE_STATES_SQL = "state IN ('pending', 'submitting', 'backing_up', 'running', 'verifying')"
SETTLED_WITH_DURATION_SQL = "job_seconds IS NOT NULL AND state IN ('succeeded', 'failed')"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, datetime: Timestamp}


class Batch(Base):
    """One operator request: a change (image, key, mode) applied to a frozen list of servers."""

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(20), index=True)
    project_id: Mapped[str] = mapped_column(String(64))
    region: Mapped[str] = mapped_column(String(32))
    cloud_init: Mapped[bool] = mapped_column(Boolean)
    # The change as sent to the cloud, without adminpass or user_data.
    os_change: Mapped[dict[str, Any]]
    # adminpass / user_data, encrypted with ORCH_SECRET_KEY; erased once no server needs it.
    sealed_secrets: Mapped[bytes | None] = mapped_column(LargeBinary)
    policy: Mapped[dict[str, Any]]
    total: Mapped[int] = mapped_column(Integer)
    # Counts per server state, maintained by record_server_transition (no scan of the servers).
    n_pending: Mapped[int] = mapped_column(Integer, default=0)
    n_submitting: Mapped[int] = mapped_column(Integer, default=0)
    n_backing_up: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    n_running: Mapped[int] = mapped_column(Integer, default=0)
    n_verifying: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    n_succeeded: Mapped[int] = mapped_column(Integer, default=0)
    n_failed: Mapped[int] = mapped_column(Integer, default=0)
    n_cancelled: Mapped[int] = mapped_column(Integer, default=0)
    n_skipped: Mapped[int] = mapped_column(Integer, default=0)
    # Failed and left broken (the server is in ERROR), as opposed to failed but safe.
    n_broken: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Servers that failed their health gate and are being changed back to their previous
    # image (in flight, not yet failed): the error budget counts them from the moment the
    # gate failed, so a bad image stops the batch before its rollbacks end.
    n_rolling_back: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Failure domains (policy.spread / waves_by), frozen at submission: servers per domain
    # value (`sizes`: {kind: {value: n}}) and the domain value of each wave (`wave_labels`).
    domains: Mapped[dict[str, Any] | None]
    # Outside its maintenance windows: the next opening (no new changeos before it); None while
    # a window is open or the batch has none. Written by the tick, with an event.
    window_opens_at: Mapped[datetime | None]
    # Who submitted it (a token's name): never one of its approvers.
    submitted_by: Mapped[str | None] = mapped_column(String(64))
    # The approval gate it waits on while paused for approvals (0: before the start, k: after
    # wave k); None otherwise.
    approval_gate: Mapped[int | None] = mapped_column(Integer)
    # "change" (a submission or a retry) or "rollback" (each server back to its own recorded
    # image; `parent_id` is the batch it undoes).
    kind: Mapped[str] = mapped_column(String(16), default="change", server_default="change")
    pause_reason: Mapped[str | None] = mapped_column(Text)
    paused_by: Mapped[str | None] = mapped_column(String(64))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Set when the error budget is spent: no new submissions, the batch ends `aborted`.
    abort_reason: Mapped[str | None] = mapped_column(String(64))
    # Waves: the one whose servers may be claimed now, how many there are, and when the
    # current one's last server settled (the start of its bake time).
    current_wave: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    waves_total: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    wave_ended_at: Mapped[datetime | None]
    # The target selector the servers were resolved from, frozen with the batch.
    selector: Mapped[dict[str, Any] | None]
    # Learned from this batch's finished jobs: when to ask first about a new job.
    expected_job_s: Mapped[float | None] = mapped_column(Float)
    # Called (besides ORCH_NOTIFY_URL) on every state change and wave end; see webhooks.
    notify_url: Mapped[str | None] = mapped_column(String(2048))
    parent_id: Mapped[str | None] = mapped_column(String(36))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))
    finished_at: Mapped[datetime | None]

    @property
    def budget_used(self) -> int:
        """What the error budget counts: the failed, and those being rolled back after a
        failed health gate (failed in all but name, from the moment the gate failed)."""
        return self.n_failed + self.n_rolling_back

    @property
    def in_flight(self) -> int:
        """Servers past pending and not yet settled: each holds an in-flight slot."""
        return self.n_submitting + self.n_backing_up + self.n_running + self.n_verifying

    @property
    def rollout_policy(self) -> RolloutPolicy:
        """The policy as one typed value, its defaults filled in (`policy` is its stored form)."""
        return RolloutPolicy.from_json(self.policy)

    __table_args__ = (
        Index("ix_batches_created_at_id", "created_at", "id"),
        one_of("state", BatchState),
    )


class BatchServer(Base):
    """One server's place in one batch: its current state and everything needed to resume it."""

    __tablename__ = "batch_servers"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    server_id: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(Integer)
    wave: Mapped[int] = mapped_column(Integer, default=1)
    state: Mapped[str] = mapped_column(String(20))
    # Number of changeos calls sent for this server in this batch (recorded BEFORE each call).
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    # Set and committed right before a changeos call; cleared when its outcome is known.
    call_started_at: Mapped[datetime | None]
    outcome_unknown: Mapped[bool] = mapped_column(Boolean, default=False)
    # The server as the cloud showed it just before the current attempt's call (status, task
    # state, `updated`, system disk, image): an unknown outcome is settled against it.
    before_call: Mapped[dict[str, Any] | None]
    # Facts about the server observed before this moment may not decide its next send (a
    # resend after a reconcile must look at the server again, never at an older list sweep).
    facts_not_before: Mapped[datetime | None]
    # The image this server is changed to (with per-architecture images, its flavor's), chosen
    # at submission and confirmed by the pre-flight check of each send; None on rows written
    # before pre-flight existed, which take the batch's `os_change.imageid`.
    target_image: Mapped[str | None] = mapped_column(String(64))
    # What the pre-flight check saw at submission (flavor, architecture, zone, charging mode,
    # system disk and its size, present image and its firmware), shown with the server.
    facts: Mapped[dict[str, Any] | None]
    # Its failure domains ({kind: value}) for the kinds the policy names, from the facts read
    # at submission; an unknown value is "unknown:<server id>" (a domain of its own).
    domains: Mapped[dict[str, Any] | None]
    # "change", or "rollback" once a failed health gate sends it back to `previous_image`.
    phase: Mapped[str] = mapped_column(String(16), default="change", server_default="change")
    # The image the server ran just before this batch's changeos (recorded with the send):
    # where a rollback takes it back to.
    previous_image: Mapped[str | None] = mapped_column(String(64))
    # The health gate: the probe target, when the job ended, the probes so far (count,
    # healthy ones in a row, the last one's status or error and timings).
    health: Mapped[dict[str, Any] | None]
    # The backup image made before the change (policy.backup): its name, IMS job, image id,
    # status, and when it was deleted.
    backup: Mapped[dict[str, Any] | None]
    # When the backup image is due for deletion (policy.backup.retention_s after it became
    # active); cleared once it is deleted. The retention sweep walks its index.
    backup_expires_at: Mapped[datetime | None] = mapped_column(index=True)

    def image_for(self, os_change: dict[str, Any]) -> str:
        """The image this server is changed to: its own, else the batch's single image."""
        return self.target_image or str(os_change.get("imageid") or "")

    # When a task was last handed this row; a message lost in the broker is re-sent after a lease.
    dispatched_at: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime | None]
    retries: Mapped[int] = mapped_column(Integer, default=0)
    job_id: Mapped[str | None] = mapped_column(String(64))
    job_status: Mapped[str | None] = mapped_column(String(20))
    # The cloud's final job body, kept until the server itself has been checked.
    job_result: Mapped[dict[str, Any] | None]
    broken: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # How long the cloud's job took (its own begin and end times), to learn poll timing.
    job_seconds: Mapped[float | None] = mapped_column(Float)
    next_poll_at: Mapped[datetime | None]
    polls: Mapped[int] = mapped_column(Integer, default=0)
    submitted_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        one_of("state", ServerState),
        UniqueConstraint("batch_id", "server_id", name="uq_batch_servers_batch_id_server_id"),
        Index("ix_batch_servers_batch_id_state_id", "batch_id", "state", "id"),
        # Claims: the pending servers of the current wave, in submission order.
        Index(
            "ix_batch_servers_batch_id_wave_state_position", "batch_id", "wave", "state", "position"
        ),
        # Learning poll timing: the batch's most recent settled jobs, without walking the rest.
        Index(
            "ix_batch_servers_settled_job_seconds",
            "batch_id",
            "id",
            postgresql_include=["job_seconds"],
            postgresql_where=text(SETTLED_WITH_DURATION_SQL),
            sqlite_where=text(SETTLED_WITH_DURATION_SQL),
        ),
        Index("ix_batch_servers_batch_id_id", "batch_id", "id"),
        # A batch's servers with one error code (the failures-by-code drill-down and export).
        Index(
            "ix_batch_servers_batch_id_error_code_id",
            "batch_id",
            "error_code",
            "id",
            postgresql_where=text("error_code IS NOT NULL"),
            sqlite_where=text("error_code IS NOT NULL"),
        ),
        Index("ix_batch_servers_state_next_poll_at", "state", "next_poll_at"),
        # One server, one active batch: the database refuses a second active row.
        Index(
            "uq_batch_servers_active_server",
            "server_id",
            unique=True,
            sqlite_where=text(ACTIVE_STATES_SQL),
            postgresql_where=text(ACTIVE_STATES_SQL),
        ),
    )


class BatchWaveCount(Base):
    """How many servers of a wave are in each state, kept with every transition, so a batch's
    progress per wave is read, not counted over its servers."""

    __tablename__ = "batch_wave_counts"

    batch_id: Mapped[str] = mapped_column(
        ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True
    )
    wave: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[str] = mapped_column(String(20), primary_key=True)
    n: Mapped[int] = mapped_column(Integer)

    __table_args__ = (one_of("state", ServerState),)


def wave_unsettled(
    batch_id: str | ColumnExpressionArgument[str], wave: int | ColumnExpressionArgument[int]
) -> ExistsClause:
    """Whether a wave still has a server pending or in flight, read from its kept counts (no
    scan of its servers): for one batch's values, or correlated to a query's columns."""
    return exists().where(
        BatchWaveCount.batch_id == batch_id,
        BatchWaveCount.wave == wave,
        BatchWaveCount.state.in_([state.value for state in ACTIVE_SERVER_STATES]),
        BatchWaveCount.n > 0,
    )


class BatchCodeCount(Base):
    """How many of a batch's servers ended failed, skipped or cancelled with one error code,
    and the message of the first of them: kept with every transition into those states, so a
    batch's failures are read by code ("312 x Ecs.0202") without counting its servers."""

    __tablename__ = "batch_code_counts"

    batch_id: Mapped[str] = mapped_column(
        ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True
    )
    state: Mapped[str] = mapped_column(String(20), primary_key=True)
    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    n: Mapped[int] = mapped_column(Integer)
    message: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (one_of("state", ServerState),)


class ServerHistory(Base):
    """Append-only: one row per state change of a server in a batch, with the cloud's words."""

    __tablename__ = "server_history"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    batch_server_id: Mapped[int] = mapped_column(ForeignKey("batch_servers.id", ondelete="CASCADE"))
    batch_id: Mapped[str] = mapped_column(String(36))
    server_id: Mapped[str] = mapped_column(String(64))
    from_state: Mapped[str | None] = mapped_column(String(20))
    to_state: Mapped[str] = mapped_column(String(20))
    at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    job_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]]

    __table_args__ = (
        one_of("to_state", ServerState),
        one_of("from_state", ServerState, nullable=True),
        Index("ix_server_history_server_id_id", "server_id", "id"),
        Index("ix_server_history_batch_server_id_id", "batch_server_id", "id"),
    )


class BatchEvent(Base):
    """Append-only: batch state changes and operator actions (who, what, why)."""

    __tablename__ = "batch_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    at: Mapped[datetime]
    from_state: Mapped[str | None] = mapped_column(String(20))
    to_state: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(64))
    details: Mapped[dict[str, Any]]

    __table_args__ = (
        one_of("to_state", BatchState),
        one_of("from_state", BatchState, nullable=True),
        Index("ix_batch_events_batch_id_id", "batch_id", "id"),
    )


class Approval(Base):
    """Append-only: one approval or refusal of one gate of a batch, by one person (the unique
    key counts each person once per gate)."""

    __tablename__ = "approvals"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    gate: Mapped[int] = mapped_column(Integer)
    principal: Mapped[str] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(String(16))  # "approved" | "rejected"
    comment: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint(
            "batch_id", "gate", "principal", name="uq_approvals_batch_id_gate_principal"
        ),
    )


class ApiToken(Base):
    """An API token: only its SHA-256 is kept; the token itself is shown once, at creation."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    # None: every project; otherwise the Huawei project ids this token may see and act on.
    projects: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The first characters of the token, to recognise it in a list without revealing it.
    token_prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(64))
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class AuditEntry(Base):
    """Append-only (triggers refuse UPDATE and DELETE): every mutating request and its outcome."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(64))
    role: Mapped[str | None] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(512))
    batch_id: Mapped[str | None] = mapped_column(String(36))
    project_id: Mapped[str | None] = mapped_column(String(64))
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))
    details: Mapped[dict[str, Any]]

    __table_args__ = (
        Index("ix_audit_log_at_id", "at", "id"),
        Index("ix_audit_log_batch_id_id", "batch_id", "id"),
        Index("ix_audit_log_actor_id", "actor", "id"),
    )


class WebhookDelivery(Base):
    """The outbox: one event for one URL, written with the change it reports, sent later."""

    __tablename__ = "webhook_deliveries"

    # Increasing, so deliveries of one batch to one URL go out in the order they were written.
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2048))
    event: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]]
    # pending (to send, or being sent), delivered, failed (gave up).
    state: Mapped[str] = mapped_column(String(16))
    # Attempts started, counted when an attempt is claimed (before the request is sent).
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]

    __table_args__ = (
        one_of("state", DeliveryState),
        Index("ix_webhook_deliveries_state_next_attempt_at", "state", "next_attempt_at"),
        Index("ix_webhook_deliveries_batch_id_id", "batch_id", "id"),
    )


class WebhookAttempt(Base):
    """Append-only: one row per attempt to send a delivery, and what came of it."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime]
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(200))
    duration_ms: Mapped[int] = mapped_column(Integer)

    __table_args__ = (Index("ix_webhook_attempts_delivery_id_id", "delivery_id", "id"),)


# The tables behind the hot classes, for Core statements where the ORM's bulk path would cost
# about as much Python again per statement and nobody wants objects back (issue 17 part 2).
BATCHES_TABLE = cast(Table, Batch.__table__)
BATCH_SERVERS_TABLE = cast(Table, BatchServer.__table__)
SERVER_HISTORY_TABLE = cast(Table, ServerHistory.__table__)
BATCH_WAVE_COUNTS_TABLE = cast(Table, BatchWaveCount.__table__)
BATCH_CODE_COUNTS_TABLE = cast(Table, BatchCodeCount.__table__)
