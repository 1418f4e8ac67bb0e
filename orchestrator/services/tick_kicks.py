"""Asking for a tick now, not at the beat's next one (issue 17 part 3).

Whatever frees work for the tick (a batch accepted, a server ended and its in-flight slot with
it, a list sweep that claims were waiting for) kicks it: a tick message is queued unless one is
queued already, and the "again" flag is raised. A tick that finds another one running leaves
the flag to it, and the running one, after its lock is released, runs once more when the flag
is up and no tick is queued to serve it; so a kick is never lost between two ticks, and a
thousand kicks a second cost one tick at a time. Kicked ticks start MIN_SPACING_S apart at
least (a tick queued sooner waits out the rest): a busy fleet ends a server every few
milliseconds, and a tick for each cost more than the work it found. A wave's last server ended
is the exception: it waits for nothing else, so its kick sends a tick at once past a spaced
one queued (at most one such every 0.1 s). The beat's ticks go on regardless: kicks only make
the tick sooner.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

import redis

log = logging.getLogger("reimage.kicks")

TICK_AGAIN = "reimage:tick-again"
# A kicked tick queued and not started yet: more kicks meanwhile are already served by it.
TICK_QUEUED = "reimage:tick-queued"
# Long enough for a queued tick to start on a busy control worker; if it never does (its
# worker died holding it), the next kick after this queues another one.
TICK_QUEUED_TTL_MS = 5000
# The flag outlives any tick: it is lowered by the tick that serves it.
TICK_AGAIN_TTL_MS = 60_000
# A kicked tick nobody ran this soon is worthless: a later tick does the same work.
KICKED_TICK_EXPIRES_S = 5.0
# A tick kicked without pause runs at most this many times in a row; the beat does the rest.
MAX_ROUNDS = 5
# When the last tick started (wall seconds, shared by every process), for the spacing.
TICK_STARTED = "reimage:tick-started"
MIN_SPACING_S = 0.25
# A tick sent past a queued spaced one (`past_queued`): more such kicks this soon are served
# by it, so a burst of them costs one extra tick, not one each.
TICK_URGENT = "reimage:tick-urgent"
TICK_URGENT_TTL_MS = 100


def kick_tick(
    client: redis.Redis,
    send: Callable[[float], None],
    *,
    clock: Callable[[], float] = time.time,
    at_once: bool = False,
    past_queued: bool = False,
) -> None:
    """Raise the flag, and queue a tick (through `send`, given the seconds it is to wait for
    the spacing) unless one is queued. `at_once`: no spacing, for an operator's change (a new
    batch waits for nothing): the spacing is for the workers' stream of ended servers.
    `past_queued` (with `at_once`): a tick now even when a spaced one is queued, for what waits
    for nothing else (a wave's last server ended: its gate or the batch's end), at most one per
    TICK_URGENT_TTL_MS. Never raises: a kick is a hint, and the beat's next tick does the same
    work."""
    try:
        client.set(TICK_AGAIN, 1, px=TICK_AGAIN_TTL_MS)
        if not client.set(TICK_QUEUED, 1, nx=True, px=TICK_QUEUED_TTL_MS):
            if not (at_once and past_queued):
                return
            if not client.set(TICK_URGENT, 1, nx=True, px=TICK_URGENT_TTL_MS):
                return  # one sent past the queued tick just now serves this kick too
        started = client.get(TICK_STARTED)
    except Exception:  # Redis away: the beat ticks anyway
        log.warning("could not kick the tick", exc_info=True)
        return
    since = clock() - float(started) if started is not None else MIN_SPACING_S
    try:
        send(0.0 if at_once else min(MIN_SPACING_S, max(0.0, MIN_SPACING_S - since)))
    except Exception:  # the broker away: the next kick may try again, the beat ticks anyway
        log.warning("could not kick the tick", exc_info=True)
        with contextlib.suppress(redis.RedisError):
            client.delete(TICK_QUEUED)


def run_kicked(
    client: redis.Redis,
    try_lock: Callable[[], bool],
    unlock: Callable[[], None],
    tick: Callable[[], None],
    *,
    clock: Callable[[], float] = time.time,
) -> int:
    """Run `tick` under the tick lock while the flag is up (at most MAX_ROUNDS times);
    answer how many times it ran. The flag is lowered before each run (what was kicked before
    is then seen by it) and read after the lock is released (a kick that found the lock held
    is then seen by us, unless the tick it queued is to serve it)."""
    with contextlib.suppress(redis.RedisError):
        client.delete(TICK_QUEUED)  # kicks from now on queue another tick
    rounds = 0
    while rounds < MAX_ROUNDS:
        if not try_lock():
            return rounds  # the holder reads the flag once it lets go
        try:
            with contextlib.suppress(redis.RedisError):
                client.delete(TICK_AGAIN)
                client.set(TICK_STARTED, repr(clock()), px=TICK_AGAIN_TTL_MS)
            rounds += 1
            tick()
        finally:
            unlock()
        try:
            if not client.exists(TICK_AGAIN) or client.exists(TICK_QUEUED):
                return rounds
        except redis.RedisError:
            return rounds
    return rounds
