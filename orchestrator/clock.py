"""The clock. Services read it from the runtime (`rt.clock`) or take `now` as an argument, so a
test passes its own and moves it; what several processes share through Redis (the rate budget,
the list-sweep facts) keeps wall time, from Redis itself or from a clock given to it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)
