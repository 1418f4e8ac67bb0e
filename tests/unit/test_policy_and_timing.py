"""Pure arithmetic: counts and percentages of a batch; retry and poll delays."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.domain.policy import in_flight_limit, resolve_amount
from orchestrator.domain.timing import (
    check_server_at_once,
    expected_job_seconds,
    first_poll_delay_s,
    follow_up_floor_s,
    job_duration_s,
    next_poll_delay_s,
    quantile,
    retry_delay_s,
)


def test_percentages_round_up_and_counts_stay() -> None:
    assert resolve_amount("10%", 50, default=0) == 5
    assert resolve_amount("10%", 51, default=0) == 6
    assert resolve_amount("1%", 3, default=0) == 1
    assert resolve_amount(7, 50, default=0) == 7
    assert resolve_amount(None, 50, default=9) == 9
    assert in_flight_limit(None, 1000) == 50
    assert in_flight_limit(0, 10) == 1


@given(st.integers(min_value=0, max_value=30), st.floats(min_value=0, max_value=500))
def test_retry_delay_respects_retry_after_and_cap(retries: int, retry_after: float) -> None:
    delay = retry_delay_s(retries, retry_after_s=retry_after, rng=random.Random(retries))
    assert delay >= retry_after
    plain = retry_delay_s(retries, rng=random.Random(retries))
    assert 1.0 <= plain <= 120.0


def test_poll_delays() -> None:
    assert first_poll_delay_s(10) == 10
    assert first_poll_delay_s(10, expected_job_s=42) == 42
    assert next_poll_delay_s(1, 10) == 10
    assert next_poll_delay_s(100, 10) == 60
    assert next_poll_delay_s(1, 10, expected_job_s=50) == 5  # short steps once learned
    assert next_poll_delay_s(1, 10, expected_job_s=3) == 1


def test_a_batchs_tail_asks_sooner_within_the_rate() -> None:
    # Servers still to submit: polls take their tokens, so a second at least.
    assert follow_up_floor_s(pending=1, running=3, rate=100) == 1.0
    # None left: as fast as asking each running job once fits in the rate...
    assert follow_up_floor_s(pending=0, running=60, rate=100) == 0.6
    # ...never below a quarter of a second, never above the usual second.
    assert follow_up_floor_s(pending=0, running=5, rate=100) == 0.25
    assert follow_up_floor_s(pending=0, running=500, rate=50) == 1.0
    assert follow_up_floor_s(pending=0, running=5, rate=0) == 1.0
    # The floor shortens the learned step and, in the tail, the unknown one too.
    assert next_poll_delay_s(1, 10, expected_job_s=4, floor_s=0.25) == 0.4
    assert next_poll_delay_s(1, 1, floor_s=0.6) == 0.6
    assert next_poll_delay_s(3, 10, floor_s=0.25) == 1.0
    assert next_poll_delay_s(3, 10, floor_s=1.0) == 15.0
    # A finished job's server is asked about at once only in the tail: when few run...
    soon, late = (lambda: 0.1), (lambda: 0.9)
    assert check_server_at_once(pending=0, running=17, rate=100, next_sweep_in_s=soon)
    assert not check_server_at_once(pending=0, running=60, rate=100, next_sweep_in_s=soon)
    assert not check_server_at_once(pending=1, running=2, rate=100, next_sweep_in_s=late)
    # ...or not many, when the next sweep may not start soon.
    assert check_server_at_once(pending=0, running=60, rate=100, next_sweep_in_s=late)
    assert not check_server_at_once(pending=0, running=160, rate=100, next_sweep_in_s=late)


def test_learning_needs_samples_and_takes_the_eightieth_percentile() -> None:
    assert expected_job_seconds([5.0] * 4) is None
    assert expected_job_seconds([float(s) for s in range(1, 11)]) == 8.0
    assert quantile([3.0, 1.0, 2.0], 0.5) == 2.0


def test_job_duration_from_the_cloud_times() -> None:
    assert job_duration_s("2016-04-25T20:04:34.604Z", "2016-04-25T20:08:41.593Z") == 246.989
    assert job_duration_s("2016-04-25T20:04:34.604Z", "") is None
    assert job_duration_s("garbage", "2016-04-25T20:08:41.593Z") is None
