"""The fleet's shared rate budget on a real Redis: burst, steady rate, shared across
processes, and slowed down for everybody after a 429."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import redis

from orchestrator.cloud.ratelimit import FleetRateLimiter, RateBudget


def limiter(url: str, rate: float, burst: int, **kwargs: float) -> FleetRateLimiter:
    return FleetRateLimiter(redis.Redis.from_url(url), RateBudget(rate, burst, **kwargs))


def test_burst_then_steady_rate(redis_url: str) -> None:
    gate = limiter(redis_url, rate=20, burst=5)
    assert [gate.try_take("p", "r") for _ in range(5)] == [0.0] * 5
    wait = gate.try_take("p", "r")
    assert 0.0 < wait <= 0.06  # one token at 20/s is 50 ms away
    assert gate.try_take("other-project", "r") == 0.0  # buckets are per project and region


def test_acquire_paces_calls(redis_url: str) -> None:
    gate = limiter(redis_url, rate=50, burst=10)

    async def take(n: int) -> float:
        started = time.monotonic()
        for _ in range(n):
            await gate.acquire("p", "r")
        return time.monotonic() - started

    elapsed = asyncio.run(take(40))
    assert elapsed >= (40 - 10) / 50 * 0.9


def test_one_budget_shared_by_processes(redis_url: str) -> None:
    script = (
        "import asyncio, redis, sys\n"
        "from orchestrator.cloud.ratelimit import FleetRateLimiter, RateBudget\n"
        "g = FleetRateLimiter(redis.Redis.from_url(sys.argv[1]), RateBudget(40, 5))\n"
        "async def main():\n"
        "    for _ in range(30):\n"
        "        await g.acquire('p', 'r')\n"
        "asyncio.run(main())\n"
    )
    started = time.monotonic()
    workers = [subprocess.Popen([sys.executable, "-c", script, redis_url]) for _ in range(3)]
    assert all(w.wait(timeout=60) == 0 for w in workers)
    elapsed = time.monotonic() - started
    # 90 tokens from one bucket of 40/s with a burst of 5: at least (90 - 5) / 40 s in all.
    assert elapsed >= (90 - 5) / 40 * 0.9


def test_a_429_slows_everyone_down_then_recovers(redis_url: str) -> None:
    gate = limiter(redis_url, rate=100, burst=1, penalty_factor=0.1, penalty_s=0.5)
    other = limiter(redis_url, rate=100, burst=1, penalty_factor=0.1, penalty_s=0.5)
    gate.penalise("p", "r")
    # The bucket is empty and refills at 10/s for half a second, for every process.
    assert other.try_take("p", "r") >= 0.09
    time.sleep(0.6)
    assert other.try_take("p", "r") == 0.0
    assert 0.0 < other.try_take("p", "r") <= 0.011  # back to 100/s
