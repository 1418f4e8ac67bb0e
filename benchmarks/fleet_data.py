"""A realistic fleet's worth of rows, written by PostgreSQL itself (INSERT ... SELECT over
generate_series), for the API load script and the query-plan tests.

The shape: one large batch in flight (a settled prefix, some servers running or submitting, the
rest pending across three waves), one paused batch half done, one cancelled batch, and older
finished batches re-imaging overlapping parts of the same fleet, so that one server has history
in several batches. Every row obeys the schema: the batches' n_* counts match their servers,
history rows follow the real lifecycle (accepted, slot_claimed, changeos_sent, accepted,
job_succeeded / job_failed) with increasing timestamps, and no server is active in two batches.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, text

from orchestrator.domain.rollout import plan_waves

# Stable ids, so that two seeded databases of one shape hold the same batches and servers.
NAMESPACE = uuid.UUID("0b6f3e52-5d7c-4a53-9a43-0c1f7c1f0a11")
PROJECT_ID = "0605767b5a80d5762f1ec0010b0bd1a4"
REGION = "ap-southeast-1"
BIG_BATCH_WAVES = ["1%", "9%", "90%"]

# Each final state and the transitions that led there, as record_server_transition writes them.
LIFECYCLE: dict[str, list[tuple[str | None, str, str]]] = {
    "pending": [(None, "pending", "accepted")],
    "submitting": [(None, "pending", "accepted"), ("pending", "submitting", "slot_claimed")],
    "running": [
        (None, "pending", "accepted"),
        ("pending", "submitting", "slot_claimed"),
        ("submitting", "submitting", "changeos_sent"),
        ("submitting", "running", "accepted"),
    ],
    "cancelled": [(None, "pending", "accepted"), ("pending", "cancelled", "cancelled")],
    "skipped": [(None, "skipped", "active_in_other_batch")],
}
LIFECYCLE["succeeded"] = [*LIFECYCLE["running"], ("running", "succeeded", "job_succeeded")]
LIFECYCLE["failed"] = [*LIFECYCLE["running"], ("running", "failed", "job_failed")]


@dataclass(frozen=True)
class FleetShape:
    """How many servers go where; history rows follow from the servers' states."""

    big_batch: int = 100_000
    # Share of the big batch already settled (the rest is in flight or pending).
    big_settled: float = 0.6
    big_running: int = 600
    big_submitting: int = 100
    finished_batches: int = 47
    finished_size: int = 2_800
    paused_size: int = 2_800
    cancelled_size: int = 2_800

    @property
    def servers(self) -> int:
        small = self.finished_batches * self.finished_size
        return self.big_batch + small + self.paused_size + self.cancelled_size

    def expected_history_rows(self) -> float:
        """Roughly how many history rows seeding writes (the states are pseudo-random)."""
        settled = 0.99 * 5 + 0.01 * 1  # succeeded or failed: 5 rows; skipped: 1 row
        big_settled = int(self.big_batch * self.big_settled)
        big_pending = self.big_batch - big_settled - self.big_running - self.big_submitting
        return (
            big_settled * settled
            + self.big_running * len(LIFECYCLE["running"])
            + self.big_submitting * len(LIFECYCLE["submitting"])
            + big_pending * len(LIFECYCLE["pending"])
            + self.finished_batches * self.finished_size * settled
            + self.paused_size * (0.5 * settled + 0.5 * len(LIFECYCLE["pending"]))
            + self.cancelled_size * (0.3 * settled + 0.7 * len(LIFECYCLE["cancelled"]))
        )


