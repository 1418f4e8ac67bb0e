"""Misbehaviour on purpose: the gateway's token bucket, the seeded draws that decide which call
or job meets which fault, the errors those faults answer, and the run-time fault settings that
`POST /_sim/faults` changes (besides the API faults: images that boot broken, boot time, how
long and how reliably images are made from servers, the private image quota).

A draw hashes (seed, fault, what the call is about, its attempt number), never a shared random
stream, so concurrent clients interleaving differently still meet the same faults per server.
"""

from __future__ import annotations

import math
from typing import Any

from orchestrator.simulator.config import SimulatorConfig
from orchestrator.simulator.replies import ApiError, ecs_error, gateway_error
from orchestrator.simulator.shared import JsonObject, is_uuid, unit_hash

# The config fields `POST /_sim/faults` may change while the simulator runs.
FAULT_FIELDS = (
    "job_seconds",
    "fail_ratio",
    "rate_limit",
    "burst",
    "retry_after",
    "transient_error_ratio",
    "flow_control_ratio",
    "drop_ratio",
    "drop_failing_ratio",
    "slow_ratio",
    "slow_seconds",
    "stuck_ratio",
    "job_ttl",
    "error_after_success_ratio",
    "job_seconds_spread",
    "broken_images",
    "boot_seconds",
    "backup_seconds",
    "backup_fail_ratio",
    "image_quota",
)
_NULLABLE = frozenset({"rate_limit", "burst", "retry_after", "job_ttl"})
_INTEGERS = frozenset({"burst", "image_quota"})
_IMAGE_SETS = frozenset({"broken_images"})


class FaultDraws:
    """Whether a fault hits: a stable hash of the seed, the fault and the call's key."""

    def __init__(self, seed: int) -> None:
        self._seed = seed

    def unit(self, fault: str, *key: object) -> float:
        return unit_hash(self._seed, fault, *key)

    def hits(self, fault: str, ratio: float, *key: object) -> bool:
        return ratio > 0 and self.unit(fault, *key) < ratio


class TokenBucket:
    """The API gateway's throttle over every API call: `rate` tokens a second, `size` at most."""

    def __init__(self, rate: float | None, size: int) -> None:
        self.rate = rate
        self.size = size
        self._tokens = float(size)
        self._refilled_at: float | None = None

    def configure(self, rate: float | None, size: int) -> None:
        """New settings at run time; a bucket that was off starts full."""
        self._tokens = float(size) if self.rate is None else min(self._tokens, size)
        self.rate, self.size = rate, size

    def take(self, now: float) -> bool:
        if self.rate is None:
            return True
        if self._refilled_at is not None:
            elapsed = max(0.0, now - self._refilled_at)
            self._tokens = min(self.size, self._tokens + elapsed * self.rate)
        self._refilled_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


def throttled(rate: float, retry_after: float | None) -> ApiError:
    return gateway_error(
        429,
        "APIGW.0308",
        "The throttling threshold has been reached: policy user over ratelimit,"
        f"limit:{rate:g},time:1 second",
        retry_after=retry_after,
    )


def transient_error(ordinal: int) -> ApiError:
    """The `ordinal`-th transient fault: system errors and flow control, in turn."""
    if ordinal % 2 == 0:
        return ecs_error("Ecs.0615", "System error. Try again later.", status=500)
    return ecs_error("Common.1503", "Flow control: the service is busy.", status=503)


def flow_control_error() -> ApiError:
    # A 202, as the cloud really sends it: a client that trusts the status sees a success.
    return ApiError(
        status=202, code="Common.0024", message="exceeds flow over limit", with_details=False
    )


def fault_settings(config: SimulatorConfig) -> JsonObject:
    settings = {name: getattr(config, name) for name in FAULT_FIELDS}
    for name in _IMAGE_SETS:
        settings[name] = sorted(settings[name])  # JSON has no sets
    return settings


def parse_fault_changes(payload: object) -> dict[str, Any]:
    """The settings a `POST /_sim/faults` body changes, typed; ValueError when one is wrong.

    `rate_limit` null or 0 turns throttling off (and drops `burst` unless it is also given);
    `retry_after` null drops the header; `job_ttl` null stops purging; `broken_images` is a list
    of image ids (`[]`: none).
    """
    if not isinstance(payload, dict):
        raise ValueError("expected a JSON object of fault settings")
    unknown = sorted(set(payload) - set(FAULT_FIELDS))
    if unknown:
        raise ValueError(f"unknown fault settings {unknown}; known: {list(FAULT_FIELDS)}")
    changes = {name: _setting(name, value) for name, value in payload.items()}
    if changes.get("rate_limit", 1) == 0:
        changes["rate_limit"] = None
    if "rate_limit" in changes and changes["rate_limit"] is None:
        changes.setdefault("burst", None)
    return changes


def _setting(name: str, value: object) -> float | int | frozenset[str] | None:
    if name in _IMAGE_SETS:
        return _image_ids(name, value)
    if value is None:
        if name not in _NULLABLE:
            raise ValueError(f"{name} cannot be null")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number")
    if name in _INTEGERS:
        if value != int(value):
            raise ValueError(f"{name} must be an integer")
        return int(value)
    return float(value)


def _image_ids(name: str, value: object) -> frozenset[str]:
    if not isinstance(value, list) or not all(is_uuid(image) for image in value):
        raise ValueError(f"{name} must be a list of image UUIDs")
    return frozenset(str(image).lower() for image in value)
