"""Migrations go up, down and up again on SQLite and PostgreSQL, and match the models exactly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from migrations import downgrade, upgrade
from orchestrator.db.engine import normalise_url
from orchestrator.db.models import Base

TABLES = {
    "batches",
    "batch_servers",
    "batch_wave_counts",
    "batch_code_counts",
    "server_history",
    "batch_events",
    "webhook_deliveries",
    "webhook_attempts",
    "api_tokens",
    "audit_log",
    "approvals",
    "alembic_version",
}


def _tables(url: str) -> set[str]:
    engine = create_engine(normalise_url(url))
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_and_no_drift(database_url: str) -> None:
    # The fixture already upgraded to head.
    assert _tables(database_url) == TABLES
    downgrade(database_url, "base")
    assert _tables(database_url) <= {"alembic_version"}
    upgrade(database_url)
    assert _tables(database_url) == TABLES
    engine = create_engine(normalise_url(database_url))
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_one_active_batch_per_server_is_an_index(database_url: str) -> None:
    engine = create_engine(normalise_url(database_url))
    try:
        indexes = {i["name"]: i for i in inspect(engine).get_indexes("batch_servers")}
    finally:
        engine.dispose()
    active = indexes["uq_batch_servers_active_server"]
    assert active["unique"] and active["column_names"] == ["server_id"]


def test_wave_counts_of_existing_batches_are_filled_by_the_upgrade(sqlite_url: str) -> None:
    from sqlalchemy import text as sql

    downgrade(sqlite_url, "0004")
    engine = create_engine(normalise_url(sqlite_url))
    try:
        with engine.begin() as connection:
            connection.execute(
                sql(
                    "INSERT INTO batches (id, created_at, updated_at, state, project_id, region, "
                    "cloud_init, os_change, policy, total, n_pending, n_submitting, n_running, "
                    "n_succeeded, n_failed, n_cancelled, n_skipped, cancel_requested) VALUES "
                    "('b1', '2026-01-01', '2026-01-01', 'running', 'p', 'r', 0, '{}', '{}', 3, "
                    "2, 0, 0, 1, 0, 0, 0, 0)"
                )
            )
            for i, (wave, state) in enumerate([(1, "succeeded"), (2, "pending"), (2, "pending")]):
                connection.execute(
                    sql(
                        "INSERT INTO batch_servers (batch_id, server_id, position, wave, state, "
                        "attempt, outcome_unknown, retries, polls, created_at, updated_at) VALUES "
                        f"('b1', 's{i}', {i}, {wave}, '{state}', 0, 0, 0, 0, '2026-01-01', "
                        "'2026-01-01')"
                    )
                )
        upgrade(sqlite_url)
        with engine.connect() as connection:
            rows = connection.execute(
                sql("SELECT wave, state, n FROM batch_wave_counts ORDER BY wave")
            ).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == [(1, "succeeded", 1), (2, "pending", 2)]


def test_code_counts_of_existing_batches_are_filled_by_the_upgrade(database_url: str) -> None:
    from sqlalchemy import text as sql

    downgrade(database_url, "0012")
    engine = create_engine(normalise_url(database_url))
    servers = [
        ("failed", "Ecs.0202", "disk failed"),
        ("failed", "Ecs.0202", "other words"),
        ("failed", "Ecs.0111", "image gone"),
        ("skipped", "needs_stop", "running"),
        ("succeeded", None, None),
        ("pending", "Ecs.0202", "a transient error, not a failure"),
    ]
    try:
        with engine.begin() as connection:
            connection.execute(
                sql(
                    "INSERT INTO batches (id, created_at, updated_at, state, project_id, region, "
                    "cloud_init, os_change, policy, total, n_pending, n_submitting, n_running, "
                    "n_succeeded, n_failed, n_cancelled, n_skipped, cancel_requested) VALUES "
                    "('b1', '2026-01-01', '2026-01-01', 'running', 'p', 'r', false, '{}', '{}', "
                    "6, 1, 0, 0, 1, 3, 0, 1, false)"
                )
            )
            for i, (state, code, message) in enumerate(servers):
                connection.execute(
                    sql(
                        "INSERT INTO batch_servers (batch_id, server_id, position, wave, state, "
                        "attempt, outcome_unknown, retries, polls, created_at, updated_at, "
                        "error_code, error_message) VALUES "
                        f"('b1', 's{i}', {i}, 1, '{state}', 0, false, 0, 0, '2026-01-01', "
                        "'2026-01-01', :code, :message)"
                    ),
                    {"code": code, "message": message},
                )
        upgrade(database_url)
        with engine.connect() as connection:
            rows = connection.execute(
                sql("SELECT state, code, n, message FROM batch_code_counts ORDER BY n DESC, code")
            ).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == [
        ("failed", "Ecs.0202", 2, "disk failed"),
        ("failed", "Ecs.0111", 1, "image gone"),
        ("skipped", "needs_stop", 1, "running"),
    ]
