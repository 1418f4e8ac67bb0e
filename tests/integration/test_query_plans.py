"""The hot queries read large tables through indexes, on a realistically large PostgreSQL.

A fleet is seeded with generate_series (benchmarks/fleet_data.py: a 100,000-server batch in
flight, finished, paused and cancelled batches, ~360,000 history rows), then the real services
run: the API's reads and one scheduler tick. Every statement they send is recorded and
EXPLAINed with its own parameters, so the plans checked are those of the SQL the code runs
today, not of a copy. A plan fails when it reads batch_servers or server_history whole: a Seq
Scan, or an index scan without an Index Cond, which walks the whole index hoping to meet the
rows it filters for (the planner's bet on a LIMIT; it loses when those rows come last).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from benchmarks.fleet_data import FleetShape, seed_fleet
from orchestrator.db.engine import make_session_factory, normalise_url
from orchestrator.services import batches
from orchestrator.services.dispatch import run_tick

pytestmark = pytest.mark.integration

LARGE_TABLES = frozenset({"batch_servers", "server_history"})
# Large enough that a scan of a table costs far more than an index probe, small enough to seed
# in a few seconds: 150,000 servers, ~350,000 history rows.
SHAPE = FleetShape(
    big_batch=100_000,
    big_settled=0.15,
    finished_batches=1,
    finished_size=25_000,
    paused_size=15_000,
    cancelled_size=10_000,
)
# The scheduler tick's hot queries, told apart by fragments of their SQL (lower case).
TICK_QUERIES = {
    "tick: due submits": ("select", "call_started_at is null", "dispatched_at"),
    "tick: due polls": ("select", "order by batch_servers.next_poll_at"),
    "tick: claims by wave": ("select", "order by batch_servers.position"),
    "tick: unsettled servers of the wave": ("exists (select", "batch_wave_counts.wave ="),
    "tick: learning job durations": ("job_seconds is not null", "order by batch_servers.id desc"),
}
# What would fix a full read, per query; anything else gets the general advice.
FIXES = {
    "servers page": (
        "the planner walks pk_batch_servers in id order filtering on batch_id, betting the "
        "batch's rows come early; for the newest batch they come last. Fix in "
        "orchestrator/services/batches.py list_batch_servers: select the page's ids first from "
        "an index holding every column the conditions name ((batch_id, id), (batch_id, state, "
        "id) or (batch_id, error_code, id): an index-only scan), then the rows of those ids"
    ),
    "tick: learning job durations": (
        "orchestrator/services/dispatch.py _learn_job_duration walks pk_batch_servers backwards "
        "past every pending server of the batch. Fix: a migration adding CREATE INDEX "
        "ix_batch_servers_batch_id_id_settled ON batch_servers (batch_id, id) INCLUDE "
        "(job_seconds) WHERE job_seconds IS NOT NULL AND state IN ('succeeded', 'failed') (an "
        "index-only scan of 200 entries; without INCLUDE the planner still prefers the pk)"
    ),
}
GENERAL_FIX = (
    "add an index whose leading columns are the query's equality conditions, then its range "
    "or ORDER BY column (a migration in migrations/versions/ and the model's __table_args__)"
)


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of an EXPLAIN (FORMAT JSON) plan tree, depth first (InitPlans and SubPlans
    are children under "Plans" too)."""
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


def full_reads(plan: dict[str, Any], tables: frozenset[str] = LARGE_TABLES) -> list[str]:
    """The nodes of `plan` that read one of `tables` whole, described for a failure message."""
    found = []
    for node in plan_nodes(plan):
        table = node.get("Relation Name")
        if table not in tables:
            continue
        kind = node["Node Type"]
        if kind == "Seq Scan":
            found.append(f"Seq Scan on {table}")
        elif kind in ("Index Scan", "Index Only Scan") and "Index Cond" not in node:
            found.append(
                f"{kind} using {node['Index Name']} on {table} with no Index Cond "
                f"(reads the whole index; filter: {node.get('Filter', 'none')})"
            )
    return found


@dataclass(frozen=True)
class Statement:
    label: str
    sql: str
    parameters: dict[str, Any]

    @property
    def text(self) -> str:
        return " ".join(self.sql.split()).lower()


class Recorder:
    """The statements an engine sends while a labelled block runs (not bulk executemany
    inserts: they scan nothing)."""

    def __init__(self, engine: Engine) -> None:
        self.statements: list[Statement] = []
        self._label = ""
        event.listen(engine, "before_cursor_execute", self._record)

    def _record(
        self, _conn: Any, _cursor: Any, sql: str, parameters: Any, _context: Any, many: bool
    ) -> None:
        if self._label and not many:
            self.statements.append(Statement(self._label, sql, dict(parameters or {})))

    def run(self, label: str, call: Callable[[], Any]) -> Any:
        self._label = label
        try:
            return call()
        finally:
            self._label = ""


class Dispatched:
    """A dispatcher that keeps the ids instead of sending Celery tasks."""

    def __init__(self) -> None:
        self.submits: list[int] = []
        self.polls: list[int] = []

    def submit(self, batch_server_ids: list[int]) -> None:
        self.submits += batch_server_ids

    def poll(self, batch_server_ids: list[int]) -> None:
        self.polls += batch_server_ids

    def probe(self, batch_server_ids: list[int]) -> None:
        self.polls += batch_server_ids

    def sweep(self, project_id: str, region: str) -> None:
        pass


