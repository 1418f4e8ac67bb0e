"""Property-based tests of wave planning and error-budget math, plus the anchors' examples."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.domain.policy import resolve_amount
from orchestrator.domain.rollout import (
    WaveStatus,
    allowed_failures,
    budget_spent,
    may_open_next_wave,
    pauses_after,
    plan_waves,
    wave_of_each,
)

amounts = st.one_of(
    st.integers(min_value=1, max_value=500),
    st.integers(min_value=1, max_value=100).map(lambda p: f"{p}%"),
)


@given(st.integers(min_value=0, max_value=5000), st.lists(amounts, min_size=0, max_size=6))
def test_every_server_in_exactly_one_wave(total: int, spec: list[int | str]) -> None:
    sizes = plan_waves(total, spec)
    assert sum(sizes) == total
    assert all(size >= 1 for size in sizes)
    numbers = wave_of_each(total, spec)
    assert len(numbers) == total
    assert numbers == sorted(numbers)
    assert set(numbers) == set(range(1, len(sizes) + 1))


@given(st.integers(min_value=1, max_value=5000), st.lists(amounts, min_size=1, max_size=6))
def test_sizes_as_specified_then_the_last_repeats(total: int, spec: list[int | str]) -> None:
    sizes = plan_waves(total, spec)

    def wanted(entry: int | str) -> int:
        if isinstance(entry, str):
            return max(1, -(-total * int(entry[:-1]) // 100))
        return entry

    for index, size in enumerate(sizes[:-1]):  # every wave but the last is exactly its entry
        assert size == wanted(spec[min(index, len(spec) - 1)])
    last_entry = spec[min(len(sizes) - 1, len(spec) - 1)]
    assert 1 <= sizes[-1] <= wanted(last_entry)


def test_percentages_are_exact() -> None:
    assert plan_waves(450, ["14%"])[0] == 63  # 450 * 0.14 is 63.00000000000001 in floats
    assert allowed_failures("14%", 450) == 63
    assert resolve_amount("14%", 450, default=0) == 63


def test_ansible_style_examples() -> None:
    assert plan_waves(100, [1, "10%", "50%", "100%"]) == [1, 10, 50, 39]
    assert plan_waves(20, [1, 5]) == [1, 5, 5, 5, 4]
    assert plan_waves(7, None) == [7]
    assert plan_waves(3, ["1%"]) == [1, 1, 1]
    assert plan_waves(0, [1]) == []


def test_ssm_documented_examples() -> None:
    assert not budget_spent(0, None, 50)
    assert budget_spent(1, 0, 50)  # 0: the first failure stops
    assert not budget_spent(3, 3, 50) and budget_spent(4, 3, 50)  # 3: the fourth stops
    assert not budget_spent(5, "10%", 50) and budget_spent(6, "10%", 50)  # the sixth stops
    assert allowed_failures("10%", 55) == 5  # rounds down: never more than asked


@given(
    st.integers(min_value=0, max_value=10000),
    st.integers(min_value=0, max_value=100),
    st.integers(min_value=0, max_value=10000),
)
def test_budget_is_monotonic_and_exact(total: int, percent: int, failed: int) -> None:
    allowed = allowed_failures(f"{percent}%", total)
    assert allowed is not None and 0 <= allowed <= total
    assert allowed * 100 <= total * percent < (allowed + 1) * 100
    assert budget_spent(failed, f"{percent}%", total) == (failed > allowed)
    if budget_spent(failed, f"{percent}%", total):
        assert budget_spent(failed + 1, f"{percent}%", total)


def test_gates_and_bake_time() -> None:
    assert pauses_after(1, True, 3) and pauses_after(2, True, 3) and not pauses_after(3, True, 3)
    assert pauses_after(2, [2], 4) and not pauses_after(1, [2], 4)
    assert not pauses_after(1, False, 3) and not pauses_after(1, None, 3)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    running = WaveStatus(number=1, unsettled=2, ended_at=None)
    assert not may_open_next_wave(running, 0, t0)
    ended = WaveStatus(number=1, unsettled=0, ended_at=t0)
    assert may_open_next_wave(ended, 0, t0)
    assert not may_open_next_wave(ended, 30, t0 + timedelta(seconds=29))
    assert may_open_next_wave(ended, 30, t0 + timedelta(seconds=30))
