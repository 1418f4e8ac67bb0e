"""The health gate after a change of OS (issue 14): where a server is probed, and what its
probes so far say. Pure: the caller brings the clock's readings and the probes' results.

A job that ends SUCCESS says only that the cloud attached a new system disk; keys and
passwords are still being injected for minutes afterwards (fleet-safety-api.md section 11).
So a server is probed only after `initial_delay_s`, every `interval_s`, and counts as healthy
after `successes` healthy probes in a row; not healthy by `deadline_s` (counted, like the
delay, from the job's end) is a failure. The shape is Argo Rollouts' analysis runs (initial
delay, interval, count, failure limit) and AWS Instance Refresh's warm-up.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urlsplit

PLACEHOLDERS = ("ip", "floating_ip", "server_id", "name")
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


class ProbeKind(StrEnum):
    HTTP = "http"  # GET; a 2xx answer is healthy
    TCP = "tcp"  # a connection that opens is healthy


@dataclass(frozen=True)
class HealthCheck:
    kind: ProbeKind
    target: str  # a URL template (http) or "host:port" template (tcp)
    initial_delay_s: float = 120.0
    interval_s: float = 10.0
    timeout_s: float = 5.0
    successes: int = 1
    deadline_s: float = 900.0

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HealthCheck:
        """The stored policy form: `{"http": "..."}` or `{"tcp": "..."}` plus the timings."""
        kind = ProbeKind.HTTP if data.get("http") else ProbeKind.TCP
        return cls(
            kind=kind,
            target=str(data[kind.value]),
            initial_delay_s=float(data.get("initial_delay_s", 120.0)),
            interval_s=float(data.get("interval_s", 10.0)),
            timeout_s=float(data.get("timeout_s", 5.0)),
            successes=int(data.get("successes", 1)),
            deadline_s=float(data.get("deadline_s", 900.0)),
        )


@dataclass(frozen=True)
class ProbeTarget:
    """What a template may name of the server."""

    server_id: str
    name: str
    ip: str | None  # the first fixed IPv4
    floating_ip: str | None


class TargetError(ValueError):
    """A template that cannot be expanded for this server, or names a host it may not."""


def template_problem(kind: ProbeKind, template: str) -> str | None:
    """Why a template is unusable whatever the server (None: it is fine). Checked when the
    batch is submitted, so a typo is a 400, not a failed fleet."""
    unknown = sorted(set(_PLACEHOLDER.findall(template)) - set(PLACEHOLDERS))
    if unknown:
        return f"unknown placeholder(s) {unknown}; known: {list(PLACEHOLDERS)}"
    sample = _PLACEHOLDER.sub("placeholder", template)
    if kind is ProbeKind.HTTP:
        parts = urlsplit(sample)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return "must be an http:// or https:// URL"
        if parts.username or parts.password:
            return "must not contain credentials"
        return None
    host, _, port = sample.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return 'must be "host:port" with a port from 1 to 65535'
    return None


def fixed_host_problem(kind: ProbeKind, template: str, allowed_hosts: Sequence[str]) -> str | None:
    """A template whose host is written out (no placeholder) must name an allowed host: caught
    at submission, not at the first probe of every server."""
    marker = "placeholder-0"
    host = _host(kind, _PLACEHOLDER.sub(marker, template))
    if marker in host:
        return None  # the server's own address or name: checked per server when expanded
    if any(fnmatchcase(host, pattern) for pattern in allowed_hosts):
        return None
    return f"host {host} is neither the server's (a placeholder) nor in ORCH_HEALTH_ALLOWED_HOSTS"


def expand(
    kind: ProbeKind, template: str, server: ProbeTarget, allowed_hosts: Sequence[str]
) -> str:
    """The template for this server. The host must come from a placeholder (the server's own
    address or name) or be one of `allowed_hosts` (exact names or "*.example.com"): a probe
    is never a way to reach an arbitrary address. Raises `TargetError`."""
    values = {
        "ip": server.ip,
        "floating_ip": server.floating_ip,
        "server_id": server.server_id,
        "name": server.name,
    }

    def value(match: re.Match[str]) -> str:
        found = values.get(match.group(1))
        if not found:
            raise TargetError(f"the server has no {match.group(1)}")
        return found

    expanded = _PLACEHOLDER.sub(value, template)
    host = _host(kind, expanded)
    own = {v for v in values.values() if v}
    if host not in own and not any(fnmatchcase(host, pattern) for pattern in allowed_hosts):
        raise TargetError(f"host {host} is neither the server's nor in ORCH_HEALTH_ALLOWED_HOSTS")
    return expanded


def _host(kind: ProbeKind, expanded: str) -> str:
    if kind is ProbeKind.HTTP:
        host = urlsplit(expanded).hostname or ""
    else:
        host = expanded.rpartition(":")[0].strip("[]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.lower()


@dataclass(frozen=True)
class Probe:
    """One probe's outcome: `at` in seconds on the caller's clock."""

    at: float
    healthy: bool
    detail: str  # an HTTP status, or the error, for the history
    duration_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "healthy": self.healthy,
            "detail": self.detail,
            "duration_s": round(self.duration_s, 4),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Probe:
        return cls(
            at=float(data["at"]),
            healthy=bool(data["healthy"]),
            detail=str(data.get("detail") or ""),
            duration_s=float(data.get("duration_s") or 0.0),
        )


@dataclass(frozen=True)
class ProbeLog:
    """What the probes of one server have said so far: all a verdict needs, kept in the
    server's row (not one row per probe: a 15-minute deadline at 10 s is 90 probes)."""

    count: int = 0
    streak: int = 0  # healthy probes in a row, up to the last one
    healthy_count: int = 0
    last: Probe | None = None
    first_healthy_at: float | None = None

    def after(self, probe: Probe) -> ProbeLog:
        return ProbeLog(
            count=self.count + 1,
            streak=self.streak + 1 if probe.healthy else 0,
            healthy_count=self.healthy_count + (1 if probe.healthy else 0),
            last=probe,
            first_healthy_at=(
                self.first_healthy_at
                if self.first_healthy_at is not None or not probe.healthy
                else probe.at
            ),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "streak": self.streak,
            "healthy_count": self.healthy_count,
            "last": self.last.as_dict() if self.last else None,
            "first_healthy_at": self.first_healthy_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ProbeLog:
        if not data:
            return cls()
        last = data.get("last")
        first = data.get("first_healthy_at")
        return cls(
            count=int(data.get("count") or 0),
            streak=int(data.get("streak") or 0),
            healthy_count=int(data.get("healthy_count") or 0),
            last=Probe.from_dict(last) if isinstance(last, Mapping) else None,
            first_healthy_at=float(first) if first is not None else None,
        )

    @classmethod
    def of(cls, probes: Sequence[Probe]) -> ProbeLog:
        log = cls()
        for probe in probes:
            log = log.after(probe)
        return log


class Health(StrEnum):
    WARMING_UP = "warming_up"  # before initial_delay_s: no probe yet
    PROBE_DUE = "probe_due"  # a probe is due at `next_probe_at`
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"  # the deadline passed without enough healthy probes in a row


@dataclass(frozen=True)
class HealthVerdict:
    health: Health
    next_probe_at: float | None  # when the next probe is due (None: none is)
    streak: int  # healthy probes in a row, latest last


def health_verdict(
    check: HealthCheck, *, ended_at: float, now: float, probes: ProbeLog | Sequence[Probe]
) -> HealthVerdict:
    """What the probes so far say of a server whose job ended at `ended_at`.

    Enough healthy probes in a row win even when the look comes after the deadline: a probe
    that was taken in time is not thrown away because its result was read late."""
    log = probes if isinstance(probes, ProbeLog) else ProbeLog.of(probes)
    streak = log.streak
    deadline = ended_at + check.deadline_s
    if streak >= check.successes:
        return HealthVerdict(Health.HEALTHY, None, streak)
    if now >= deadline:
        return HealthVerdict(Health.UNHEALTHY, None, streak)
    first_due = ended_at + check.initial_delay_s
    if now < first_due:
        return HealthVerdict(Health.WARMING_UP, min(first_due, deadline), streak)
    next_due = max(first_due, log.last.at + check.interval_s) if log.last else first_due
    # Due at the deadline at the latest: the look then finds it passed.
    return HealthVerdict(Health.PROBE_DUE, min(next_due, deadline), streak)


class AfterChange(StrEnum):
    """Where a server goes once the cloud shows its change applied (job SUCCESS, or a
    reconcile that found it on the target image, ACTIVE or not, not in ERROR)."""

    SUCCEEDED = "succeeded"  # no health gate: done
    VERIFY = "verify"  # the health gate probes it first
    ROLLED_BACK = "rolled_back"  # it was a rollback: back on its previous image, ends failed


def after_change(*, phase: str, gated: bool) -> AfterChange:
    """The one rule, for every path that sees a change applied (the poll, the reconcile)."""
    if phase == "rollback":
        return AfterChange.ROLLED_BACK
    return AfterChange.VERIFY if gated else AfterChange.SUCCEEDED


class Unhealthy(StrEnum):
    """What is done with a server that failed its health gate."""

    KEEP = "keep"  # it ends failed where it is
    ROLL_BACK = "roll_back"  # changed back to its previous image first
    NOWHERE_TO_GO = "nowhere_to_go"  # rollback asked, but no previous image is recorded


def when_unhealthy(*, on_unhealthy: str, rollback_image: str | None) -> Unhealthy:
    if on_unhealthy != "rollback":
        return Unhealthy.KEEP
    return Unhealthy.ROLL_BACK if rollback_image else Unhealthy.NOWHERE_TO_GO
