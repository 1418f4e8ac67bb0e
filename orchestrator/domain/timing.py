"""Pure timing rules: when to ask about a cloud job, and how long to back off before a retry.

Polling is what makes a fleet slow under a rate limit: every query spends a token that a
submission could have used. So the first query about a job goes out when most jobs like it
have ended (learned from the batch's own finished jobs), and the few still running are asked
again in short steps, rather than every job being asked every few seconds.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from datetime import datetime

# Ask first when this share of the batch's jobs had ended: few second queries, little delay.
FIRST_POLL_QUANTILE = 0.8
# Then ask again after this share of the expected duration.
FOLLOW_UP_SHARE = 0.1
# Learning needs a handful of finished jobs before it is trusted.
MIN_SAMPLES = 5


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


def quantile(values: Sequence[float], share: float) -> float:
    """The `share` quantile (nearest rank) of a non-empty sequence."""
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))
    return ordered[rank]


def expected_job_seconds(durations: Sequence[float]) -> float | None:
    """What the batch has learned about its jobs; None until enough of them have ended."""
    if len(durations) < MIN_SAMPLES:
        return None
    return quantile(durations, FIRST_POLL_QUANTILE)


def first_poll_delay_s(poll_interval_s: float, expected_job_s: float | None = None) -> float:
    """Ask first when the job is likely done, or after the configured interval before we know."""
    if expected_job_s is None:
        return poll_interval_s
    return max(1.0, expected_job_s)


def next_poll_delay_s(
    polls_done: int,
    poll_interval_s: float,
    expected_job_s: float | None = None,
    cap_s: float = 60.0,
) -> float:
    """A job still running: short steps when we know its kind, the configured interval
    (growing gently to a cap) when we do not."""
    if expected_job_s is not None:
        return min(cap_s, max(1.0, FOLLOW_UP_SHARE * expected_job_s))
    growth = 1.0 + 0.25 * max(0, polls_done - 1)
    return min(cap_s, max(poll_interval_s, poll_interval_s * growth))


def job_duration_s(begin: str | None, end: str | None) -> float | None:
    """Seconds between the cloud's own begin and end times of a job, when both parse."""
    try:
        if not begin or not end:
            return None
        started = datetime.fromisoformat(begin.replace("Z", "+00:00"))
        ended = datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return None
    seconds = (ended - started).total_seconds()
    return seconds if seconds >= 0 else None
