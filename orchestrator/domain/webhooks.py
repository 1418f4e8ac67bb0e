"""Webhook rules without I/O: the signed body, what an answer means, when to try again, and
which hosts a notify URL may reach."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

BACKOFF_BASE_S = 5.0
BACKOFF_CAP_S = 600.0


class Verdict(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    # The receiver (or our allowlist) refused it: trying again would give the same answer.
    REJECTED = "rejected"


def canonical_body(payload: dict[str, Any]) -> bytes:
    """One byte string per payload (sorted keys, no spaces): what is sent and what is signed."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signature(key: bytes, timestamp: int, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256(key, "<timestamp>.<body>")>`; the timestamp is signed too so a
    receiver can refuse replays of an old delivery."""
    digest = hmac.new(key, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verdict_for(status: int | None) -> Verdict:
    """2xx delivered; 408, 429, 5xx and no answer at all (timeout, refused) are worth another
    try; any other answer (3xx: redirects are not followed, 4xx) is the receiver's refusal."""
    if status is None:
        return Verdict.RETRY
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if status in (408, 429) or status >= 500:
        return Verdict.RETRY
    return Verdict.REJECTED


def full_jitter(ceiling: float) -> float:
    return random.uniform(0.0, ceiling)


def retry_delay_s(attempt: int, jitter: Callable[[float], float] = full_jitter) -> float:
    """Exponential backoff with full jitter after the `attempt`-th failed try (1-based):
    a random wait up to 5 s, 10 s, 20 s ... capped at 10 minutes."""
    ceiling: float = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0 ** max(0, attempt - 1))
    return max(0.0, min(ceiling, jitter(ceiling)))


def url_problem(url: str) -> str | None:
    """Why `url` cannot be sent to at all (checked again at every send), or None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError:
        return "invalid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "invalid URL"
    return None


def host_allowed(url: str, patterns: Iterable[str]) -> bool:
    """Whether `url`'s host is one of `patterns` (exact names, or `*.suffix` for any name
    under suffix); no patterns: any host."""
    wanted = [p.strip().lower().rstrip(".") for p in patterns if p.strip()]
    if not wanted:
        return True
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    if not host:
        return False
    for pattern in wanted:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False
