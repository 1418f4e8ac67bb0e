"""JSON log lines: the fields, the ids from context or `extra=`, and secrets redacted."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from orchestrator.config import Settings
from orchestrator.observability.logs import REDACTED, configure_logging, log_context

AK, SK = "LOGTESTACCESSKEY0001", "log-test-secret-key-0123456789abcdef"
API_TOKEN = "api-token-for-the-log-test-0001"
SECRET_KEY = "orch-secret-key-for-the-log-test"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """Our handler on the root logger for the test, the previous handlers back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    settings = Settings(
        HUAWEICLOUD_SDK_AK=AK,
        HUAWEICLOUD_SDK_SK=SK,
        ORCH_API_TOKEN=API_TOKEN,
        ORCH_SECRET_KEY=SECRET_KEY,
        ORCH_LOG_FORMAT="json",
        ORCH_LOG_LEVEL="INFO",
    )
    configure_logging(settings, stream=out)
    try:
        yield out
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_one_json_object_per_line_with_the_fields(stream: io.StringIO) -> None:
    logging.getLogger("reimage.test").info("hello %s", "world", extra={"code": "Ecs.0202"})
    logging.getLogger("reimage.test").debug("below the level")
    (entry,) = lines(stream)
    assert entry["msg"] == "hello world"
    assert entry["level"] == "INFO"
    assert entry["logger"] == "reimage.test"
    assert isinstance(entry["process"], int)
    assert entry["code"] == "Ecs.0202"
    moment = datetime.fromisoformat(entry["ts"])
    offset = moment.utcoffset()
    assert offset is not None and offset.total_seconds() == 0
    assert "batch_id" not in entry and "exc" not in entry


def test_ids_come_from_the_context_and_extra_wins(stream: io.StringIO) -> None:
    log = logging.getLogger("reimage.test")
    with log_context(batch_id="b-1", server_id="s-1"):
        log.info("inside")
        with log_context(job_id="j-1"):
            log.info("deeper")
        log.info("job from extra", extra={"job_id": "j-2", "server_id": "s-2"})
    log.info("outside")
    inside, deeper, extra, outside = lines(stream)
    assert (inside["batch_id"], inside["server_id"]) == ("b-1", "s-1") and "job_id" not in inside
    assert (deeper["batch_id"], deeper["server_id"], deeper["job_id"]) == ("b-1", "s-1", "j-1")
    assert (extra["server_id"], extra["job_id"]) == ("s-2", "j-2")
    assert not {"batch_id", "server_id", "job_id"} & set(outside)


def test_secrets_and_credential_headers_are_redacted(stream: io.StringIO) -> None:
    log = logging.getLogger("reimage.test")
    log.warning("signed with %s and %s", AK, SK)
    log.warning("token %s, key %s", API_TOKEN, SECRET_KEY)
    log.warning("headers {'Authorization': 'SDK-HMAC-SHA256 Access=X, Signature=abc'}")
    log.warning("X-Auth-Token: MIIEtoken.value\nnext line")
    log.info("task received", extra={"data": {"args": [f"ak={AK}"], "kwargs": {"sk": SK}}})
    text = stream.getvalue()
    for secret in (AK, SK, API_TOKEN, SECRET_KEY, "Signature=abc", "MIIEtoken"):
        assert secret not in text
    first, second, third, fourth, fifth = lines(stream)
    assert first["msg"] == f"signed with {REDACTED} and {REDACTED}"
    assert second["msg"] == f"token {REDACTED}, key {REDACTED}"
    assert third["msg"] == f"headers {{'Authorization': '{REDACTED}'}}"
    assert fourth["msg"] == f"X-Auth-Token: {REDACTED}\nnext line"
    assert fifth["data"] == {"args": [f"ak={REDACTED}"], "kwargs": {"sk": REDACTED}}


def test_an_exception_is_formatted_and_redacted(stream: io.StringIO) -> None:
    try:
        raise RuntimeError(f"the cloud refused secret key {SK}")
    except RuntimeError:
        logging.getLogger("reimage.test").exception("call failed")
    (entry,) = lines(stream)
    assert entry["msg"] == "call failed"
    assert entry["level"] == "ERROR"
    assert "Traceback (most recent call last)" in entry["exc"]
    assert f"RuntimeError: the cloud refused secret key {REDACTED}" in entry["exc"]
    assert SK not in stream.getvalue()


def test_text_format_for_people(stream: io.StringIO) -> None:
    out = io.StringIO()
    configure_logging(Settings(HUAWEICLOUD_SDK_SK=SK), log_format="text", stream=out)
    with log_context(batch_id="b-9"):
        logging.getLogger("reimage.test").info("plain %s", SK)
    line = out.getvalue().strip()
    assert line.endswith(f"INFO reimage.test plain {REDACTED} [batch_id=b-9]")
    assert SK not in line
