"""What the fleet looked like at the last list sweep: server facts kept in Redis per cloud
project and region, so that skip-matching and post-job checks of a large batch cost one list
call per 1000 servers instead of one server-details call per server.

Facts carry the time they were observed. A reader states how fresh they must be (observed
after a job ended, or at most so many seconds ago) and falls back to the server-details API
when no sweep is fresh enough: a stale fact never decides anything.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import orjson
import redis

from orchestrator.cloud.models import Server

PAGE = 1000
# A sweep pays for itself when at least this many servers need facts per page it costs.
SERVERS_PER_PAGE_WORTH_IT = 5
# Finished jobs' server checks get a fresh sweep at most this often per page a sweep costs
# (1 s for a project of up to 1,000 servers, 2 s for 2,000...): a quick check for small
# projects, and a big one's sweeps no larger a share of its calls.
SWEEP_INTERVAL_S = 1.0
_SERVER_FIELDS = tuple(f.name for f in dataclasses.fields(Server))


def _as_json(server: Server) -> bytes:
    """The server's fields as JSON (flat: `dataclasses.asdict` deep-copies every value, and
    was most of a sweep's cost; orjson, for the same reason)."""
    fields: dict[str, Any] = {name: getattr(server, name) for name in _SERVER_FIELDS}
    return orjson.dumps(fields)


