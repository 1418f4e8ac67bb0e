"""One rate budget for the whole fleet: a token bucket in Redis, one atomic Lua script.

Every cloud call of every worker process on every machine takes a token from the bucket of its
(project, region). A 429 from the cloud shrinks the bucket's rate for everyone for a cool-down.
Time comes from Redis itself (TIME), so machines with skewed clocks share one notion of now.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Protocol

import redis


class WaitObserver(Protocol):
    """Told how long each wait for a token took (metrics implement it)."""

    def rate_wait(self, seconds: float) -> None: ...


# KEYS[1] bucket hash. ARGV: rate/s, burst, tokens wanted, penalty factor.
# Returns milliseconds to wait (0 = granted).
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts', 'penalty_until', 'factor')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
local penalty_until = tonumber(b[3]) or 0
local factor = tonumber(b[4]) or 1
if now < penalty_until then rate = rate * factor end
tokens = math.min(burst, tokens + (now - ts) * rate / 1000)
local wait = 0
if tokens >= want then
  tokens = tokens - want
else
  wait = math.ceil((want - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
redis.call('PEXPIRE', KEYS[1], 3600000)
return wait
"""

# KEYS[1] bucket hash. ARGV: cool-down ms, factor. Empties the bucket and slows it down.
_PENALISE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'tokens', 0, 'ts', now,
           'penalty_until', now + tonumber(ARGV[1]), 'factor', ARGV[2])
redis.call('PEXPIRE', KEYS[1], 3600000)
return 1
"""


@dataclass(frozen=True)
class RateBudget:
    rate: float
    burst: int
    penalty_factor: float = 0.5
    penalty_s: float = 10.0


class FleetRateLimiter:
    """Shared token buckets keyed by cloud project and region."""

    def __init__(
        self,
        client: redis.Redis,
        budget: RateBudget,
        prefix: str = "reimage:rate",
        metrics: WaitObserver | None = None,
    ) -> None:
        self._client = client
        self._metrics = metrics
        self._budget = budget
        self._prefix = prefix
        self._take = client.register_script(_TAKE)
        self._penalise = client.register_script(_PENALISE)

    def key(self, project_id: str, region: str) -> str:
        return f"{self._prefix}:{project_id}:{region}"

    def try_take(self, project_id: str, region: str) -> float:
        """Take one token; answer 0 when granted, else seconds to wait before asking again."""
        wait_ms = self._take(
            keys=[self.key(project_id, region)],
            args=[self._budget.rate, self._budget.burst, 1],
        )
        return int(wait_ms) / 1000.0

    async def acquire(self, project_id: str, region: str) -> float:
        """Wait until a token is ours; answer the seconds spent waiting."""
        waited = await self._wait_for_token(project_id, region, deadline_s=math.inf)
        assert waited is not None  # no deadline: always granted in the end
        return waited

    async def acquire_within(self, project_id: str, region: str, deadline_s: float) -> bool:
        """Take a token if one can be had within `deadline_s`; False (no token taken) when not.

        The changeos path takes its token this way BEFORE it records the attempt, so that no
        wait of any length sits between the record and the send (DESIGN.md invariant 3)."""
        return await self._wait_for_token(project_id, region, deadline_s=deadline_s) is not None

    async def _wait_for_token(
        self, project_id: str, region: str, *, deadline_s: float
    ) -> float | None:
        """The seconds waited for a token, or None when it would come after `deadline_s`."""
        waited = 0.0
        granted = True
        while True:
            wait = self.try_take(project_id, region)
            if wait <= 0:
                break
            if waited + wait > deadline_s:
                granted = False
                break
            # A refused take costs no token; sleeping the computed time is fair among waiters.
            await asyncio.sleep(wait)
            waited += wait
        if waited > 0 and self._metrics is not None:
            self._metrics.rate_wait(waited)
        return waited if granted else None

    def penalise(self, project_id: str, region: str) -> None:
        """The cloud said 429: slow everyone on this bucket down for a cool-down."""
        self._penalise(
            keys=[self.key(project_id, region)],
            args=[int(self._budget.penalty_s * 1000), self._budget.penalty_factor],
        )
