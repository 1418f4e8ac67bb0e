"""State columns are enums in the database too: no path, not even raw SQL, stores a state that
is not one of its enum's values (a CHECK on PostgreSQL, triggers on SQLite, migration 0009).
And nothing outside `orchestrator/db/` writes a state table's row at all."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 1, tzinfo=UTC).isoformat()


def _batch_sql(state: str) -> str:
    return (
        "INSERT INTO batches (id, created_at, updated_at, state, project_id, region, cloud_init,"
        " os_change, policy, total, n_pending, n_submitting, n_running, n_succeeded, n_failed,"
        " n_cancelled, n_skipped, cancel_requested)"
        f" VALUES ('b-{state}', '{NOW}', '{NOW}', '{state}', 'p', 'r', false, '{{}}', '{{}}',"
        " 0, 0, 0, 0, 0, 0, 0, 0, false)"
    )


def test_a_state_outside_the_enum_is_refused_by_the_database(database_url: str) -> None:
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as connection:
        connection.execute(text(_batch_sql("running")))
        connection.execute(text(_batch_sql("paused")))
    for statement in (
        _batch_sql("aborting"),  # not a batch state
        "UPDATE batches SET state = 'cancelling' WHERE id = 'b-running'",
        "INSERT INTO batch_events (batch_id, at, from_state, to_state, reason, actor, details)"
        f" VALUES ('b-running', '{NOW}', NULL, 'submitting', 'x', 'y', '{{}}')",
    ):
        with pytest.raises(DBAPIError, match=r"(?i)check"), engine.begin() as connection:
            connection.execute(text(statement))
    with engine.begin() as connection:  # a NULL from_state and a real state are fine
        connection.execute(
            text(
                "INSERT INTO batch_events (batch_id, at, from_state, to_state, reason, actor,"
                f" details) VALUES ('b-running', '{NOW}', NULL, 'paused', 'x', 'y', '{{}}')"
            )
        )
        assert connection.scalar(text("SELECT state FROM batches WHERE id = 'b-paused'")) == (
            "paused"
        )
    engine.dispose()


STATE_TABLES = re.compile(r"update\((BatchServer|Batch|WebhookDelivery)\)")


def test_only_the_db_package_writes_rows_of_the_state_tables() -> None:
    writers = sorted(
        f"{path.relative_to(REPO)}: {match.group(0)}"
        for path in (REPO / "orchestrator").rglob("*.py")
        if "db" not in path.relative_to(REPO / "orchestrator").parts[:1]
        for match in STATE_TABLES.finditer(path.read_text())
    )
    writers += sorted(
        f"{path.relative_to(REPO)}: {match.group(0)}"
        for path in (REPO / "workers").rglob("*.py")
        for match in STATE_TABLES.finditer(path.read_text())
    )
    assert not writers, writers
    # The pattern does find them where they belong.
    assert STATE_TABLES.search((REPO / "orchestrator/db/transitions.py").read_text())
