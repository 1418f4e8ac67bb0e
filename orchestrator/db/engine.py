"""Engine and session factory for SQLite (one machine) and PostgreSQL (psycopg 3)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker


def normalise_url(url: str) -> str:
    """Let `postgresql://` mean psycopg 3, the driver we ship."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.removeprefix("postgres://")
    return url


def make_engine(
    url: str, *, pool_size: int = 5, autocommit: bool = False, max_overflow: int | None = None
) -> Engine:
    """`autocommit`: for reads that change nothing, every statement seeing what is committed
    when it runs, with no BEGIN or ROLLBACK round trips. Set on the engine, not per connection
    (`execution_options(isolation_level=...)`): that set and reset it at every checkout, a
    quarter of the Python of an API read of one statement. `max_overflow`: connections opened
    past `pool_size` for a burst (as many again by default)."""
    url = normalise_url(url)
    isolation = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30}, **isolation)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_engine(
        url,
        **isolation,
        pool_size=pool_size,
        max_overflow=pool_size if max_overflow is None else max_overflow,
        pool_timeout=10,
        # Sessions in UTC: timestamps come back as UTC already, with nothing to convert per
        # value on pages of thousands of them (every column here is UTC).
        connect_args={"connect_timeout": 5, "options": "-c TimeZone=UTC"},
    )
    _ping_when_idle(engine)
    return engine


# A pooled connection back from use less than this ago is handed out without a ping. A ping on
# every checkout (pool_pre_ping) was a round trip and a quarter of the CPU of an API read; a
# connection idle longer, or fresh from a database restart's aftermath, is still pinged, and a
# dead one replaced. One that dies within the second fails its next statement, as any
# statement fails while the database is away (the callers are built for that).
PING_AFTER_IDLE_S = 1.0
clock = time.monotonic  # looked up at each use: tests give it a clock they advance


def _ping_when_idle(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _fresh(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = clock()

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info["idle_since"] = clock()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is not None and clock() - since < PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool discards this connection and hands out another (a new one if need be).
            raise DisconnectionError("pooled connection failed its ping") from exc


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while a worker writes; busy_timeout makes writers queue, not fail.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def read_connection(sessions: sessionmaker[Session]) -> Connection:
    """A connection of the engine `sessions` is bound to, with no Session around it (use it as
    a context manager), for a hot read of one or two Core statements: a Session's own
    bookkeeping was a third of the Python of such a read."""
    bind = sessions.kw["bind"]
    if not isinstance(bind, Engine):
        raise TypeError("read_connection needs sessions bound to an engine")
    return bind.connect()
