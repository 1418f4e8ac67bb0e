"""Real processes for end-to-end tests: simulator, API, workers and beat, each in its own group."""

from __future__ import annotations

import json
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from orchestrator.devstack.stack import Stack, free_port


class ProcessStack(Stack):
    """The dev stack's harness (`orchestrator.devstack.stack.Stack`) with one environment for
    every process it starts; `start(name, *args)` runs `python -m orchestrator ARGS`."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        super().__init__(directory)
        self.env = env

    def start(  # type: ignore[override]
        self, name: str, *args: str, extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        return super().start(name, list(args), {**self.env, **(extra_env or {})})

    def stop_all(self) -> None:
        self.stop()

    def assert_alive(self) -> None:
        for name, process in self.processes.items():
            assert process.poll() is None, f"{name} exited:\n{self.log_tail(name)}"


def _context(ca_file: str | Path | None) -> ssl.SSLContext | None:
    """Verification against `ca_file` (a TLS simulator's CA); None: urllib's own default."""
    return ssl.create_default_context(cafile=str(ca_file)) if ca_file is not None else None


def http(
    method: str,
    url: str,
    *,
    token: str | None = None,
    body: Any = None,
    timeout: float = 10,
    ca_file: str | Path | None = None,
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        context = _context(ca_file)
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def wait_until_http(
    url: str, stack: ProcessStack, timeout_s: float = 60, *, ca_file: str | Path | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stack.assert_alive()
        try:
            with urllib.request.urlopen(url, timeout=2, context=_context(ca_file)):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer in {timeout_s} s")


@dataclass
class FullStack:
    """Simulator, API, worker and beat on real processes, and where to reach them."""

    processes: ProcessStack
    api_url: str
    sim_url: str
    # The TLS simulator's CA certificate (`tls=True`), which every process trusts.
    ca_file: Path | None = None

    def sim(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """A control call to the simulator (`/_sim/...`), over HTTPS when it serves it."""
        return http(method, self.sim_url + path, body=body, ca_file=self.ca_file)


def start_full_stack(
    directory: Path,
    *,
    database_url: str,
    redis_url: str,
    token: str,
    ak: str,
    sk: str,
    project_id: str,
    simulator_args: list[str],
    extra_env: dict[str, str] | None = None,
    worker_concurrency: int = 4,
    loglevel: str = "WARNING",
    tls: bool = False,
    latency_ms: float = 0.0,
    worker_env: dict[str, str] | None = None,
) -> FullStack:
    """Start everything and wait until the simulator and the API answer.

    `tls`: the simulator serves HTTPS with a CA of its own (`--tls-dir`), which every process
    trusts through ORCH_ECS_CA_BUNDLE (the simulator starts first: its CA file must exist when
    the others check their settings); `latency_ms`: its `--latency-ms`; `worker_env`: the
    worker's environment on top of everyone's (an empty value unsets a setting)."""
    sim_port, api_port = free_port(), free_port()
    scheme = "https" if tls else "http"
    ca_file = directory / "sim-tls" / "ca.pem" if tls else None
    env = {
        "PATH": "/usr/bin:/bin:/usr/local/bin",
        "HOME": str(directory),
        "ORCH_DATABASE_URL": database_url,
        "ORCH_REDIS_URL": redis_url,
        "ORCH_ECS_ENDPOINT": f"{scheme}://127.0.0.1:{sim_port}",
        # The simulator serves IMS and EVS beside ECS, on the same port.
        "ORCH_IMS_ENDPOINT": f"{scheme}://127.0.0.1:{sim_port}",
        "ORCH_EVS_ENDPOINT": f"{scheme}://127.0.0.1:{sim_port}",
        **({"ORCH_ECS_CA_BUNDLE": str(ca_file)} if ca_file is not None else {}),
        "HUAWEICLOUD_SDK_AK": ak,
        "HUAWEICLOUD_SDK_SK": sk,
        "ORCH_API_TOKEN": token,
        "ORCH_TICK_SECONDS": "0.5",
        "NO_PROXY": "127.0.0.1,localhost",
        **(extra_env or {}),
    }
    processes = ProcessStack(directory, env)
    processes.start(
        "simulator",
        "simulate",
        "--port",
        str(sim_port),
        "--ak",
        ak,
        "--sk",
        sk,
        "--project-id",
        project_id,
        *(("--tls-dir", str(ca_file.parent)) if ca_file is not None else ()),
        *(("--latency-ms", f"{latency_ms:g}") if latency_ms else ()),
        *simulator_args,
    )
    stack = FullStack(
        processes, f"http://127.0.0.1:{api_port}", f"{scheme}://127.0.0.1:{sim_port}", ca_file
    )
    processes.env["SIM_URL"], processes.env["API_URL"] = stack.sim_url, stack.api_url
    try:
        if ca_file is not None:
            wait_until_http(stack.sim_url + "/_sim/stats", processes, ca_file=ca_file)
        processes.start("api", "api", "--port", str(api_port))
        processes.start(
            "worker",
            "worker",
            "--concurrency",
            str(worker_concurrency),
            "--loglevel",
            loglevel,
            extra_env=worker_env,
        )
        processes.start("beat", "beat", "--loglevel", loglevel)
        wait_until_http(stack.sim_url + "/_sim/stats", processes, ca_file=ca_file)
        wait_until_http(stack.api_url + "/healthz", processes)
    except BaseException:
        processes.stop_all()
        raise
    return stack


@contextmanager
def stack_on_fresh_database(
    directory: Path, *, redis_db: int, **options: Any
) -> Iterator[FullStack]:
    """`start_full_stack` on a PostgreSQL database made (and migrated) for it, and a Redis
    database of its own, flushed; the database is dropped afterwards. `options`: as
    `start_full_stack` takes them, but for the URLs."""
    # Imported here: the harness itself needs no database module to start processes.
    from sqlalchemy import create_engine, text

    from migrations import upgrade
    from tests.conftest import PG_ADMIN_URL, REDIS_TEST_URL, _pg_database

    name = f"reimage_s_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    database_url = _pg_database(name)
    try:
        upgrade(database_url)
        redis_url = REDIS_TEST_URL.rsplit("/", 1)[0] + f"/{redis_db}"
        redis.Redis.from_url(redis_url).flushdb()
        full = start_full_stack(
            directory, database_url=database_url, redis_url=redis_url, **options
        )
        try:
            yield full
        finally:
            full.processes.stop_all()
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
