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
reserved), so it asks once; the callers of one process ask one at a time, and one ask
reserves tokens for those queued behind it (as many as come within that tenth). Time comes
from Redis itself (TIME), so machines with skewed clocks share one notion of now; a
test may pass its own clock instead.
"""

from __future__ import annotations

import asyncio
import collections
import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
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

# The most tokens one ask takes (for the callers of one process queued behind the asker).
MAX_TOKENS_PER_ASK = 8
# A token reserved for a caller that never came (it gave up on its deadline) is dropped this
# long after it was due: spent later, it would add to a burst.
RESERVED_TOKEN_TTL_S = 1.0

# Our bucket is this much smaller than the cloud's (ORCH_ECS_BURST; one token at least when it
# holds more than two). Calls granted at the cloud's rate reach it a little bunched (a worker
# records each attempt before it sends, and a busy one sends two due calls at once); with both
# buckets empty, every bunch was a 429 and a cut of the whole fleet's rate (reimage bench: 15
# throttles in the first second after the burst, then seconds below the rate). The slack the
# cloud keeps absorbs them, for a tenth of the burst given up once.
BURST_SLACK_SHARE = 0.1

# Without ORCH_ECS_RATE: where discovery starts, and the highest rate it may reach.
DISCOVERY_START = 10.0
DISCOVERY_CEILING = 1000.0


@dataclass
class _LocalBucket:
    """What one event loop of this process holds for one bucket: the lock of its one asker,
    how many callers queue behind it, and the tokens an ask reserved for them (the loop times
    at which each may be spent, earliest first)."""

    asker: asyncio.Lock = field(default_factory=asyncio.Lock)
    queued: int = 0
    reserved: collections.deque[float] = field(default_factory=collections.deque)

    def take_reserved(self, *, now: float) -> float | None:
        while self.reserved and self.reserved[0] < now - RESERVED_TOKEN_TTL_S:
            self.reserved.popleft()
        return self.reserved.popleft() if self.reserved else None

    def give_back(self, due: float) -> None:
        self.reserved.appendleft(due)

    def keep_reserved(self, dues: list[float]) -> None:
        self.reserved.extend(dues)


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
        """`burst`: the cloud's bucket (ORCH_ECS_BURST), of which ours keeps a slack free."""
        ours = burst - max(1, round(burst * BURST_SLACK_SHARE)) if burst > 2 else burst
        if rate is None:
            return cls(ceiling=DISCOVERY_CEILING, burst=ours, start=DISCOVERY_START)
        return cls(ceiling=rate, burst=ours, start=rate)

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
        # (RESERVATION_HORIZON_S), with tokens for the callers queued behind it in the same
        # ask. Before, every waiting coroutine woke at the same refill and asked Redis again,
        # and one of them won: about 60 script calls per token on a 600-server batch; with one
        # token per ask, about 6 on a 2,000-server one.
        self._locals: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, _LocalBucket]
        ] = weakref.WeakKeyDictionary()

    def key(self, project_id: str, region: str) -> str:
        return f"{self._prefix}:{project_id}:{region}"

    def _now(self) -> int:
        return self._clock_ms() if self._clock_ms is not None else -1

    def try_take(self, project_id: str, region: str) -> float:
        """Take one token; answer 0 when granted, else seconds to wait before asking again."""
        wait, _ = self._ask(project_id, region, horizon_s=0.0)
        return wait

    def _ask(
        self, project_id: str, region: str, *, horizon_s: float, want: int = 1
    ) -> tuple[float, bool]:
        """(seconds to wait, reserved) for the last of `want` tokens: reserved means they are
        ours, the last one after the wait (the others a token's time apart before it)."""
        budget = self._budget
        wait_ms, rate, reserved = self._take(
            keys=[self.key(project_id, region)],
            args=[
                self._now(),
                budget.ceiling,
                budget.first_rate,
                budget.burst,
                want,
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

    def _local(self, key: str) -> _LocalBucket:
        loop = asyncio.get_running_loop()
        buckets = self._locals.setdefault(loop, {})
        if key not in buckets:
            buckets[key] = _LocalBucket()
        return buckets[key]

    def _tokens_to_ask_for(self, local: _LocalBucket) -> int:
        """This caller's token and one for each caller queued behind it, as many as come
        within the reservation horizon at the rate last seen."""
        fits = max(1, math.floor(self.rate * RESERVATION_HORIZON_S))
        return max(1, min(1 + local.queued, fits, MAX_TOKENS_PER_ASK))

    async def _wait_for_token(
        self, project_id: str, region: str, *, deadline_s: float
    ) -> float | None:
        """The seconds waited for a token, or None when it would come after `deadline_s`."""
        local = self._local(self.key(project_id, region))
        loop = asyncio.get_running_loop()
        started = loop.time()
        local.queued += 1
        try:
            if local.asker.locked() and math.isfinite(deadline_s):
                try:
                    await asyncio.wait_for(local.asker.acquire(), timeout=deadline_s)
                except TimeoutError:
                    return None
            else:
                await local.asker.acquire()
        finally:
            local.queued -= 1
        due: float | None = None  # the loop time at which our token may be spent
        try:
            due = local.take_reserved(now=loop.time())
            if due is not None and due - started > deadline_s:
                local.give_back(due)  # too late for this caller; the next one may use it
                return None
            while due is None:
                left = deadline_s - (loop.time() - started)
                want = self._tokens_to_ask_for(local)
                wait, reserved = self._ask(
                    project_id,
                    region,
                    horizon_s=min(RESERVATION_HORIZON_S, max(0.0, left)),
                    want=want,
                )
                if wait <= 0 or reserved:
                    now = loop.time()
                    step = 1.0 / self.rate if self.rate > 0 else 0.0
                    last = now + max(0.0, wait)
                    dues = [max(now, last - (want - 1 - j) * step) for j in range(want)]
                    due = dues[0]
                    local.keep_reserved(dues[1:])
                    break
                if wait > left:
                    return None
                # Nothing was taken: ask again when a reservation can be had, alone in this
                # process; the askers of all processes share the bucket first come first served.
                await asyncio.sleep(wait)
        finally:
            # Released before a reserved wait: the next caller reserves the token after ours.
            local.asker.release()
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        waited = loop.time() - started
        # A grant that came at once is no wait (the lock's own microseconds aside).
        if waited > 0.001 and self._metrics is not None:
            self._metrics.rate_wait(waited)
        return waited

    def penalise(self, project_id: str, region: str) -> None:
        """The cloud throttled a call: cut the rate for everyone on this bucket."""
        budget = self._budget
        rate = self._throttled(
            keys=[self.key(project_id, region)],
            args=[self._now(), budget.ceiling, budget.first_rate, budget.floor, budget.cut_factor],
        )
        self.rate = float(rate)
