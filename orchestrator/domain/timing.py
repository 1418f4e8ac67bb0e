"""Pure timing rules: when to ask about a cloud job, and how long to back off before a retry.

Polling is what makes a fleet slow under a rate limit: every query spends a token that a
submission could have used. So the first query about a job goes out when most jobs like it
have ended (learned from the batch's own finished jobs), and the few still running are asked
again in short steps, rather than every job being asked every few seconds.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from datetime import datetime

# Ask first when this share of the batch's jobs had ended: few second queries, little delay.
FIRST_POLL_QUANTILE = 0.8
# Then ask again after this share of the expected duration.
FOLLOW_UP_SHARE = 0.1
# Learning needs a handful of finished jobs before it is trusted.
MIN_SAMPLES = 5
# While servers of a batch wait to be submitted, every poll takes a token that a changeos could
# have had: a running job is asked about again no sooner than this.
FOLLOW_UP_FLOOR_S = 1.0
# Once none wait (the batch's tail), its polls are all it spends the rate on, and its last jobs
# are asked about as often as asking each of them once fits in the rate, down to this.
TAIL_FOLLOW_UP_FLOOR_S = 0.25
# In the tail, a finished job's server is asked about at once, rather than waiting for a list
# sweep (up to a second or more), when asking each running server once takes at most this
# much of the rate: a few calls more for a batch's last servers, none for its bulk...
TAIL_DIRECT_CHECK_S = 0.5
# ...or at most a second of it, when no sweep may start for longer than this (one just began,
# too early for this job's end).
TAIL_SWEEP_WAIT_S = 0.25


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


def follow_up_floor_s(*, pending: int, running: int, rate: float) -> float:
    """The shortest wait before a running job is asked about again: FOLLOW_UP_FLOOR_S while
    the batch still has servers to submit; in its tail, the time its `running` jobs take to be
    asked once each at `rate` calls a second, within [TAIL_FOLLOW_UP_FLOOR_S, FOLLOW_UP_FLOOR_S]."""
    if pending > 0 or rate <= 0:
        return FOLLOW_UP_FLOOR_S
    return min(FOLLOW_UP_FLOOR_S, max(TAIL_FOLLOW_UP_FLOOR_S, running / rate))


def check_server_at_once(
    *, pending: int, running: int, rate: float, next_sweep_in_s: Callable[[], float]
) -> bool:
    """Whether a finished job's server is asked about now rather than from the next list
    sweep: in the batch's tail, when its running servers are few for the rate, or not many and
    the next sweep is not soon (`next_sweep_in_s`, asked only then: it costs a round trip)."""
    if pending > 0:
        return False
    if running <= rate * TAIL_DIRECT_CHECK_S:
        return True
    return running <= rate and next_sweep_in_s() > TAIL_SWEEP_WAIT_S


def next_poll_delay_s(
    polls_done: int,
    poll_interval_s: float,
    expected_job_s: float | None = None,
    cap_s: float = 60.0,
    *,
    floor_s: float = FOLLOW_UP_FLOOR_S,
) -> float:
    """A job still running: short steps when we know its kind (no shorter than `floor_s`, see
    `follow_up_floor_s`), the configured interval (growing gently to a cap) when we do not.
    A floor below FOLLOW_UP_FLOOR_S (the batch's tail) also shortens the unknown case: a tenth
    of the configured interval, as if that were the jobs' length."""
    if expected_job_s is not None:
        return min(cap_s, max(floor_s, FOLLOW_UP_SHARE * expected_job_s))
    if floor_s < FOLLOW_UP_FLOOR_S:
        return min(cap_s, poll_interval_s, max(floor_s, FOLLOW_UP_SHARE * poll_interval_s))
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
