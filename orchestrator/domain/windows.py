"""Maintenance windows (issue 15, part 3): whether new changes may start now, when the window
closes, and when the next one opens. Pure: the caller brings the clock's reading.

A window is a cron schedule with a duration in a time zone (`{"cron": "0 1 * * SAT",
"duration_s": 14400, "timezone": "Asia/Shanghai"}`: Saturdays 01:00-05:00 Shanghai time), or an
absolute range (`{"start": ..., "end": ...}`). The shape is Argo CD's sync windows. Cron is
read by croniter (a well-kept library: day-of-week names, ranges, steps, and the days a
daylight-saving change skips or repeats), never parsed here by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

# How far ahead a window list is searched for its next opening before it is called "never".
HORIZON = timedelta(days=366 * 2)


@dataclass(frozen=True)
class CronWindow:
    cron: str
    duration_s: float
    timezone: str = "UTC"

    def last_opening(self, now: datetime) -> datetime | None:
        """The latest opening at or before `now`."""
        local = now.astimezone(ZoneInfo(self.timezone))
        try:
            # croniter's previous match is strictly before its start: start just after now.
            found: datetime = croniter(self.cron, local + timedelta(microseconds=1)).get_prev(
                datetime
            )
        except CroniterBadDateError:
            return None
        return found.astimezone(UTC)

    def next_opening(self, now: datetime) -> datetime | None:
        """The first opening after `now` (None: the expression never fires)."""
        local = now.astimezone(ZoneInfo(self.timezone))
        try:
            found: datetime = croniter(self.cron, local).get_next(datetime)
        except CroniterBadDateError:
            return None
        return found.astimezone(UTC)


@dataclass(frozen=True)
class RangeWindow:
    start: datetime
    end: datetime


Window = CronWindow | RangeWindow


@dataclass(frozen=True)
class WindowState:
    open: bool
    closes_at: datetime | None = None  # while open: when the window that is open closes
    next_open: datetime | None = None  # while closed: the next opening (None: never again)


def window_from_json(data: Mapping[str, Any]) -> Window:
    """The stored policy form (validated at submission)."""
    if data.get("cron"):
        return CronWindow(
            str(data["cron"]), float(data["duration_s"]), str(data.get("timezone") or "UTC")
        )
    return RangeWindow(_aware(data["start"]), _aware(data["end"]))


def _aware(value: object) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def window_state(windows: Sequence[Window], now: datetime) -> WindowState:
    """Open when any window is; otherwise the soonest next opening of any."""
    if not windows:
        return WindowState(True)
    closes: list[datetime] = []
    openings: list[datetime] = []
    for window in windows:
        if isinstance(window, RangeWindow):
            if window.start <= now < window.end:
                closes.append(window.end)
            elif now < window.start:
                openings.append(window.start)
            continue
        last = window.last_opening(now)
        duration = timedelta(seconds=window.duration_s)
        if last is not None and now < last + duration:
            closes.append(last + duration)
        following = window.next_opening(now)
        if following is not None:
            openings.append(following)
    if closes:
        return WindowState(True, closes_at=max(closes))
    return WindowState(False, next_open=min(openings) if openings else None)


def cron_problem(expression: str, timezone: str) -> str | None:
    """Why a cron window cannot be used (None: it can): a bad expression or time zone, or
    one that never fires (the 30th of February)."""
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {timezone!r} (an IANA name such as Asia/Shanghai)"
    if not croniter.is_valid(expression):
        return f"not a cron expression: {expression!r}"
    try:
        CronWindow(expression, 1, timezone).next_opening(datetime.now(UTC))
    except CroniterBadCronError as exc:
        return f"not a cron expression: {exc}"
    if CronWindow(expression, 1, timezone).next_opening(datetime(2000, 1, 1, tzinfo=UTC)) is None:
        return "never fires"
    return None


def never_opens(windows: Sequence[Window], now: datetime) -> bool:
    """A list with no opening from now on within the horizon: a batch that would wait forever."""
    state = window_state(windows, now)
    if state.open:
        return False
    return state.next_open is None or state.next_open > now + HORIZON
