"""Migrations go up, down and up again on SQLite and PostgreSQL, and match the models exactly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from orchestrator.db.engine import normalise_url
from orchestrator.db.migrate import downgrade, upgrade
from orchestrator.db.models import Base

TABLES = {"batches", "batch_servers", "server_history", "batch_events", "alembic_version"}


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