class FactsCache:
    def __init__(
        self,
        client: redis.Redis,
        prefix: str = "reimage:facts",
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`clock`: Unix seconds; every process shares these facts, so it is wall time."""
        self._redis = client
        self._prefix = prefix
        self._clock = clock

    def _keys(self, project_id: str, region: str) -> tuple[str, str, str]:
        base = f"{self._prefix}:{project_id}:{region}"
        return f"{base}:servers", f"{base}:meta", f"{base}:want"

    def lookup(
        self, project_id: str, region: str, server_id: str, *, observed_after: float
    ) -> Server | None:
        """The server as last swept, if that sweep started after `observed_after` (epoch s)."""
        servers, meta, _ = self._keys(project_id, region)
        try:
            pipe = self._redis.pipeline(transaction=False)  # one round trip for both
            pipe.hget(meta, "swept_at")
            pipe.hget(servers, server_id)
            swept_at, raw = pipe.execute()
        except redis.RedisError:
            return None
        if swept_at is None or float(swept_at) < observed_after or raw is None:
            return None
        fields = orjson.loads(raw)
        fields["tags"] = tuple(fields.get("tags", ()))
        return Server(**fields)

    def previous_sweep_at(self, project_id: str, region: str) -> float | None:
        """When the sweep before the last stored one began (None: no such sweep, or Redis
        cannot say)."""
        _, meta, _ = self._keys(project_id, region)
        try:
            value = self._redis.hget(meta, "previous_swept_at")
        except redis.RedisError:
            return None
        return float(value) if value is not None else None

    def swept_at(self, project_id: str, region: str) -> float | None:
        _, meta, _ = self._keys(project_id, region)
        value = self._redis.hget(meta, "swept_at")
        return float(value) if value is not None else None

    def want(self, project_id: str, region: str) -> None:
        """Someone waits for facts newer than the last sweep."""
        _, _, want = self._keys(project_id, region)
        self._redis.set(want, self._clock(), ex=300)

    def worth_sweeping(
        self,
        project_id: str,
        region: str,
        *,
        servers_needing_facts: int,
        min_interval_s: float,
        interval_per_page: bool = False,
    ) -> bool:
        """A sweep is due when it is wanted or needed, not too recent (`interval_per_page`: the
        interval grows with the pages a sweep costs), and cheaper than asking about each server
        in turn (the project's size comes from the last sweep)."""
        _, meta, want = self._keys(project_id, region)
        try:
            left, pages = self._interval_left(meta, min_interval_s, per_page=interval_per_page)
            wanted = self._redis.exists(want)
        except redis.RedisError:
            return False
        if left > 0:
            return False
        if self._redis.exists(f"{meta}:failed") or self._redis.exists(f"{meta}:lock"):
            return False
        return bool(wanted) or servers_needing_facts >= pages * SERVERS_PER_PAGE_WORTH_IT

    def _interval_left(
        self, meta: str, min_interval_s: float, *, per_page: bool
    ) -> tuple[float, int]:
        """(seconds before the interval since the last sweep began or was asked for is over,
        the pages a sweep costs); `per_page`: the interval grows with those pages."""
        started_at, requested_at, size = self._redis.hmget(
            meta, ["started_at", "requested_at", "count"]
        )
        pages = max(1, math.ceil(int(size or 0) / PAGE))
        latest = max(float(started_at or 0), float(requested_at or 0))
        interval = min_interval_s * (pages if per_page else 1)
        return max(0.0, interval - (self._clock() - latest)), pages

    def next_sweep_in(self, project_id: str, region: str) -> float:
        """Seconds before finished jobs may have a sweep by its interval (SWEEP_INTERVAL_S per
        page): 0 when one may start now; infinite when Redis cannot say."""
        _, meta, _ = self._keys(project_id, region)
        try:
            return self._interval_left(meta, SWEEP_INTERVAL_S, per_page=True)[0]
        except redis.RedisError:
            return math.inf

    def store(
        self, project_id: str, region: str, sweep: list[Server], *, started_at: float
    ) -> None:
        servers, meta, want = self._keys(project_id, region)
        # Kept: the servers this sweep hands on are those polled since the one before began
        # (previous_sweep_at); the others were handed on by that one already.
        previous = self._redis.hget(meta, "swept_at")
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(servers)
        for start in range(0, len(sweep), PAGE):
            mapping: dict[str | bytes, str | bytes] = {
                s.id.lower(): _as_json(s) for s in sweep[start : start + PAGE]
            }
            if mapping:
                pipe.hset(servers, mapping=mapping)  # type: ignore[arg-type]
        pipe.hset(meta, mapping={"swept_at": started_at, "count": len(sweep)})
        if previous is not None:
            pipe.hset(meta, "previous_swept_at", previous)
        pipe.expire(servers, 3600)
        pipe.expire(meta, 3600)
        pipe.delete(want)
        pipe.execute()

    def sweep_pending(self, project_id: str, region: str, *, patience_s: float) -> bool:
        """A sweep was asked for less than `patience_s` ago and has not finished yet."""
        _, meta, _ = self._keys(project_id, region)
        try:
            requested_at, swept_at = self._redis.hmget(meta, ["requested_at", "swept_at"])
        except redis.RedisError:
            return False
        if requested_at is None or float(requested_at) <= float(swept_at or 0):
            return False
        if self.sweeps_refused(project_id, region):
            return False
        return self._clock() - float(requested_at) < patience_s

    def sweeps_refused(self, project_id: str, region: str) -> bool:
        """The list API refused us lately: nobody should wait for a sweep."""
        _, meta, _ = self._keys(project_id, region)
        try:
            return bool(self._redis.exists(f"{meta}:failed"))
        except redis.RedisError:
            return True

    def requested(self, project_id: str, region: str) -> None:
        """A sweep was just asked for: do not ask again while it waits in the queue."""
        _, meta, _ = self._keys(project_id, region)
        self._redis.hset(meta, "requested_at", self._clock())
        self._redis.expire(meta, 3600)

    def begin_sweep(self, project_id: str, region: str) -> float | None:
        """Claim the right to sweep (one sweep at a time per project and region)."""
        _, meta, _ = self._keys(project_id, region)
        lock = f"{meta}:lock"
        if not self._redis.set(lock, 1, nx=True, ex=120):
            return None
        started = self._clock()
        self._redis.hset(meta, "started_at", started)
        return started

    def end_sweep(self, project_id: str, region: str, *, failed: bool = False) -> None:
        _, meta, _ = self._keys(project_id, region)
        if failed:
            # The list API is refused (e.g. an IAM policy without listServersDetails): ask
            # about each server instead for a while, rather than waiting on sweeps.
            self._redis.set(f"{meta}:failed", 1, ex=600)
        self._redis.delete(f"{meta}:lock")

    def project_pages(self, project_id: str, region: str) -> int | None:
        """List pages one sweep costs, as last seen; None before the first sweep."""
        _, meta, _ = self._keys(project_id, region)
        try:
            size = self._redis.hget(meta, "count")
        except redis.RedisError:
            return None
        return None if size is None else max(1, math.ceil(int(size) / PAGE))
