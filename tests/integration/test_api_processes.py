"""`reimage api --processes 2`: two API processes answer on one port, a child that dies is
replaced while the port keeps answering, and SIGTERM stops the keeper and every child."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from orchestrator.devstack.stack import free_port

pytestmark = pytest.mark.e2e
TOKEN = "processes-bootstrap-token-0123456789"


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry.name))
    return found


def answers(url: str) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return int(response.status)


def wait_for(condition: object, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_two_processes_share_the_port_and_are_kept(tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    database = f"sqlite:///{tmp_path / 'api.db'}"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "ORCH_DATABASE_URL": database,
        "ORCH_REDIS_URL": redis_url,
        "ORCH_API_TOKEN": TOKEN,
    }
    subprocess.run(
        [sys.executable, "-m", "orchestrator", "migrate"], env=env, check=True, capture_output=True
    )
    keeper = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "api", "--port", str(port), "--processes", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/api/v1/batches"
    try:

        def serving() -> bool:
            try:
                return answers(url) == 200
            except OSError:
                return False

        wait_for(lambda: len(children_of(keeper.pid)) == 2 and serving())
        first = children_of(keeper.pid)
        assert all(answers(url) == 200 for _ in range(40))
        # Each child accepts on a socket of its own: kill one, the other still answers, and
        # the keeper starts a third on the dead one's socket.
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        assert all(answers(url) == 200 for _ in range(40))
        wait_for(
            lambda: len(children_of(keeper.pid)) == 2 and victim not in children_of(keeper.pid)
        )
        replaced = children_of(keeper.pid)
        assert replaced - first and (first - {victim}) <= replaced
        assert all(answers(url) == 200 for _ in range(40))
        keeper.send_signal(signal.SIGTERM)
        assert keeper.wait(timeout=30) == 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in replaced)
    finally:
        if keeper.poll() is None:
            keeper.kill()
            keeper.wait()
