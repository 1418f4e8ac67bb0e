"""One rate budget for the whole fleet: a token bucket in Redis, one atomic Lua script, whose
rate is found from the cloud's answers rather than guessed.

Every cloud call of every worker process on every machine takes a token from the bucket of its
(project, region). Huawei publishes no per-API limits for ECS, so `ORCH_ECS_RATE` is a ceiling,
not the rate: the bucket's rate grows while the fleet wants more than it gives and the cloud
answers cleanly, and shrinks when the cloud throttles (429 / APIGW.0308 / Common.0024), as TCP's
congestion window does, for every process at once. The growth is CUBIC-like around the rate of
the last throttle (`w_max`): back to 95% of it quickly (+15% a second), then probing above it
slowly (+1% of it a second), so the fleet spends its time just under the cloud's limit and
meets a 429 rarely. Before the first throttle it grows by half every second (slow start: from
10/s it passes 50/s in 4 s, and overshoots by half at most); a throttle
takes it to 70% (at most once a second: the 429s of calls sent before the cut must not compound).
The rate only grows in a second in which some call had to wait for a token (the rate was what
held the fleet back), so an idle fleet does not talk itself into a rate it never tried.

A caller that must wait reserves its token when it comes within a tenth of a second (the bucket
goes into debt, and a throttle keeps the debt: the next caller waits behind what was
reserved), so it asks once; the callers of one process ask one at a time. Time comes
from Redis itself (TIME), so machines with skewed clocks share one notion of now; a
test may pass its own clock instead.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis


class WaitObserver(Protocol):
    """Told how long each wait for a token took (metrics implement it)."""

    def rate_wait(self, seconds: float) -> None: ...


_NOW = """
local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# KEYS[1] bucket hash. ARGV: now ms (-1: Redis TIME), ceiling/s, start/s, burst, tokens wanted,
# reservation horizon ms (0: none). A token that comes within the horizon is reserved: taken
# now, the bucket going into debt, to be used after the wait. Returns {milliseconds to wait
# (0 = granted now), the rate now (as a string), 1 if reserved (else ask again after the wait)}.
_TAKE = (
    _NOW
    + """
local ceiling = tonumber(ARGV[2])
local start = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
local want = tonumber(ARGV[5])
local horizon = tonumber(ARGV[6])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts', 'rate', 'grow_ts', 'starved', 'w_max')
local rate = math.min(ceiling, tonumber(b[3]) or start)
local tokens = tonumber(b[1]) or math.min(burst, rate)
local ts = tonumber(b[2]) or now
local grow_ts = tonumber(b[4]) or now
local starved = tonumber(b[5]) or 0
local w_max = tonumber(b[6]) or 0
if now - grow_ts >= 1000 then
  if starved == 1 then
    if w_max == 0 then
      rate = rate * 1.5
    elseif rate < 0.95 * w_max then
      rate = math.min(0.95 * w_max, rate * 1.15)
    else
      rate = rate + math.max(0.05, 0.01 * w_max)
    end
    rate = math.min(ceiling, rate)
  end
  grow_ts = now
  starved = 0
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
local wait = 0
local reserved = 0
if tokens >= want then
  tokens = tokens - want
else
  wait = math.ceil((want - tokens) * 1000 / rate)
  starved = 1
  if wait <= horizon then
    tokens = tokens - want
    reserved = 1
  else
    -- Ask again when the debt of the reservations before it is within the horizon.
    wait = wait - horizon
  end
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now, 'rate', rate, 'grow_ts', grow_ts,
           'starved', starved)
redis.call('PEXPIRE', KEYS[1], 3600000)
return {wait, tostring(rate), reserved}
"""
)

# KEYS[1] bucket hash. ARGV: now ms (-1: Redis TIME), ceiling/s, start/s, floor/s, factor.
# The cloud throttled: cut the rate (once a second at most) and empty the bucket.
_THROTTLED = (
    _NOW
    + """
local ceiling = tonumber(ARGV[2])
local start = tonumber(ARGV[3])
local floor = tonumber(ARGV[4])
local factor = tonumber(ARGV[5])
local b = redis.call('HMGET', KEYS[1], 'rate', 'cut_ts', 'tokens')
local rate = math.min(ceiling, tonumber(b[1]) or start)
local cut_ts = tonumber(b[2]) or -1000000
-- Empty, or still owing what was reserved: those calls go, and the next wait behind them.
local tokens = math.min(0, tonumber(b[3]) or 0)
if now - cut_ts >= 1000 then
  redis.call('HSET', KEYS[1], 'w_max', rate, 'cut_ts', now)
  rate = math.max(floor, rate * factor)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now, 'rate', rate, 'grow_ts', now,
           'starved', 0)
redis.call('PEXPIRE', KEYS[1], 3600000)
return tostring(rate)
"""
)

# A caller waiting for a token reserves it when it comes within this many seconds, and so asks
# the bucket once; further out it asks again later. Short, because a reservation is made at
# the rate of its time: after a throttle, only this much is still sent at the old rate.
RESERVATION_HORIZON_S = 0.1

