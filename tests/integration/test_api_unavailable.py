"""The API when its database or Redis is unreachable: 503 quickly, never a 500 or a hang."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from orchestrator.api.app import create_app
from orchestrator.config import load_settings

TOKEN = "unavailable-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_dead_database_and_redis_answer_503(aiohttp_client: Callable[..., Any]) -> None:
    settings = load_settings(
        database_url="postgresql+psycopg://postgres@127.0.0.1:1/nowhere",
        redis_url="redis://127.0.0.1:1/0",
        api_token=TOKEN,
    )
    client = await aiohttp_client(create_app(settings))
    started = time.monotonic()
    ready = await client.get("/readyz")
    assert ready.status == 503
    checks = (await ready.json())["checks"]
    assert checks["database"].startswith("unreachable") and checks["redis"].startswith(
        "unreachable"
    )
    for method, path in [
        ("GET", "/api/v1/batches"),
        ("GET", f"/api/v1/batches/{uuid.uuid4()}"),
        ("GET", f"/api/v1/servers/{uuid.uuid4()}/history"),
    ]:
        response = await client.request(method, path, headers=AUTH)
        assert response.status == 503, path
        assert (await response.json())["error"]["code"] == "unavailable"
    assert time.monotonic() - started < 30
    assert (await client.get("/healthz")).status == 200  # alive, just not ready
