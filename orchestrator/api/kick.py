"""The API asks for a tick after a request that changed something (issue 17 part 3).

A batch accepted, resumed, approved, retried or cancelled is work for the tick; without a kick
it waits for the beat's next tick (up to ORCH_TICK_SECONDS). The kick (the protocol is in
`orchestrator.services.tick_kicks`) goes out on the executor after the answer is decided, so a
broker that is slow or away never slows or fails a request: the beat's tick comes anyway.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import redis
from aiohttp import web

from orchestrator.api.keys import KICK
from orchestrator.config import Settings
from orchestrator.services.tick_kicks import KICKED_TICK_EXPIRES_S, kick_tick

log = logging.getLogger("reimage.api.kick")

_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


class TickKicker:
    """Queues `reimage.tick` through a Celery app of its own (built on first use)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._made = threading.Lock()
        self._celery: Any = None
        self._redis: redis.Redis | None = None

    def __call__(self) -> None:
        with self._made:
            if self._celery is None:
                # The workers' own app, so the message is routed as theirs are (the API
                # and the workers ship together; imported here, not at the API's start).
                from workers.app import create_celery_app

                self._celery = create_celery_app(self._settings)
                self._redis = redis.Redis.from_url(
                    self._settings.client_redis_url, socket_timeout=2, socket_connect_timeout=2
                )
        assert self._redis is not None
        celery = self._celery
        kick_tick(
            self._redis, lambda: celery.send_task("reimage.tick", expires=KICKED_TICK_EXPIRES_S)
        )

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()


@web.middleware
async def kick_on_change(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    response = await handler(request)
    kick = request.app.get(KICK)
    if kick is not None and request.method not in _SAFE and response.status < 400:
        # Not awaited: the answer does not wait for the broker.
        asyncio.get_running_loop().run_in_executor(None, kick)
    return response
