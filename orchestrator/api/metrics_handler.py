"""`GET /metrics`: the Prometheus scrape, with no token (aggregates only, no ids, no secrets)."""

from __future__ import annotations

import asyncio

import redis
from aiohttp import web

from orchestrator.api.keys import RUNTIME
from orchestrator.observability.metrics import CONTENT_TYPE, exposition


async def metrics(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]

    def read() -> str:
        if rt.metrics is not None:
            return exposition(rt.metrics.redis, rt.sessions)
        # A runtime built without Redis (some tests): a short-lived client for this scrape.
        client = redis.Redis.from_url(rt.settings.client_redis_url, socket_timeout=5)
        try:
            return exposition(client, rt.sessions)
        finally:
            client.close()

    # Database and Redis reads are blocking: off the event loop, like every service call.
    text = await asyncio.to_thread(read)
    # Content type with parameters: aiohttp's content_type= refuses a charset inside it.
    return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})
