"""Pure rollout arithmetic: counts or percentages of a batch, resolved to absolute numbers."""

from __future__ import annotations

import math
from fractions import Fraction

DEFAULT_MAX_IN_FLIGHT = 50


def resolve_amount(value: int | str | None, total: int, *, default: int) -> int:
    """`7` stays 7; `"10%"` of 50 is 5 (rounded up, at least 1 when the total is not 0)."""
    if value is None:
        return default
    if isinstance(value, str) and value.endswith("%"):
        share = Fraction(value[:-1]) / 100  # exact, so 14% of 450 is 63, not 64
        return max(1, math.ceil(total * share)) if total else 0
    return int(value)


def in_flight_limit(value: int | str | None, total: int) -> int:
    """How many servers may be submitting or running at once (never below one)."""
    return max(1, resolve_amount(value, total, default=DEFAULT_MAX_IN_FLIGHT))
