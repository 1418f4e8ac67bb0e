"""The aiohttp application: factory, resources opened and closed with the app, route table."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import redis.asyncio as aioredis
from aiohttp import web

from orchestrator.api.auth import audit_middleware, auth_middleware
from orchestrator.api.docs import render_docs_page
from orchestrator.api.errors import error_middleware
from orchestrator.api.keys import (
    DOCS_PAGE,
    KICK,
    OPENAPI,
    READ_EXECUTOR,
    REDIS,
    RUNTIME,
    SEEN_FAILURES,
)
from orchestrator.api.kick import Kick, kick_on_change
from orchestrator.api.openapi import openapi_document
from orchestrator.api.read_cache import READ_CACHE, ReadCache, forget_on_change
from orchestrator.api.routes import ROUTES, route_defs
from orchestrator.config import Settings
from orchestrator.db.webhook_outbox import configure_global_url
from orchestrator.runtime import Runtime
from orchestrator.web import add_web_routes

# The hot GETs (a batch, a servers page, a history page, the batch list) run on READ_THREADS
# of their own, everything else (submissions, changes, exports, token lookups, audit rows) on
# SERVICE_THREADS. Reads are short and mostly CPU here, and more threads than that only fight
# the event loop for the GIL: on the 1M-row load benchmark (2026-12-06, reads without a Session
# on an autocommit engine) 1 thread answered 2,815 requests/s, 2 3,137, 3 3,232-3,311, 4
# 3,652-3,860, 6 3,591, 8 3,508 (in 2026-12-04, when a read cost twice the Python, 3 was best
# and 16 gave half as much). The others wait on slower work (a large submission pre-flights its
# fleet), which must not hold up a read. Each thread has a pooled connection kept open: with
# fewer kept than threads, every burst opened connections and closed them again on return (a
# PostgreSQL connect per request, seen in profiles).
READ_THREADS = 4
SERVICE_THREADS = 8


def create_app(
    settings: Settings, runtime: Runtime | None = None, *, kick: Kick | None = None
) -> web.Application:
    """`kick`: asks for a tick after each request that changed something (the served API
    has one; an app built without one leaves the ticks to the beat)."""
    app = web.Application(
        middlewares=[
            audit_middleware,
            kick_on_change,
            forget_on_change,
            error_middleware,
            auth_middleware,
        ],
        client_max_size=settings.max_body_bytes,
    )

    async def resources(app: web.Application) -> AsyncIterator[None]:
        rt = runtime or Runtime.build(settings, db_pool_size=READ_THREADS + SERVICE_THREADS)
        configure_global_url(rt.sessions, settings.notify_url)  # batches it changes notify it
        app[RUNTIME] = rt
        app[REDIS] = aioredis.Redis.from_url(
            settings.client_redis_url, socket_timeout=2, socket_connect_timeout=2
        )
        # Services are synchronous SQLAlchemy; they run on this pool, not on the event loop.
        executor = ThreadPoolExecutor(max_workers=SERVICE_THREADS, thread_name_prefix="reimage-api")
        asyncio.get_running_loop().set_default_executor(executor)
        app[READ_EXECUTOR] = ThreadPoolExecutor(
            max_workers=READ_THREADS, thread_name_prefix="reimage-api-read"
        )
        yield
        app[READ_EXECUTOR].shutdown(wait=False)
        await app[REDIS].aclose()
        if runtime is None:
            rt.dispose()
        executor.shutdown(wait=False)

    if kick is not None:
        app[KICK] = kick
    app[SEEN_FAILURES] = {}
    app[READ_CACHE] = ReadCache(settings.api_read_cache_s)
    app[OPENAPI] = openapi_document(ROUTES)
    app[DOCS_PAGE] = render_docs_page(app[OPENAPI])
    app.cleanup_ctx.append(resources)
    app.router.add_routes(
        [
            *route_defs(),
        ]
    )
    add_web_routes(app)
    return app
