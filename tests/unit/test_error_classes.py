"""Both error body shapes parse, and every code lands in its class (code first, status second)."""

from __future__ import annotations

import json

import pytest

from orchestrator.cloud.errors import (
    ConfigError,
    EcsError,
    JobGone,
    Rejected,
    Retryable,
    classify,
    parse_error_body,
)


def ecs_body(code: str) -> bytes:
    return json.dumps(
        {
            "error": {
                "code": code,
                "message": f"msg {code}",
                "details": [{"code": code, "message": "d"}],
            }
        }
    ).encode()


def gateway_body(code: str) -> bytes:
    return json.dumps({"error_code": code, "error_msg": f"msg {code}", "request_id": "r1"}).encode()


def test_both_shapes_parse() -> None:
    assert parse_error_body(ecs_body("Ecs.0100")) == (
        "Ecs.0100",
        "msg Ecs.0100",
        [{"code": "Ecs.0100", "message": "d"}],
    )
    assert parse_error_body(gateway_body("APIGW.0308")) == ("APIGW.0308", "msg APIGW.0308", [])
    assert parse_error_body(b"<html>bad gateway</html>") == (None, "<html>bad gateway</html>", [])
    assert parse_error_body(b"") == (None, "", [])


CASES: list[tuple[int, str, type[EcsError]]] = [
    (429, "APIGW.0308", Retryable), (429, "APIG.0308", Retryable),
    (503, "Common.1503", Retryable), (429, "Common.1503", Retryable),
    (202, "Common.0024", Retryable), (501, "Ecs.0603", Retryable),
    (500, "Common.0001", Retryable), (500, "Ecs.0615", Retryable),
    (400, "Ecs.0100", Rejected), (400, "Ecs.0005", Rejected), (400, "Ecs.0011", Rejected),
    (400, "Ecs.0031", Rejected), (400, "Ecs.0032", Rejected), (400, "Ecs.0090", Rejected),
    (400, "Ecs.0105", Rejected), (400, "Ecs.0314", Rejected), (400, "Ecs.0510", Rejected),
    (400, "Ecs.0605", Rejected), (400, "Ecs.0202", Rejected),
    (404, "Ecs.0114", Rejected), (404, "Ecs.0614", Rejected),
    (400, "Common.0011", JobGone),
    (400, "Ecs.0023", ConfigError), (400, "Common.0018", ConfigError),
    (401, "APIGW.0301", ConfigError), (401, "APIGW.0303", ConfigError),
    (401, "Common.0013", ConfigError), (403, "Pdp.0001", ConfigError),
    # unknown codes fall back on the status
    (429, "Weird.1", Retryable), (502, "Weird.2", Retryable), (401, "Weird.3", ConfigError),
    (403, "Weird.4", ConfigError), (409, "Weird.5", Rejected),
    # a misleading status does not override a known code
    (400, "APIGW.0308", Retryable), (500, "Ecs.0114", Rejected),
]  # fmt: skip


@pytest.mark.parametrize(("status", "code", "cls"), CASES)
def test_classification(status: int, code: str, cls: type[EcsError]) -> None:
    for body in (ecs_body(code), gateway_body(code)):
        error = classify(status, body, request_id="req-1")
        assert type(error) is cls
        assert error.code == code
        assert error.http_status == status
        assert error.request_id == "req-1"
        assert error.message == f"msg {code}"


def test_retry_after_is_kept_and_bodyless_errors_get_a_code() -> None:
    error = classify(429, gateway_body("APIGW.0308"), retry_after="7")
    assert isinstance(error, Retryable) and error.retry_after_s == 7.0
    bare = classify(503, b"")
    assert isinstance(bare, Retryable) and bare.code == "HTTP.503"
    assert classify(418, b"teapot").code == "HTTP.418"
