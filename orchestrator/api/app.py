"""The aiohttp application: factory, resources opened and closed with the app, route table."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import redis.asyncio as aioredis
from aiohttp import web

from orchestrator.api import handlers
from orchestrator.api.errors import Handler, error_middleware, json_error
from orchestrator.api.keys import REDIS, RUNTIME
from orchestrator.config import Settings
from orchestrator.runtime import Runtime

MAX_BODY_BYTES = 64 * 1024 * 1024


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/api/"):
        expected = request.app[RUNTIME].settings.api_token
        given = request.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        if (
            expected is None
            or scheme.lower() != "bearer"
            or not hmac.compare_digest(token.strip().encode(), expected.get_secret_value().encode())
        ):
            response = json_error(401, "unauthorized", "a valid bearer token is required")
            response.headers["WWW-Authenticate"] = 'Bearer realm="reimage"'
            return response
    return await handler(request)


def create_app(settings: Settings, runtime: Runtime | None = None) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware, auth_middleware], client_max_size=MAX_BODY_BYTES
    )

    async def resources(app: web.Application) -> AsyncIterator[None]:
        rt = runtime or Runtime.build(settings)
        app[RUNTIME] = rt
        app[REDIS] = aioredis.Redis.from_url(
            settings.client_redis_url, socket_timeout=2, socket_connect_timeout=2
        )
        # Services are synchronous SQLAlchemy; they run on this pool, not on the event loop.
        executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="reimage-api")
        asyncio.get_running_loop().set_default_executor(executor)
        yield
        await app[REDIS].aclose()
        if runtime is None:
            rt.dispose()
        executor.shutdown(wait=False)

    app.cleanup_ctx.append(resources)
    app.router.add_routes(
        [
            web.get("/healthz", handlers.healthz),
            web.get("/readyz", handlers.readyz),
            web.post("/api/v1/batches", handlers.create_batch),
            web.get("/api/v1/batches", handlers.list_batches),
            web.get("/api/v1/batches/{batch_id}", handlers.get_batch),
            web.get("/api/v1/batches/{batch_id}/servers", handlers.list_batch_servers),
            web.post("/api/v1/batches/{batch_id}/pause", handlers.pause_batch),
            web.post("/api/v1/batches/{batch_id}/resume", handlers.resume_batch),
            web.post("/api/v1/batches/{batch_id}/cancel", handlers.cancel_batch),
            web.post("/api/v1/batches/{batch_id}/retry", handlers.retry_batch),
            web.get("/api/v1/servers/{server_id}/history", handlers.server_history),
        ]
    )
    return app
