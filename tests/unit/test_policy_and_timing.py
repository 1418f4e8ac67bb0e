"""Pure arithmetic: counts and percentages of a batch; retry and poll delays."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.domain.policy import in_flight_limit, resolve_amount
from orchestrator.domain.timing import first_poll_delay_s, next_poll_delay_s, retry_delay_s


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
