"""A microcache of the API's hot reads: the same GET (path, query and the caller's project
scope) within ORCH_API_READ_CACHE_S is answered from this process's memory instead of the
database.

Many people watching one batch (every open page polls it every 2 s, scripts poll it too) ask
the same question many times a second; the answer changes a few times a second at most.
Staleness is bounded by the setting (1 s by default, 0 turns it off); a change made through this
process (pause, resume, cancel, approve, retry...) empties the cache at once, so nobody reads
their own change back stale from the process they made it through. Project scope is checked
before the cache is asked, and is part of the key.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MAX_ENTRIES = 2_000


@dataclass
class ReadCache:
    ttl_s: float
    clock: Callable[[], float] = time.monotonic
    _entries: dict[tuple[Any, ...], tuple[float, bytes]] = field(default_factory=dict)

    async def answer(self, key: tuple[Any, ...], compute: Callable[[], Awaitable[bytes]]) -> bytes:
        """The cached body for `key` while fresh, else `compute()`'s (then kept)."""
        if self.ttl_s <= 0:
            return await compute()
        now = self.clock()
        hit = self._entries.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        body = await compute()
        if len(self._entries) >= MAX_ENTRIES:
            self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
        self._entries[key] = (now + self.ttl_s, body)
        return body

    def forget_all(self) -> None:
        """Something changed through this process: no answer from before it is served again."""
        self._entries.clear()


READ_CACHE = web.AppKey("read_cache", ReadCache)
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


@web.middleware
async def forget_on_change(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    finally:
        if request.method not in _SAFE:
            request.app[READ_CACHE].forget_all()
