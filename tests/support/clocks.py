"""A clock that moves only when the test moves it: time-dependent logic is proven by
advancing it, never by sleeping."""

from __future__ import annotations


class ManualClock:
    """Seconds (monotonic or wall, as the code under test reads them) the test sets."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
