"""Webhook rules: what an answer means, how long to wait, which hosts, the signed bytes."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from orchestrator.domain.webhooks import (
    Verdict,
    canonical_body,
    host_allowed,
    retry_delay_s,
    signature,
    url_problem,
    verdict_for,
)


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.DELIVERED),
        (204, Verdict.DELIVERED),
        (None, Verdict.RETRY),
        (408, Verdict.RETRY),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (503, Verdict.RETRY),
        (301, Verdict.REJECTED),
        (400, Verdict.REJECTED),
        (401, Verdict.REJECTED),
        (404, Verdict.REJECTED),
        (410, Verdict.REJECTED),
    ],
)
def test_verdicts(status: int | None, verdict: Verdict) -> None:
    assert verdict_for(status) is verdict


def test_backoff_doubles_from_five_seconds_to_a_ten_minute_cap() -> None:
    longest = [retry_delay_s(n, lambda ceiling: ceiling) for n in range(1, 10)]
    assert longest == [5, 10, 20, 40, 80, 160, 320, 600, 600]
    assert retry_delay_s(3, lambda ceiling: 0.0) == 0.0
    assert all(0 <= retry_delay_s(4) <= 40 for _ in range(200))


@pytest.mark.parametrize(
    ("url", "patterns", "allowed"),
    [
        ("https://hooks.example.com/x", [], True),
        ("https://hooks.example.com/x", ["hooks.example.com"], True),
        ("https://HOOKS.example.com./x", ["hooks.example.com"], True),
        ("https://evil.example.com/x", ["hooks.example.com"], False),
        ("https://a.b.example.com/x", ["*.example.com"], True),
        ("https://example.com/x", ["*.example.com"], False),
        ("https://badexample.com/x", ["*.example.com"], False),
        ("http://127.0.0.1:8080/x", ["localhost"], False),
        ("http://127.0.0.1:8080/x", ["127.0.0.1"], True),
    ],
)
def test_allowlist(url: str, patterns: list[str], allowed: bool) -> None:
    assert host_allowed(url, patterns) is allowed


def test_url_problems() -> None:
    assert url_problem("https://hooks.example.com/a?b=c") is None
    assert url_problem("ftp://hooks.example.com/") == "invalid URL"
    assert url_problem("http://hooks.example.com:99999/") == "invalid URL"
    assert url_problem("http:///path") == "invalid URL"


def test_the_signature_covers_timestamp_and_body() -> None:
    body = canonical_body({"b": 1, "a": "é"})
    assert body == '{"a":"é","b":1}'.encode()
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature(b"k", 1700000000, body) == f"sha256={expected}"
    assert signature(b"k", 1700000001, body) != signature(b"k", 1700000000, body)
