"""Maintenance windows, pure (domain/windows): cron windows in a time zone (a daylight-saving
change included), absolute ranges, a window closing, and lists that never open."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from orchestrator.domain.windows import (
    CronWindow,
    RangeWindow,
    cron_problem,
    never_opens,
    window_from_json,
    window_state,
)

SATURDAY_NIGHT = CronWindow("0 1 * * SAT", 4 * 3600, "Asia/Shanghai")  # 01:00-05:00 +08:00


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_a_cron_window_is_open_for_its_duration_in_its_time_zone() -> None:
    # 2026-12-05 is a Saturday: 01:00 Shanghai is 17:00 UTC the Friday before.
    assert not window_state([SATURDAY_NIGHT], utc(2026, 12, 4, 16, 59)).open
    state = window_state([SATURDAY_NIGHT], utc(2026, 12, 4, 17, 0))
    assert state.open and state.closes_at == utc(2026, 12, 4, 21, 0)
    closed = window_state([SATURDAY_NIGHT], utc(2026, 12, 4, 21, 0))  # closes on the dot
    assert not closed.open and closed.next_open == utc(2026, 12, 11, 17, 0)


def test_a_daylight_saving_change_moves_the_window_in_utc_not_in_local_time() -> None:
    nightly = CronWindow("0 1 * * *", 3600, "Europe/Berlin")  # summer time from 2026-03-29
    before = window_state([nightly], utc(2026, 3, 28, 12, 0))
    assert before.next_open == utc(2026, 3, 29, 0, 0)  # 01:00 CET
    after = window_state([nightly], utc(2026, 3, 29, 12, 0))
    assert after.next_open == utc(2026, 3, 29, 23, 0)  # 01:00 CEST, an hour earlier in UTC
    assert window_state([nightly], utc(2026, 3, 29, 23, 30)).open


def test_absolute_ranges_and_the_soonest_of_several() -> None:
    later = RangeWindow(utc(2026, 12, 2, 10), utc(2026, 12, 2, 11))
    assert window_state([later], utc(2026, 12, 2, 9)).next_open == utc(2026, 12, 2, 10)
    assert window_state([later], utc(2026, 12, 2, 10, 30)).closes_at == utc(2026, 12, 2, 11)
    assert window_state([later, SATURDAY_NIGHT], utc(2026, 12, 2, 9)).next_open == utc(
        2026, 12, 2, 10
    )
    assert window_state([], utc(2026, 12, 2, 9)).open  # no windows: always open


def test_lists_that_can_never_open_and_bad_crons() -> None:
    now = utc(2026, 12, 2, 9)
    assert never_opens([RangeWindow(now - timedelta(hours=2), now - timedelta(hours=1))], now)
    assert not never_opens([SATURDAY_NIGHT], now)
    assert cron_problem("0 0 30 2 *", "UTC") == "never fires"
    assert "cron" in (cron_problem("61 * * * *", "UTC") or "")
    assert "time zone" in (cron_problem("0 1 * * *", "Mars/Olympus") or "")
    assert cron_problem("0 1 * * SAT", "Asia/Shanghai") is None


def test_the_stored_form_reads_back() -> None:
    assert window_from_json({"cron": "0 1 * * SAT", "duration_s": 60}) == CronWindow(
        "0 1 * * SAT", 60, "UTC"
    )
    assert window_from_json(
        {"start": "2026-12-02T10:00:00Z", "end": "2026-12-02T11:00:00+00:00"}
    ) == RangeWindow(utc(2026, 12, 2, 10), utc(2026, 12, 2, 11))
