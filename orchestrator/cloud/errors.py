"""The cloud's errors: both body shapes parsed, classified by code first and HTTP status second."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# Classified by code, because the docs warn that HTTP statuses "may not be accurate".
RETRYABLE_CODES = frozenset(
    {
        "APIGW.0308",
        "APIG.0308",
        "Common.1503",
        "Common.0024",
        "Ecs.0603",
        "Common.0001",
        "Ecs.0615",
        "IMG.0060",  # IMS task flow control
        "IMG.0010",  # IMS: the server has tasks in progress
        # IMS refuses to delete an image still being created: it can be once its job ends.
        # Every other IMG.* refusal (quota IMG.0015, name IMG.0009, bad body...) is a 400 and
        # falls to Rejected below: the same call sent again, unchanged, is refused again.
        "IMG.0090",
    }
)
# Retryable answers that prove the cloud refused before acting: the gateway's and the
# service's flow control, "busy", and a connection that was never made. Any other retryable
# answer to a changeos (a 5xx system error) may come after the change was accepted.
REFUSED_BEFORE_ACTING_CODES = frozenset(
    {
        "APIGW.0308",
        "APIG.0308",
        "Common.1503",
        "Common.0024",
        "Ecs.0603",
        "IMG.0060",
        "IMG.0010",
        "IMG.0090",
        "Connection.Failed",
    }
)
CONFIG_CODES = frozenset(
    {
        "APIGW.0301",
        "APIGW.0303",
        "APIG.0301",
        "APIG.0303",
        "Common.0013",
        "Pdp.0001",
        "Ecs.0023",
        "Common.0018",
    }
)
JOB_GONE_CODES = frozenset({"Common.0011"})
# Known to be permanent for the server, whatever HTTP status carries them.
REJECTED_CODES = frozenset(
    {
        "Ecs.0100",
        "Ecs.0005",
        "Ecs.0007",  # image-related attributes invalid for the server (flavor or image)
        "Ecs.0011",
        "Ecs.0031",
        "Ecs.0032",
        "Ecs.0090",
        "Ecs.0105",
        "Ecs.0114",
        "Ecs.0202",
        "Ecs.0314",
        "Ecs.0510",
        "Ecs.0605",
        "Ecs.0614",
    }
)


@dataclass
class EcsError(Exception):
    """Base of every error the ECS client raises."""

    code: str
    message: str
    http_status: int | None = None
    request_id: str | None = None
    details: list[dict[str, Any]] = field(default_factory=list)

    def __str__(self) -> str:
        status = f"HTTP {self.http_status} " if self.http_status is not None else ""
        return f"{status}{self.code}: {self.message}"

    def as_details(self) -> dict[str, Any]:
        """What history rows keep of this error (never a secret: only the cloud's answer)."""
        return {
            "error_class": type(self).__name__,
            "code": self.code,
            "message": self.message,
            "http_status": self.http_status,
            "request_id": self.request_id,
            "details": self.details,
        }


@dataclass
class Retryable(EcsError):
    """Throttled, busy or a transient fault: nothing was applied; try the same attempt later."""

    retry_after_s: float | None = None


@dataclass
class Rejected(EcsError):
    """Permanent for this server (bad image, wrong state, locked, not found...)."""


@dataclass
class JobGone(Rejected):
    """The job id is unknown or was purged (`Common.0011`): reconcile from the server."""


@dataclass
class ConfigError(EcsError):
    """Credentials, token, project or IAM policy: stop the batch, do not burn the fleet."""


@dataclass
class OutcomeUnknown(EcsError):
    """A request was sent and no answer came back: it may or may not have been applied."""


def parse_error_body(body: bytes) -> tuple[str | None, str, list[dict[str, Any]]]:
    """(code, message, details) from the ECS/IMS/EVS shape, the API gateway's flat shape, or
    OpenStack's wrapped one."""
    try:
        data = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        text = body[:300].decode("utf-8", "replace") if body else ""
        return None, text, []
    nested = data.get("error")
    if isinstance(nested, dict):
        details = nested.get("details")
        return (
            _str_or_none(nested.get("code")),
            str(nested.get("message") or ""),
            [d for d in details if isinstance(d, dict)] if isinstance(details, list) else [],
        )
    if "error_code" in data:
        return _str_or_none(data.get("error_code")), str(data.get("error_msg") or ""), []
    # OpenStack's shape, which EVS also answers: {"itemNotFound": {"code": 404, "message": ...}}
    if len(data) == 1:
        (wrapped,) = data.values()
        if isinstance(wrapped, dict) and "message" in wrapped:
            code = wrapped.get("code")
            return (code if isinstance(code, str) and code else None), str(wrapped["message"]), []
    return None, "", []


def _str_or_none(value: object) -> str | None:
    return str(value) if value not in (None, "") else None


def classify(
    http_status: int,
    body: bytes,
    *,
    request_id: str | None = None,
    retry_after: str | None = None,
) -> EcsError:
    """The typed error for an answer that was not a success."""
    code, message, details = parse_error_body(body)
    kwargs: dict[str, Any] = {
        "code": code or f"HTTP.{http_status}",
        "message": message or f"HTTP {http_status}",
        "http_status": http_status,
        "request_id": request_id,
        "details": details,
    }
    if code in RETRYABLE_CODES:
        return Retryable(**kwargs, retry_after_s=parse_retry_after(retry_after))
    if code in CONFIG_CODES:
        return ConfigError(**kwargs)
    if code in JOB_GONE_CODES:
        return JobGone(**kwargs)
    if code in REJECTED_CODES:
        return Rejected(**kwargs)
    if http_status == 429 or http_status >= 500:
        return Retryable(**kwargs, retry_after_s=parse_retry_after(retry_after))
    if http_status in (401, 403):
        return ConfigError(**kwargs)
    return Rejected(**kwargs)


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(0.0, min(seconds, 3600.0))


def refused_before_acting(error: Retryable) -> bool:
    """Whether this retryable answer proves that nothing was applied (see the codes above)."""
    return error.code in REFUSED_BEFORE_ACTING_CODES or error.http_status == 429
