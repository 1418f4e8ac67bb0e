"""The tick-kick protocol on a real Redis with the real tick lock: a kick queues one tick however
many kicks come, a kick that meets a running tick makes that tick run again (never lost), and a
tick kicked without pause gives way to the beat after a few rounds."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis

from orchestrator.services.tick_kicks import (
    MAX_ROUNDS,
    MIN_SPACING_S,
    TICK_AGAIN,
    TICK_QUEUED,
    TICK_URGENT,
    kick_tick,
    run_kicked,
)
from tests.support.clocks import ManualClock

LOCK = "reimage:tick-lock"


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


class Ticks:
    """A tick under the real lock, as `workers.tasks.tick_task` runs it; `during` runs inside
    the tick (what happens elsewhere meanwhile)."""

    def __init__(self, client: redis.Redis, clock: Callable[[], float] | None = None) -> None:
        self.client = client
        self.clock = clock
        self.lock = client.lock(LOCK, timeout=5, blocking=False)
        self.ran = 0
        self.during: list[Callable[[], object]] = []

    def run(self) -> int:
        def tick() -> None:
            self.ran += 1
            if self.during:
                self.during.pop(0)()

        def unlock() -> None:
            self.lock.release()

        try_lock = lambda: bool(self.lock.acquire(blocking=False))  # noqa: E731
        if self.clock is None:
            return run_kicked(self.client, try_lock, unlock, tick)
        return run_kicked(self.client, try_lock, unlock, tick, clock=self.clock)


def test_many_kicks_queue_one_tick(client: redis.Redis) -> None:
    sent: list[int] = []
    for _ in range(100):
        kick_tick(client, lambda _: sent.append(1))
    assert sent == [1]
    assert client.exists(TICK_AGAIN) and client.exists(TICK_QUEUED)
    # The queued tick starts: from then on a kick queues another.
    assert Ticks(client).run() == 1
    kick_tick(client, lambda _: sent.append(2))
    assert sent == [1, 2]


def test_a_kick_during_a_tick_makes_it_run_again(client: redis.Redis) -> None:
    ticks = Ticks(client)
    kicked: list[int] = []

    def kick_and_try_a_second_tick() -> None:
        # Another worker's kick while this tick runs; its kicked tick finds the lock held and
        # gives way at once (it ran nothing).
        kick_tick(client, lambda _: kicked.append(1))
        assert Ticks(client).run() == 0

    ticks.during.append(kick_and_try_a_second_tick)
    assert ticks.run() == 2  # the holder saw the flag after letting go and ran once more
    assert kicked == [1]
    assert not client.exists(TICK_AGAIN)


def test_a_tick_without_kicks_runs_once(client: redis.Redis) -> None:
    assert Ticks(client).run() == 1
    assert not client.exists(LOCK)


def test_kicks_without_pause_give_way_after_a_few_rounds(client: redis.Redis) -> None:
    ticks = Ticks(client)

    def kick_whose_tick_gives_way() -> None:
        kick_tick(client, lambda _: None)
        assert Ticks(client).run() == 0  # the queued tick found the lock held

    ticks.during.extend(kick_whose_tick_gives_way for _ in range(MAX_ROUNDS + 3))
    assert ticks.run() == MAX_ROUNDS
    # The last kick is not lost: its flag is still up for the next tick (the beat's, at worst).
    assert client.exists(TICK_AGAIN)
    assert Ticks(client).run() >= 1


def test_a_kick_never_fails_its_caller(redis_url: str) -> None:
    gone = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    kick_tick(gone, lambda _: None)  # logged, not raised: the beat ticks anyway


def test_a_tick_that_could_not_be_sent_does_not_hold_back_the_next_kick(
    client: redis.Redis,
) -> None:
    def broker_away(_: float) -> None:
        raise ConnectionError("broker away")

    kick_tick(client, broker_away)  # logged, not raised
    sent: list[int] = []
    kick_tick(client, lambda _: sent.append(1))
    assert sent == [1]


def test_kicked_ticks_start_a_quarter_second_apart_at_least(client: redis.Redis) -> None:
    clock = ManualClock(1_000_000.0)
    countdowns: list[float] = []
    kick_tick(client, countdowns.append, clock=clock)  # no tick ever ran: at once
    assert Ticks(client, clock).run() == 1  # the queued tick starts at clock.now
    clock.now += 0.1
    kick_tick(client, countdowns.append, clock=clock)  # 0.1 s after it: waits the rest
    assert Ticks(client, clock).run() == 1
    clock.now += 2.0
    kick_tick(client, countdowns.append, clock=clock)  # long after: at once
    assert countdowns == [0.0, pytest.approx(MIN_SPACING_S - 0.1), 0.0]
    # The API's kick for an operator's change does not wait out the spacing.
    assert Ticks(client, clock).run() == 1
    clock.now += 0.1
    kick_tick(client, countdowns.append, clock=clock, at_once=True)
    assert countdowns[-1] == 0.0


def test_a_kick_at_once_does_not_wait_behind_a_spaced_tick(client: redis.Redis) -> None:
    clock = ManualClock(1_000_000.0)
    countdowns: list[float] = []
    assert Ticks(client, clock).run() == 1
    clock.now += 0.05
    kick_tick(client, countdowns.append, clock=clock)  # a server ended: spaced
    kick_tick(client, countdowns.append, clock=clock)  # served by that one
    # An operator's change: no spacing, but the queued tick serves it.
    kick_tick(client, countdowns.append, clock=clock, at_once=True)
    assert countdowns == [pytest.approx(MIN_SPACING_S - 0.05)]
    # A wave's last server ended: a tick of its own now, not the spaced one's 0.2 s later;
    # more such kicks at once are served by that one.
    for _ in range(10):
        kick_tick(client, countdowns.append, clock=clock, at_once=True, past_queued=True)
    assert countdowns == [pytest.approx(MIN_SPACING_S - 0.05), 0.0]
    assert client.exists(TICK_AGAIN) and client.exists(TICK_QUEUED)
    client.delete(TICK_URGENT)  # its 0.1 s are over
    kick_tick(client, countdowns.append, clock=clock, at_once=True, past_queued=True)
    assert countdowns[-1] == 0.0 and len(countdowns) == 3


def test_a_kick_during_a_tick_is_served_by_the_tick_it_queued(client: redis.Redis) -> None:
    clock = ManualClock(1_000_000.0)
    ticks = Ticks(client, clock)
    countdowns: list[float] = []
    ticks.during.append(lambda: kick_tick(client, countdowns.append, clock=clock))
    # The running tick does not run again at once: the kick queued one, a quarter second on.
    assert ticks.run() == 1
    assert countdowns == [MIN_SPACING_S]
    assert client.exists(TICK_AGAIN) and client.exists(TICK_QUEUED)
    clock.now += MIN_SPACING_S
    assert Ticks(client, clock).run() == 1  # the queued one serves the flag
    assert not client.exists(TICK_AGAIN)
