"""The API's way of queueing a tick (issue 17 part 3): `reimage.tick` sent through the workers'
own Celery app, so it is routed as theirs are, with the kick protocol of
`orchestrator.services.tick_kicks` (one tick queued at a time). The API process gets it from the
command that starts it (`reimage api`), so the API package itself knows nothing of Celery."""

from __future__ import annotations

import threading

import redis
from celery import Celery

from orchestrator.config import Settings
from orchestrator.services.tick_kicks import KICKED_TICK_EXPIRES_S, kick_tick
from workers.app import create_celery_app


class TickKicker:
    """Callable: queue a tick now. Built in the API process (after any fork), lazily."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._made = threading.Lock()
        self._celery: Celery | None = None
        self._redis: redis.Redis | None = None

    def __call__(self) -> None:
        with self._made:
            if self._celery is None or self._redis is None:
                self._celery = create_celery_app(self._settings)
                self._redis = redis.Redis.from_url(
                    self._settings.client_redis_url, socket_timeout=2, socket_connect_timeout=2
                )
        celery = self._celery

        def send(countdown_s: float) -> None:
            celery.send_task("reimage.tick", countdown=countdown_s, expires=KICKED_TICK_EXPIRES_S)

        # An operator's change (a new batch, a resume, a retry...) is acted on at once.
        kick_tick(self._redis, send, at_once=True)
