"""Readiness: whether this process can reach what it needs (the database and Redis) right now,
each within a few seconds, and if not, which one and how it failed."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from sqlalchemy import text

from orchestrator.runtime import Runtime

CHECK_TIMEOUT_S = 3.0


async def readiness(rt: Runtime, redis: aioredis.Redis) -> dict[str, str]:
    """`{"database": "ok" | "unreachable: <kind>", "redis": ...}`; never raises, never hangs."""

    def ping_database() -> None:
        with rt.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(asyncio.to_thread(ping_database), CHECK_TIMEOUT_S)
        checks["database"] = "ok"
    except Exception as exc:  # any failure means not ready; say which kind
        checks["database"] = f"unreachable: {type(exc).__name__}"
    try:
        await asyncio.wait_for(redis.ping(), CHECK_TIMEOUT_S)
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"unreachable: {type(exc).__name__}"
    return checks
