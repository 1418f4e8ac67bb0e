"""The API's microcache of hot reads, on a clock the test moves."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from orchestrator.api.read_cache import ReadCache
from tests.support.clocks import ManualClock


def test_a_repeated_read_is_served_from_memory_until_it_is_older_than_the_ttl() -> None:
    clock = ManualClock(100.0)
    cache = ReadCache(1.0, clock=clock)
    computed: list[str] = []

    def read(key: str, value: str) -> bytes:
        async def compute() -> bytes:
            computed.append(value)
            return value.encode()

        return asyncio.run(cache.answer((key,), compute))

    assert read("batch", "v1") == b"v1"
    clock.now += 0.9
    assert read("batch", "v2") == b"v1"  # still fresh
    assert read("other", "o1") == b"o1"  # another key is its own entry
    clock.now += 0.2
    assert read("batch", "v3") == b"v3"  # older than the TTL: read again
    cache.forget_all()
    assert read("batch", "v4") == b"v4"  # a change through this process: read again
    assert computed == ["v1", "o1", "v3", "v4"]


def test_a_ttl_of_zero_never_keeps_anything() -> None:
    cache = ReadCache(0.0)
    answers = [asyncio.run(cache.answer(("k",), _const(str(i)))) for i in range(3)]
    assert answers == [b"0", b"1", b"2"]


def _const(value: str) -> Callable[[], Awaitable[bytes]]:
    async def compute() -> bytes:
        return value.encode()

    return compute