# Without ORCH_ECS_RATE: where discovery starts, and the highest rate it may reach.
DISCOVERY_START = 10.0
DISCOVERY_CEILING = 1000.0


@dataclass(frozen=True)
class RateBudget:
    """`ceiling`: the most calls a second ever (ORCH_ECS_RATE); `start`: the rate a new bucket
    begins at (the ceiling when one is configured: the operator said so); `burst`: the bucket's
    size; a throttle multiplies the rate by `cut_factor`, never below `floor`."""

    ceiling: float
    burst: int
    start: float | None = None
    cut_factor: float = 0.7
    floor: float = 0.5

    @classmethod
    def from_settings(cls, rate: float | None, burst: int) -> RateBudget:
        if rate is None:
            return cls(ceiling=DISCOVERY_CEILING, burst=burst, start=DISCOVERY_START)
        return cls(ceiling=rate, burst=burst, start=rate)

    @property
    def first_rate(self) -> float:
        return min(self.ceiling, self.start if self.start is not None else self.ceiling)


class FleetRateLimiter:
    """Shared token buckets keyed by cloud project and region."""

    def __init__(
        self,
        client: redis.Redis,
        budget: RateBudget,
        prefix: str = "reimage:rate",
        metrics: WaitObserver | None = None,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self._client = client
        self._metrics = metrics
        self._budget = budget
        self._prefix = prefix
        self._clock_ms = clock_ms  # None: Redis's own TIME
        self._take = client.register_script(_TAKE)
        self._throttled = client.register_script(_THROTTLED)
        self.rate = budget.first_rate  # as last seen by this process
        # One asker per bucket per event loop: the other callers of this process queue behind
        # it (asyncio's lock is first come, first served), and a waiter reserves its token
        # (RESERVATION_HORIZON_S). Before, every waiting coroutine woke at the same refill and
        # asked Redis again, and one of them won: about 60 script calls per token on a
        # 600-server batch.
        self._askers: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, asyncio.Lock]
        ] = weakref.WeakKeyDictionary()

    def key(self, project_id: str, region: str) -> str:
        return f"{self._prefix}:{project_id}:{region}"

    def _now(self) -> int:
        return self._clock_ms() if self._clock_ms is not None else -1

    def try_take(self, project_id: str, region: str) -> float:
        """Take one token; answer 0 when granted, else seconds to wait before asking again."""
        wait, _ = self._ask(project_id, region, horizon_s=0.0)
        return wait

    def _ask(self, project_id: str, region: str, *, horizon_s: float) -> tuple[float, bool]:
        """(seconds to wait, reserved): reserved means the token is ours after the wait."""
        budget = self._budget
        wait_ms, rate, reserved = self._take(
            keys=[self.key(project_id, region)],
            args=[
                self._now(),
                budget.ceiling,
                budget.first_rate,
                budget.burst,
                1,
                max(0, math.floor(horizon_s * 1000)),
            ],
        )
        self.rate = float(rate)
        return int(wait_ms) / 1000.0, bool(int(reserved))

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

    def _asker(self, key: str) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        locks = self._askers.setdefault(loop, {})
        if key not in locks:
            locks[key] = asyncio.Lock()
        return locks[key]

    async def _wait_for_token(
        self, project_id: str, region: str, *, deadline_s: float
    ) -> float | None:
        """The seconds waited for a token, or None when it would come after `deadline_s`."""
        asker = self._asker(self.key(project_id, region))
        loop = asyncio.get_running_loop()
        started = loop.time()
        if asker.locked() and math.isfinite(deadline_s):
            try:
                await asyncio.wait_for(asker.acquire(), timeout=deadline_s)
            except TimeoutError:
                return None
        else:
            await asker.acquire()
        reserved_wait: float | None = None
        granted = True
        try:
            while True:
                left = deadline_s - (loop.time() - started)
                wait, reserved = self._ask(
                    project_id, region, horizon_s=min(RESERVATION_HORIZON_S, max(0.0, left))
                )
                if wait <= 0:
                    break
                if reserved:
                    reserved_wait = wait
                    break
                if wait > left:
                    granted = False
                    break
                # Nothing was taken: ask again when a reservation can be had, alone in this
                # process; the askers of all processes share the bucket first come first served.
                await asyncio.sleep(wait)
        finally:
            # Released before a reserved wait: the next caller reserves the token after ours.
            asker.release()
        if reserved_wait is not None:
            await asyncio.sleep(reserved_wait)
        waited = loop.time() - started
        # A grant that came at once is no wait (the lock's own microseconds aside).
        if granted and waited > 0.001 and self._metrics is not None:
            self._metrics.rate_wait(waited)
        return waited if granted else None

    def penalise(self, project_id: str, region: str) -> None:
        """The cloud throttled a call: cut the rate for everyone on this bucket."""
        budget = self._budget
        rate = self._throttled(
            keys=[self.key(project_id, region)],
            args=[self._now(), budget.ceiling, budget.first_rate, budget.floor, budget.cut_factor],
        )
        self.rate = float(rate)
