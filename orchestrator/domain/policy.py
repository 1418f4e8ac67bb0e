"""A batch's rollout policy as one typed value with its defaults (the API's request model takes
them from here), and the arithmetic that resolves counts or percentages to absolute numbers."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from fractions import Fraction
from typing import Any

from orchestrator.domain.health import HealthCheck
from orchestrator.domain.spread import DomainWaves, SpreadRule
from orchestrator.domain.windows import Window, window_from_json

Amount = int | str  # a count, or a percentage such as "10%"
DEFAULT_MAX_IN_FLIGHT = 50
DEFAULT_BACKUP_RETENTION_S = 604800.0  # a week


@dataclass(frozen=True)
class RolloutPolicy:
    """How fast and how carefully a batch is rolled out; stored as JSON with the batch (the API
    validated it), read back with `from_json`."""

    max_in_flight: Amount = DEFAULT_MAX_IN_FLIGHT
    poll_interval_s: float = 10.0
    job_timeout_s: int = 1800
    waves: tuple[Amount, ...] | None = None
    max_failures: Amount | None = None
    pause_after_waves: bool | tuple[int, ...] = False
    wave_delay_s: float = 0.0
    skip_matching: bool = True
    # A server pre-flight finds incompatible: "reject" refuses the whole batch (422, nothing
    # stored), "skip" stores it `skipped` with its code.
    on_incompatible: str = "reject"
    # The health gate after each change (`HealthCheck.from_json`'s form); None: a server is
    # done when its job is.
    health_check: dict[str, Any] | None = None
    # A server that fails its health gate: "keep" it as it is, or "rollback" to the image it
    # ran before (then it ends failed all the same).
    on_unhealthy: str = "keep"
    # {"mode": "image", "retention_s": n}: each system disk is saved as an IMS private image
    # before its changeos; None: no backup.
    backup: dict[str, Any] | None = None
    # Failure domains: [{"by": "availability_zone" | "server_group" | "tag:<key>",
    # "max_in_flight": n or "p%"}, ...], each on top of the batch's own max_in_flight.
    spread: tuple[dict[str, Any], ...] | None = None
    # {"by": <kind>, "order": [values...]}: one group of waves per domain value.
    waves_by: dict[str, Any] | None = None
    # Maintenance windows: new changeos only inside one ({"cron", "duration_s", "timezone"} or
    # {"start", "end"}); None: any time.
    windows: tuple[dict[str, Any], ...] | None = None
    # Four eyes: {"before_start": n, "after_waves": [...], "required": m} (domain.approvals).
    approvals: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> RolloutPolicy:
        """The stored form back; keys it does not know (none today) are ignored."""
        data = data or {}
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known and v is not None}
        if isinstance(values.get("waves"), list):
            values["waves"] = tuple(values["waves"])
        if isinstance(values.get("spread"), list):
            values["spread"] = tuple(values["spread"])
        if isinstance(values.get("windows"), list):
            values["windows"] = tuple(values["windows"])
        if isinstance(values.get("waves_by"), str):
            values["waves_by"] = {"by": values["waves_by"]}
        if isinstance(values.get("pause_after_waves"), list):
            values["pause_after_waves"] = tuple(int(w) for w in values["pause_after_waves"])
        if "max_failures" in data and data["max_failures"] is None:
            values["max_failures"] = None
        for name in ("poll_interval_s", "wave_delay_s"):
            if name in values:
                values[name] = float(values[name])
        if "job_timeout_s" in values:
            values["job_timeout_s"] = int(values["job_timeout_s"])
        return cls(**values)

    def in_flight_limit(self, total: int) -> int:
        return in_flight_limit(self.max_in_flight, total)

    @property
    def health(self) -> HealthCheck | None:
        return HealthCheck.from_json(self.health_check) if self.health_check else None

    @property
    def rolls_back(self) -> bool:
        return self.on_unhealthy == "rollback" and self.health_check is not None

    @property
    def spread_rules(self) -> list[SpreadRule]:
        return [SpreadRule(str(r["by"]), r["max_in_flight"]) for r in self.spread or ()]

    @property
    def domain_waves(self) -> DomainWaves | None:
        if not self.waves_by:
            return None
        return DomainWaves(str(self.waves_by["by"]), tuple(self.waves_by.get("order") or ()))

    @property
    def window_list(self) -> list[Window]:
        return [window_from_json(w) for w in self.windows or ()]

    @property
    def domain_kinds(self) -> list[str]:
        """The kinds of failure domain the policy reads, each once, in the order named."""
        kinds = [rule.by for rule in self.spread_rules]
        if self.domain_waves is not None:
            kinds.append(self.domain_waves.by)
        return list(dict.fromkeys(kinds))

    @property
    def backup_retention_s(self) -> float | None:
        """How long backup images are kept; None: no backup is taken."""
        if not self.backup:
            return None
        return float(self.backup.get("retention_s", DEFAULT_BACKUP_RETENTION_S))


DEFAULT_POLICY = RolloutPolicy()


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
