"""Flower, the Celery monitor, works against our Celery app with the documented command:
`celery -A workers flower` sees the workers that `reimage worker` starts and their queues."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.integration.stack import ProcessStack, free_port

# Flower's API refuses anonymous callers; the documented command sets basic auth.
BASIC = "Basic " + base64.b64encode(b"ops:flower-test-pass").decode()


def _get(url: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": BASIC})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_flower_lists_our_workers_and_queues(tmp_path: Path, redis_url: str) -> None:
    database = f"sqlite:///{tmp_path / 'reimage.db'}"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "ORCH_DATABASE_URL": database,
        "ORCH_REDIS_URL": redis_url,
        "NO_PROXY": "127.0.0.1",
    }
    stack = ProcessStack(tmp_path, env)
    port = free_port()
    celery = str(Path(sys.executable).parent / "celery")
    try:
        subprocess.run(
            [sys.executable, "-m", "orchestrator", "migrate"],
            env=env,
            check=True,
            capture_output=True,
        )
        stack.start("worker", "worker", "--concurrency", "1", "--loglevel", "WARNING")
        log = (tmp_path / "flower.log").open("ab")
        flower = subprocess.Popen(
            [
                celery,
                "-A",
                "workers",
                "flower",
                f"--port={port}",
                "--address=127.0.0.1",
                "--basic-auth=ops:flower-test-pass",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        workers: dict[str, Any] = {}
        while time.monotonic() < deadline:
            assert flower.poll() is None, (tmp_path / "flower.log").read_text()[-2000:]
            try:
                workers = _get(f"http://127.0.0.1:{port}/api/workers?refresh=1")
            except (urllib.error.URLError, OSError, ValueError):
                workers = {}
            queues = {
                queue["name"]
                for info in workers.values()
                if isinstance(info, dict)
                for queue in info.get("active_queues") or []
            }
            if {"reimage.submit", "reimage.poll", "reimage.tick"} <= queues:
                break
            time.sleep(1)
        else:
            raise AssertionError(f"flower did not see our workers: {workers}")
        assert any(name.startswith("work@") for name in workers), sorted(workers)
        page = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Authorization": BASIC})
        with urllib.request.urlopen(page, timeout=10) as response:
            assert response.status == 200
        anonymous = urllib.request.Request(f"http://127.0.0.1:{port}/")
        try:
            urllib.request.urlopen(anonymous, timeout=10)
            raise AssertionError("flower answered without credentials")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
    finally:
        stack.stop_all()
        if "flower" in locals():
            flower.terminate()
            flower.wait(timeout=15)
