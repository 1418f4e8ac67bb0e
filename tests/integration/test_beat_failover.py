"""Two `reimage beat` processes: one leads, one waits; kill the leader and the standby ticks."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import redis

from tests.integration.stack import ProcessStack

pytestmark = pytest.mark.e2e


def holder(client: redis.Redis) -> str:
    value = client.get("reimage:beat-leader")
    return value.decode() if value else ""


def test_standby_beat_takes_over_when_the_leader_dies(tmp_path: Path, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "ORCH_REDIS_URL": redis_url,
        "ORCH_TICK_SECONDS": "0.5",
    }
    stack = ProcessStack(tmp_path, env)
    try:
        stack.start("beat-a", "beat")
        deadline = time.monotonic() + 20
        while str(stack.processes["beat-a"].pid) not in holder(client):
            assert time.monotonic() < deadline, stack.log_tail("beat-a")
            time.sleep(0.2)
        stack.start("beat-b", "beat")
        time.sleep(3)
        assert str(stack.processes["beat-a"].pid) in holder(client)  # b waits as a standby
        assert "standby" in stack.log_tail("beat-b")
        sent_before = client.llen("reimage.tick")
        assert sent_before > 0
        stack.kill("beat-a", signal.SIGKILL)
        taken_over = time.monotonic()
        while str(stack.processes["beat-b"].pid) not in holder(client):
            assert time.monotonic() - taken_over < 15, stack.log_tail("beat-b")
            time.sleep(0.2)
        queued = client.llen("reimage.tick")
        time.sleep(2)
        assert client.llen("reimage.tick") > queued  # the new leader ticks
    finally:
        stack.stop_all()
