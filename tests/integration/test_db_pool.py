"""The PostgreSQL pool hands out a connection used within the last second as it is, and pings
one idle for longer, replacing it when the database dropped it (as after a restart)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from orchestrator.db import engine as engine_module
from orchestrator.db.engine import make_engine
from tests.support.clocks import ManualClock

BACKEND = text("SELECT pg_backend_pid()")


def _terminate(postgres_url: str, pid: int) -> None:
    admin = make_engine(postgres_url)
    with admin.connect() as connection:
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    admin.dispose()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> ManualClock:
    frozen = ManualClock()
    monkeypatch.setattr(engine_module, "clock", frozen)
    return frozen


def test_a_connection_the_database_dropped_is_replaced_once_idle(
    postgres_url: str, clock: ManualClock
) -> None:
    engine = make_engine(postgres_url, pool_size=1)
    with engine.connect() as connection:
        first = connection.execute(BACKEND).scalar()
    assert first is not None
    _terminate(postgres_url, first)
    clock.now += engine_module.PING_AFTER_IDLE_S
    with engine.connect() as connection:
        second = connection.execute(BACKEND).scalar()
        assert connection.execute(text("SHOW TimeZone")).scalar() == "UTC"
    assert second is not None and second != first
    engine.dispose()


def test_a_connection_just_used_is_handed_out_without_a_ping(
    postgres_url: str, clock: ManualClock
) -> None:
    """Within PING_AFTER_IDLE_S no ping goes out: a connection dropped meanwhile fails its
    next statement (the caller's error to handle, as while the database is away), and the one
    after that gets a fresh connection."""
    engine = make_engine(postgres_url, pool_size=1)
    with engine.connect() as connection:
        first = connection.execute(BACKEND).scalar()
    assert first is not None
    _terminate(postgres_url, first)
    with pytest.raises(DBAPIError), engine.connect() as connection:
        connection.execute(BACKEND)
    with engine.connect() as connection:
        assert connection.execute(BACKEND).scalar() not in (None, first)
    engine.dispose()