def shape_for_history_rows(rows: int) -> FleetShape:
    """50 batches holding about `rows` history rows: the big batch has a tenth of the rows'
    worth of servers (100,000 from a million rows on), the 49 others share the rest."""
    big = min(100_000, max(1_000, rows // 10))

    def shape(small: int) -> FleetShape:
        return FleetShape(
            big_batch=big,
            big_running=min(600, big // 100),
            big_submitting=min(100, big // 500),
            finished_size=small,
            paused_size=small,
            cancelled_size=small,
        )

    # The estimate is linear in the small batches' size: solve for the size that fits.
    base = shape(0).expected_history_rows()
    per_server = shape(1).expected_history_rows() - base
    return shape(max(10, round((rows - base) / per_server)))


@dataclass(frozen=True)
class _Plan:
    """One batch to seed: which fleet servers it holds and how far it got."""

    index: int
    kind: str  # running | paused | cancelled | finished
    size: int
    fleet_start: int
    created_at: datetime
    settled: int
    running: int
    submitting: int
    tail: str  # the state of servers after the settled and in-flight ones
    claim_pace_s: float  # seconds between two servers' slot claims
    waves: list[int]

    @property
    def batch_id(self) -> str:
        return str(uuid.uuid5(NAMESPACE, f"batch-{self.index}"))


@dataclass(frozen=True)
class SeedSummary:
    big_batch_id: str
    batches: int
    batch_servers: int
    server_history: int
    seconds: float


def _plans(shape: FleetShape, now: datetime) -> tuple[list[_Plan], int]:
    """The batches, oldest first, and the fleet size their server ranges wrap around."""
    fleet = shape.big_batch + shape.paused_size
    plans: list[_Plan] = []
    # Finished batches: one a day, each a slice of the fleet starting somewhere else.
    for i in range(shape.finished_batches):
        plans.append(
            _Plan(
                index=len(plans),
                kind="finished",
                size=min(shape.finished_size, fleet),
                fleet_start=int(i * fleet * 0.618034) % fleet,  # golden-ratio spread
                created_at=now - timedelta(days=shape.finished_batches + 3 - i),
                settled=shape.finished_size,
                running=0,
                submitting=0,
                tail="pending",
                claim_pace_s=1.0,
                waves=[shape.finished_size],
            )
        )
    if shape.cancelled_size:
        plans.append(
            _Plan(
                index=len(plans),
                kind="cancelled",
                size=min(shape.cancelled_size, fleet),
                fleet_start=fleet // 3,
                created_at=now - timedelta(days=2),
                settled=int(shape.cancelled_size * 0.3),
                running=0,
                submitting=0,
                tail="cancelled",
                claim_pace_s=1.0,
                waves=[shape.cancelled_size],
            )
        )
    if shape.paused_size:
        # Active servers must be unique across batches: the paused batch owns the fleet's end.
        plans.append(
            _Plan(
                index=len(plans),
                kind="paused",
                size=shape.paused_size,
                fleet_start=shape.big_batch,
                created_at=now - timedelta(days=1),
                settled=shape.paused_size // 2,
                running=0,
                submitting=0,
                tail="pending",
                claim_pace_s=1.0,
                waves=[shape.paused_size],
            )
        )
    in_flight = shape.big_running + shape.big_submitting
    settled = int(shape.big_batch * shape.big_settled)
    started = now - timedelta(hours=2)
    plans.append(
        _Plan(
            index=len(plans),
            kind="running",
            size=shape.big_batch,
            fleet_start=0,
            created_at=started,
            settled=settled,
            running=shape.big_running,
            submitting=shape.big_submitting,
            tail="pending",
            # Claims spread over the first 100 minutes: every settled job ended before now.
            claim_pace_s=6_000.0 / max(1, settled + in_flight),
            waves=plan_waves(shape.big_batch, BIG_BATCH_WAVES),
        )
    )
    return plans, fleet


def _batch_row(plan: _Plan, now: datetime) -> dict[str, Any]:
    finished = plan.kind in ("finished", "cancelled")
    ended = plan.created_at + timedelta(seconds=plan.claim_pace_s * plan.size + 600)
    policy = {
        "max_in_flight": 1000 if plan.kind == "running" else 50,
        "poll_interval_s": 10.0,
        "job_timeout_s": 1800,
        "waves": BIG_BATCH_WAVES if plan.kind == "running" else None,
        "max_failures": "10%",
        "pause_after_waves": False,
        "wave_delay_s": 0.0,
        "skip_matching": True,
    }
    return {
        "id": plan.batch_id,
        "created_at": plan.created_at,
        "updated_at": ended if finished else now,
        # Finished batches get their final state from their counts, after the servers exist.
        "state": {"running": "running", "paused": "paused", "cancelled": "cancelled"}.get(
            plan.kind, "succeeded"
        ),
        "project_id": PROJECT_ID,
        "region": REGION,
        "os_change": json.dumps(
            {"imageid": str(uuid.uuid5(NAMESPACE, f"image-{plan.index % 3}")), "keyname": "ops"}
        ),
        "policy": json.dumps(policy),
        "total": plan.size,
        "pause_reason": "operator: checking wave 1" if plan.kind == "paused" else None,
        "paused_by": "api" if plan.kind == "paused" else None,
        "cancel_requested": plan.kind == "cancelled",
        "current_wave": len(plan.waves) if plan.kind == "running" else 1,
        "waves_total": len(plan.waves),
        "expected_job_s": 360.0,
        "fingerprint": uuid.uuid5(NAMESPACE, f"request-{plan.index}").hex * 2,
        "finished_at": ended if finished else None,
    }


INSERT_BATCH = text(
    """
    INSERT INTO batches (
        id, created_at, updated_at, state, project_id, region, cloud_init, os_change,
        sealed_secrets, policy, total, n_pending, n_submitting, n_running, n_succeeded,
        n_failed, n_cancelled, n_skipped, n_broken, pause_reason, paused_by, cancel_requested,
        abort_reason, current_wave, waves_total, wave_ended_at, selector, expected_job_s,
        parent_id, idempotency_key, request_fingerprint, finished_at
    ) VALUES (
        :id, :created_at, :updated_at, :state, :project_id, :region, false,
        CAST(:os_change AS json), NULL, CAST(:policy AS json), :total, 0, 0, 0, 0, 0, 0, 0, 0,
        :pause_reason, :paused_by, :cancel_requested, NULL, :current_wave, :waves_total, NULL,
        NULL, :expected_job_s, NULL, NULL, :fingerprint, :finished_at
    )
    """
)

# One row per (batch, position). `h` is a stable pseudo-random number per server that picks
# its fate (about 3% failed, 1% skipped) and spreads job durations and poll times.
INSERT_SERVERS = text(
    """
    INSERT INTO batch_servers (
        batch_id, server_id, position, wave, state, attempt, call_started_at, outcome_unknown,
        dispatched_at, next_attempt_at, retries, job_id, job_status, job_result, broken,
        job_seconds, next_poll_at, polls, submitted_at, finished_at, created_at, updated_at,
        error_code, error_message
    )
    SELECT
        p.batch_id, s.server_id, g.pos, width_bucket(g.pos, p.wave_starts), s.state,
        CASE WHEN s.state IN ('running', 'succeeded', 'failed') THEN 1 ELSE 0 END,
        NULL, false,
        CASE WHEN s.state = 'submitting' AND s.h % 2 = 1 THEN :now - interval '5 s' END,
        CASE WHEN s.state = 'submitting' THEN s.claimed END,
        0,
        CASE WHEN s.state IN ('running', 'succeeded', 'failed')
             THEN md5(p.batch_id || g.pos) END,
        CASE s.state WHEN 'running' THEN 'RUNNING' WHEN 'succeeded' THEN 'SUCCESS'
                     WHEN 'failed' THEN 'FAIL' END,
        NULL,
        s.state = 'failed' AND s.h % 10 = 0,
        CASE WHEN s.state IN ('succeeded', 'failed') THEN s.job_s END,
        -- about a third of the running jobs are due for a poll now
        CASE WHEN s.state = 'running' THEN :now + (s.h % 60 - 20) * interval '1 s' END,
        CASE s.state WHEN 'running' THEN 1 WHEN 'succeeded' THEN 3 WHEN 'failed' THEN 3
                     ELSE 0 END,
        CASE WHEN s.state IN ('running', 'succeeded', 'failed')
             THEN s.claimed + interval '0.6 s' END,
        CASE WHEN s.state IN ('succeeded', 'failed')
                 THEN s.claimed + interval '0.6 s' + s.job_s * interval '1 s'
             WHEN s.state = 'cancelled' THEN s.claimed
             WHEN s.state = 'skipped' THEN p.created_at END,
        p.created_at,
        CASE WHEN s.state IN ('succeeded', 'failed')
                 THEN s.claimed + interval '0.6 s' + s.job_s * interval '1 s'
             WHEN s.state = 'running' THEN s.claimed + interval '0.6 s'
             WHEN s.state IN ('submitting', 'cancelled') THEN s.claimed
             ELSE p.created_at END,
        CASE WHEN s.state = 'failed' THEN 'EcsJobFailed' END,
        CASE WHEN s.state = 'failed' THEN 'the changeos job ended FAIL: Ecs.0001' END
    FROM seed_plan p
    CROSS JOIN LATERAL generate_series(0, p.size - 1) AS g(pos)
    CROSS JOIN LATERAL (
        SELECT
            md5('reimage-fleet-' || ((p.fleet_start + g.pos) % :fleet))::uuid::text
                AS server_id,
            abs(hashtext(p.batch_id || ':' || g.pos)) % 1000 AS h,
            p.created_at + g.pos * p.claim_pace_s * interval '1 s' AS claimed,
            240 + abs(hashtext(g.pos || ':' || p.batch_id)) % 240 AS job_s
    ) AS r
    CROSS JOIN LATERAL (
        SELECT r.server_id, r.h, r.claimed, r.job_s,
            CASE
                WHEN g.pos < p.settled THEN
                    CASE WHEN r.h < 30 THEN 'failed' WHEN r.h < 40 THEN 'skipped'
                         ELSE 'succeeded' END
                WHEN g.pos < p.settled + p.running THEN 'running'
                WHEN g.pos < p.settled + p.running + p.submitting THEN 'submitting'
                ELSE p.tail
            END AS state
    ) AS s
    ORDER BY p.created_at, g.pos
    """
)

# The counts record_server_transition maintains, computed once from the rows themselves.
UPDATE_COUNTS = text(
    """
    UPDATE batches b SET
        n_pending = c.pending, n_submitting = c.submitting, n_running = c.running,
        n_succeeded = c.succeeded, n_failed = c.failed, n_cancelled = c.cancelled,
        n_skipped = c.skipped, n_broken = c.broken,
        state = CASE WHEN b.state = 'succeeded' AND c.failed > 0 THEN 'partially_failed'
                     ELSE b.state END
    FROM (
        SELECT batch_id,
            count(*) FILTER (WHERE state = 'pending') AS pending,
            count(*) FILTER (WHERE state = 'submitting') AS submitting,
            count(*) FILTER (WHERE state = 'running') AS running,
            count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
            count(*) FILTER (WHERE state = 'failed') AS failed,
            count(*) FILTER (WHERE state = 'cancelled') AS cancelled,
            count(*) FILTER (WHERE state = 'skipped') AS skipped,
            count(*) FILTER (WHERE broken) AS broken
        FROM batch_servers GROUP BY batch_id
    ) c
    WHERE c.batch_id = b.id
    """
)

# The per-wave counts every transition keeps (the tick's wave gate and GET batch read them).
INSERT_WAVE_COUNTS = text(
    """
    INSERT INTO batch_wave_counts (batch_id, wave, state, n)
    SELECT batch_id, wave, state, count(*) FROM batch_servers GROUP BY batch_id, wave, state
    """
)

# The per-code counts of settled servers every transition keeps (GET batch's failure_codes).
INSERT_CODE_COUNTS = text(
    """
    INSERT INTO batch_code_counts (batch_id, state, code, n, message)
    SELECT batch_id, state, error_code, count(*), min(error_message) FROM batch_servers
    WHERE state IN ('failed', 'skipped', 'cancelled') AND error_code IS NOT NULL
    GROUP BY batch_id, state, error_code
    """
)

# History in the order it was written (by time), so one server's rows lie on different pages,
# as they do in a database that recorded them live.
INSERT_HISTORY = text(
    """
    INSERT INTO server_history (
        batch_server_id, batch_id, server_id, from_state, to_state, at, reason, attempt,
        job_id, details
    )
    SELECT bs.id, bs.batch_id, bs.server_id, l.from_state, l.to_state,
        CASE l.step
            WHEN 1 THEN bs.created_at
            WHEN 2 THEN t.claimed
            WHEN 3 THEN t.claimed + interval '0.2 s'
            WHEN 4 THEN t.claimed + interval '0.6 s'
            ELSE bs.finished_at
        END AS at,
        l.reason,
        CASE WHEN l.step >= 3 THEN 1 ELSE 0 END,
        CASE WHEN l.step >= 4 THEN bs.job_id END,
        CAST('{}' AS json)
    FROM batch_servers bs
    JOIN seed_lifecycle l ON l.final_state = bs.state
    CROSS JOIN LATERAL (
        SELECT coalesce(bs.submitted_at - interval '0.6 s', bs.next_attempt_at,
                        bs.finished_at, bs.created_at) AS claimed
    ) t
    ORDER BY at, bs.id, l.step
    """
)

INSERT_EVENTS = text(
    """
    INSERT INTO batch_events (batch_id, at, from_state, to_state, reason, actor, details)
    SELECT id, created_at, NULL, 'pending', 'accepted', 'api', CAST('{}' AS json) FROM batches
    UNION ALL
    SELECT id, created_at + interval '1 s', 'pending', 'running', 'started', 'scheduler',
        CAST('{}' AS json) FROM batches
    UNION ALL
    SELECT id, finished_at, 'running', state, 'all_settled', 'scheduler', CAST('{}' AS json)
    FROM batches WHERE finished_at IS NOT NULL
    """
)


def seed_fleet(
    engine: Engine, shape: FleetShape, *, now: datetime | None = None, vacuum: bool = True
) -> SeedSummary:
    """Write the fleet into an empty, migrated database, then ANALYZE (and VACUUM, which sets
    the visibility map as autovacuum would have on a live database, for index-only scans)."""
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    plans, fleet = _plans(shape, now)
    with engine.begin() as connection:
        existing = connection.execute(text("SELECT count(*) FROM batches")).scalar_one()
        if existing:
            raise RuntimeError(f"the database already holds {existing} batches; seed an empty one")
        _bulk_load_settings(connection)
        connection.execute(INSERT_BATCH, [_batch_row(plan, now) for plan in plans])
        _load_plans(connection, plans)
        connection.execute(INSERT_SERVERS, {"now": now, "fleet": fleet})
        connection.execute(UPDATE_COUNTS)
        connection.execute(INSERT_WAVE_COUNTS)
        connection.execute(INSERT_CODE_COUNTS)
        connection.execute(INSERT_HISTORY)
        connection.execute(INSERT_EVENTS)
    maintenance = "VACUUM (ANALYZE)" if vacuum else "ANALYZE"
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        for table in (
            "batches",
            "batch_servers",
            "batch_wave_counts",
            "server_history",
            "batch_events",
        ):
            connection.execute(text(f"{maintenance} {table}"))
        counts = {
            table: connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ("batches", "batch_servers", "server_history")
        }
    return SeedSummary(
        big_batch_id=plans[-1].batch_id,
        batches=counts["batches"],
        batch_servers=counts["batch_servers"],
        server_history=counts["server_history"],
        seconds=time.perf_counter() - started,
    )


def _bulk_load_settings(connection: Connection) -> None:
    """For this transaction only, as PostgreSQL's "Populating a Database" advises."""
    # JIT-compiling these one-off statements costs more than it saves; sorts stay in memory.
    connection.execute(text("SET LOCAL jit = off"))
    connection.execute(text("SET LOCAL work_mem = '256MB'"))
    # Skip the per-row foreign-key triggers, as pg_restore --disable-triggers does: every row
    # written here references one written before it in the same transaction, by construction.
    # Only a superuser may; anyone else simply loads a little slower.
    if connection.execute(text("SHOW is_superuser")).scalar_one() == "on":
        connection.execute(text("SET LOCAL session_replication_role = replica"))


def _load_plans(connection: Connection, plans: list[_Plan]) -> None:
    """The per-batch parameters and the lifecycle steps, as temporary tables to join."""
    connection.execute(
        text(
            """
            CREATE TEMPORARY TABLE seed_plan (
                batch_id text, size int, fleet_start int, created_at timestamptz,
                settled int, running int, submitting int, tail text,
                claim_pace_s float8, wave_starts int[]
            ) ON COMMIT DROP
            """
        )
    )
    connection.execute(
        text(
            "INSERT INTO seed_plan VALUES (:batch_id, :size, :fleet_start, :created_at,"
            " :settled, :running, :submitting, :tail, :claim_pace_s, :wave_starts)"
        ),
        [
            {
                "batch_id": plan.batch_id,
                "size": plan.size,
                "fleet_start": plan.fleet_start,
                "created_at": plan.created_at,
                "settled": plan.settled,
                "running": plan.running,
                "submitting": plan.submitting,
                "tail": plan.tail,
                "claim_pace_s": plan.claim_pace_s,
                # width_bucket(position, starts) is then the wave number, from 1
                "wave_starts": [sum(plan.waves[:i]) for i in range(len(plan.waves))],
            }
            for plan in plans
        ],
    )
    connection.execute(
        text(
            "CREATE TEMPORARY TABLE seed_lifecycle (final_state text, step int,"
            " from_state text, to_state text, reason text) ON COMMIT DROP"
        )
    )
    connection.execute(
        text("INSERT INTO seed_lifecycle VALUES (:final, :step, :from_, :to, :reason)"),
        [
            {"final": final, "step": step, "from_": from_, "to": to, "reason": reason}
            for final, steps in LIFECYCLE.items()
            for step, (from_, to, reason) in enumerate(steps, start=1)
        ],
    )
