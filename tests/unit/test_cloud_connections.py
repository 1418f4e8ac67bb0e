"""ORCH_ECS_CA_BUNDLE checked at start (one line naming it), and the worker's one event loop per
process whose cloud session every task reuses (issue 17)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from orchestrator.cloud.http_session import HttpSessions
from orchestrator.config import SettingsError, load_settings
from orchestrator.runtime import Runtime
from orchestrator.simulator.tls import make_server_tls
from workers import tasks


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (None, "cannot read"),
        (b"not a certificate\n", "holds no PEM certificate"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "not a PEM CA"),
    ],
)
def test_a_bad_ca_bundle_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: bytes | None, why: str
) -> None:
    path = tmp_path / "bundle.pem"
    if content is not None:
        path.write_bytes(content)
    monkeypatch.setenv("ORCH_ECS_CA_BUNDLE", str(path))
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith("ORCH_ECS_CA_BUNDLE: ") and why in message
    assert "\n" not in message


def test_a_ca_bundle_is_accepted_and_unset_means_the_system_cas(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ca = make_server_tls(tmp_path / "tls").ca_path
    monkeypatch.setenv("ORCH_ECS_CA_BUNDLE", str(ca))
    assert load_settings().ecs_ca_bundle == str(ca)
    monkeypatch.setenv("ORCH_ECS_CA_BUNDLE", "")
    assert load_settings().ecs_ca_bundle is None
    monkeypatch.delenv("ORCH_ECS_CA_BUNDLE")
    assert load_settings().ecs_ca_bundle is None
    context = HttpSessions(None).ssl_context
    assert context.verify_mode.name == "CERT_REQUIRED" and context.check_hostname


def test_a_command_with_a_bad_bundle_stops_at_start_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "ORCH_ECS_CA_BUNDLE": str(tmp_path / "missing.pem")}
    env["ORCH_DATABASE_URL"] = f"sqlite:///{tmp_path / 'x.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "ORCH_ECS_CA_BUNDLE" in lines[0] and "cannot read" in lines[0]
    assert not (tmp_path / "x.db").exists()


@pytest.fixture
def worker_runtime(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Runtime:
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'w.db'}")
    rt = Runtime.build(settings, with_rate_limit=False)
    monkeypatch.setattr(tasks, "_runtime", rt)
    monkeypatch.setattr(tasks, "_runtime_pid", os.getpid())
    monkeypatch.setattr(tasks, "_loop", None)
    return rt


def test_tasks_share_one_loop_and_one_cloud_session_per_process(
    worker_runtime: Runtime,
) -> None:
    async def session_of_this_task() -> tuple[asyncio.AbstractEventLoop, aiohttp.ClientSession]:
        async with worker_runtime.http.cloud() as http:
            return asyncio.get_running_loop(), http

    first_loop, first = tasks.run(session_of_this_task())
    second_loop, second = tasks.run(session_of_this_task())
    assert first_loop is second_loop and first is second and not first.closed
    assert worker_runtime.http.cloud_sessions_opened == 1
    tasks._close_loop()
    assert first.closed and first_loop.is_closed()


def test_a_forked_process_makes_its_own_loop(
    worker_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def loop() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    parents = tasks.run(loop())
    monkeypatch.setattr(tasks, "_loop_pid", -1)  # as a child sees its parent's loop
    mine = tasks.run(loop())
    assert mine is not parents
    tasks._close_loop()
    parents.close()


def test_what_a_task_left_running_is_cancelled_like_asyncio_run(worker_runtime: Runtime) -> None:
    cancelled = []

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def task_leaving_one_behind() -> str:
        asyncio.get_running_loop().create_task(forever())
        await asyncio.sleep(0)
        return "done"

    assert tasks.run(task_leaving_one_behind()) == "done"
    assert cancelled == [True]
    tasks._close_loop()


async def test_other_loops_get_a_session_per_use() -> None:
    sessions = HttpSessions(None)
    async with sessions.cloud() as first:
        pass
    async with sessions.cloud() as second:
        pass
    assert first is not second and first.closed and second.closed
    async with sessions.probes() as probes:
        assert probes.connector is not None and probes.connector.force_close
    assert probes.closed