def _api_reads(sessions: sessionmaker[Session], recorder: Recorder, engine: Engine) -> None:
    """The API's reads, each as its service runs it (first pages, then pages by cursor)."""
    with engine.connect() as connection:
        big = connection.execute(
            text("SELECT id FROM batches ORDER BY total DESC LIMIT 1")
        ).scalar_one()
        server_id = connection.execute(
            text("SELECT server_id FROM server_history ORDER BY id LIMIT 1")
        ).scalar_one()
        active = list(
            connection.execute(
                text(
                    "SELECT server_id FROM batch_servers WHERE batch_id = :b ORDER BY id LIMIT 1000"
                ),
                {"b": big},
            ).scalars()
        )
    recorder.run("batch with counts per wave", partial(batches.get_batch, sessions, big))
    for state, code in ((None, None), ("failed", None), ("pending", None), (None, "EcsJobFailed")):
        label = (
            "servers page"
            + (f" state={state}" if state else "")
            + (f" code={code}" if code else "")
        )
        page = partial(batches.list_batch_servers, sessions, big, state=state, code=code, limit=100)
        first = recorder.run(label, partial(page, cursor=None))
        assert first["next_cursor"], f"{label}: the seeded batch should have a second page"
        recorder.run(f"{label} with cursor", partial(page, cursor=first["next_cursor"]))
    history = partial(batches.server_history, sessions, server_id, limit=2)
    first = recorder.run("server history", partial(history, cursor=None))
    assert first["next_cursor"], "the seeded server should have more than two history rows"
    recorder.run("server history with cursor", partial(history, cursor=first["next_cursor"]))
    with sessions() as session:
        recorder.run("active conflict check", partial(batches.active_conflicts, session, active))


def _tick(sessions: sessionmaker[Session], recorder: Recorder) -> Dispatched:
    """One scheduler tick; its statements are labelled by which hot query they are."""
    dispatched = Dispatched()
    recorder.run(
        "tick",
        lambda: run_tick(
            sessions, dispatched, now=datetime.now(UTC), lease_s=120, call_timeout_s=30
        ),
    )
    return dispatched


def _label_tick_statements(statements: list[Statement]) -> list[Statement]:
    labelled = []
    for statement in statements:
        label = statement.label
        if label == "tick":
            label = next(
                (
                    name
                    for name, fragments in TICK_QUERIES.items()
                    if all(fragment in statement.text for fragment in fragments)
                ),
                "tick: other statement",
            )
        labelled.append(Statement(label, statement.sql, statement.parameters))
    return labelled


def _explain(engine: Engine, statement: Statement) -> dict[str, Any]:
    with engine.connect() as connection:
        result = connection.exec_driver_sql(
            "EXPLAIN (FORMAT JSON) " + statement.sql, statement.parameters
        ).scalar_one()
    plan: dict[str, Any] = result[0]["Plan"]
    return plan


def _fix_for(label: str) -> str:
    return next((fix for prefix, fix in FIXES.items() if label.startswith(prefix)), GENERAL_FIX)


def test_hot_queries_never_read_a_large_table_whole(postgres_url: str) -> None:
    engine = create_engine(normalise_url(postgres_url))
    try:
        # VACUUM too, as autovacuum would have: the plans of a live database, and no race
        # with an autovacuum that would change them halfway through the test.
        seed_fleet(engine, SHAPE, vacuum=True)
        sessions = make_session_factory(engine)
        recorder = Recorder(engine)
        _api_reads(sessions, recorder, engine)
        dispatched = _tick(sessions, recorder)
        # The seeded fleet has work of every kind due, so every tick query above really ran.
        assert dispatched.submits and dispatched.polls
        statements = _label_tick_statements(recorder.statements)
        failures = []
        for statement in statements:
            if not statement.text.startswith(("select", "update", "delete", "insert", "with")):
                continue
            for read in full_reads(_explain(engine, statement)):
                failures.append(
                    f"- {statement.label}: {read}\n    SQL: {' '.join(statement.sql.split())}"
                    f"\n    fix: {_fix_for(statement.label)}"
                )
        missing = sorted(set(TICK_QUERIES) - {s.label for s in statements})
    finally:
        engine.dispose()
    assert not missing, (
        f"the tick no longer runs a statement matching {missing}: update TICK_QUERIES so that "
        "every hot query of the tick stays checked"
    )
    assert not failures, "hot queries read a large table whole:\n" + "\n".join(failures)


def test_full_reads_finds_nested_scans_only_on_large_tables() -> None:
    plan = {
        "Node Type": "Limit",
        "Plans": [
            {
                "Node Type": "Index Scan",
                "Index Name": "pk_batch_servers",
                "Relation Name": "batch_servers",
                "Filter": "(batch_id = 'b')",
                "Plans": [{"Node Type": "Seq Scan", "Relation Name": "batches"}],
            },
            {
                "Node Type": "Sort",
                "Plans": [{"Node Type": "Seq Scan", "Relation Name": "server_history"}],
            },
            {
                "Node Type": "Index Only Scan",
                "Index Name": "ix_batch_servers_batch_id_id",
                "Relation Name": "batch_servers",
                "Index Cond": "(batch_id = 'b')",
            },
        ],
    }
    found = full_reads(plan)
    assert len(found) == 2
    assert found[0].startswith("Index Scan using pk_batch_servers on batch_servers with no")
    assert found[1] == "Seq Scan on server_history"
