"""Rollout arithmetic with the anchors' semantics: waves (Ansible `serial`), the error budget
(AWS SSM MaxErrors) and which wave may run now (Argo Rollouts' pause steps). Pure functions.

Rounding: wave sizes and in-flight limits given as percentages round up (a wave never has
zero servers); the error budget rounds down (a percentage never allows more failures than it
says). `"10%"` of 50 allows 5 failures, so the sixth stops the batch, as SSM documents.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction

Amount = int | str


def _fraction(value: str) -> Fraction:
    """Exact: 14% of 450 is 63, where floating point would say 63.00000000000001 and round up."""
    return Fraction(value.rstrip("%")) / 100


def plan_waves(total: int, spec: Sequence[Amount] | None) -> list[int]:
    """Wave sizes for `total` servers: each entry a count or a percentage of the total; the
    last entry repeats until every server is placed; every wave has at least one server."""
    if total <= 0:
        return []
    if not spec:
        return [total]
    sizes: list[int] = []
    placed = 0
    while placed < total:
        entry = spec[min(len(sizes), len(spec) - 1)]
        wanted = math.ceil(total * _fraction(entry)) if isinstance(entry, str) else int(entry)
        size = min(max(1, wanted), total - placed)
        sizes.append(size)
        placed += size
    return sizes


def wave_of_each(total: int, spec: Sequence[Amount] | None) -> list[int]:
    """The wave number (from 1) of each server position."""
    numbers: list[int] = []
    for wave, size in enumerate(plan_waves(total, spec), start=1):
        numbers.extend([wave] * size)
    return numbers


def allowed_failures(max_failures: Amount | None, total: int) -> int | None:
    """How many failures the batch tolerates; None means no budget (never abort)."""
    if max_failures is None:
        return None
    if isinstance(max_failures, str):
        return math.floor(total * _fraction(max_failures))
    return int(max_failures)


def budget_spent(failed: int, max_failures: Amount | None, total: int) -> bool:
    """SSM semantics: with 3 allowed, the fourth failure stops the batch; 0 stops at the first."""
    allowed = allowed_failures(max_failures, total)
    return allowed is not None and failed > allowed


def pauses_after(wave: int, pause_after_waves: bool | Sequence[int] | None, waves: int) -> bool:
    """Whether a manual gate follows `wave` (never after the last one: nothing is left)."""
    if wave >= waves or not pause_after_waves:
        return False
    if pause_after_waves is True:
        return True
    return isinstance(pause_after_waves, Sequence) and wave in pause_after_waves


@dataclass(frozen=True)
class WaveStatus:
    """What the scheduler needs to know of the current wave."""

    number: int
    unsettled: int  # servers of this wave not yet in a final state
    ended_at: datetime | None  # when its last server settled (None while it runs)


def may_open_next_wave(current: WaveStatus, wave_delay_s: float, now: datetime) -> bool:
    """The next wave starts when this one has fully ended and its bake time has passed."""
    if current.unsettled > 0 or current.ended_at is None:
        return False
    return now >= current.ended_at + timedelta(seconds=wave_delay_s)
