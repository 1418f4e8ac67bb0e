"""Pure timing rules: when to poll a cloud job next, and how long to back off before a retry."""

from __future__ import annotations

import random


def retry_delay_s(
    retries: int,
    *,
    retry_after_s: float | None = None,
    base_s: float = 2.0,
    cap_s: float = 120.0,
    rng: random.Random | None = None,
) -> float:
    """Exponential backoff with full jitter; the cloud's Retry-After wins when it asks for more."""
    rng = rng or random.Random()
    ceiling = min(cap_s, base_s * (2 ** min(retries, 16)))
    delay = rng.uniform(base_s / 2, max(base_s / 2, ceiling))
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return delay


def first_poll_delay_s(poll_interval_s: float, expected_job_s: float | None = None) -> float:
    """Ask first when the job is likely done, or after the configured interval before we know."""
    if expected_job_s is None:
        return poll_interval_s
    return max(1.0, expected_job_s)


def next_poll_delay_s(polls_done: int, poll_interval_s: float, cap_s: float = 60.0) -> float:
    """After the first poll, keep the configured interval, growing gently to a cap."""
    growth = 1.0 + 0.25 * max(0, polls_done - 1)
    return min(cap_s, max(poll_interval_s, poll_interval_s * growth))
