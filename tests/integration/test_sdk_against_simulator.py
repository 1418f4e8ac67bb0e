"""The official Huawei SDK, unchanged, against the simulator on a real TCP port: it must not be
able to tell the simulator from the cloud."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web

from orchestrator.simulator.app import create_simulator_app
from orchestrator.simulator.cloud import SimulatorConfig
from tests.support.sdk import prepare_sdk, sdk_client

pytestmark = pytest.mark.integration

AK = "AKTESTEXAMPLE0000001"
SK = "sktestexample0000000000000000000000000001"
PROJECT = "0605767bd8b5d3f92f0ac0123456789a"
SERVER = "b6f4a5b4-1c8e-4d7c-9a3e-2f1d0c9b8a71"
IMAGE = "e215580f-73ad-429d-b6f2-5433947433b0"
OTHER_IMAGE = "0b6c5d4e-3f2a-4b1c-8d9e-0f1a2b3c4d5e"
REQUEST_ID = re.compile(r"[0-9a-f]{32}")


class SimulatorThread:
    """The real app on 127.0.0.1, any free port, in a thread with its own event loop."""

    def __init__(self, config: SimulatorConfig) -> None:
        self._config = config
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.url = ""

    def start(self) -> str:
        self._thread.start()
        port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def _start(self) -> int:
        self._runner = web.AppRunner(create_simulator_app(self._config))
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        port = self._runner.addresses[0][1]
        assert isinstance(port, int)
        return port

    def stop(self) -> None:
        if self._runner is not None:
            cleanup = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            cleanup.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@pytest.fixture
def start_simulator() -> Iterator[Callable[..., str]]:
    """Start a simulator with config overrides; answer its URL. All are stopped afterwards."""
    started: list[SimulatorThread] = []

    def start(**overrides: Any) -> str:
        settings: dict[str, Any] = {"ak": AK, "sk": SK, "project_id": PROJECT, "job_seconds": 1.0}
        settings.update(overrides)
        simulator = SimulatorThread(SimulatorConfig(**settings))
        started.append(simulator)
        return simulator.start()

    yield start
    for simulator in started:
        simulator.stop()


@pytest.fixture
def sdk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> SimpleNamespace:
    """The SDK's modules, imported with HOME (which it writes to) and proxies made harmless."""
    prepare_sdk(monkeypatch, tmp_path)
    from huaweicloudsdkcore.exceptions.exceptions import (
        ClientRequestException,
        ServerResponseException,
    )
    from huaweicloudsdkecs import v2

    def client(url: str, sk: str = SK) -> Any:
        return sdk_client(v2.EcsClient, url, ak=AK, sk=sk, project_id=PROJECT)

    return SimpleNamespace(
        client=client,
        v2=v2,
        ClientRequestException=ClientRequestException,
        ServerResponseException=ServerResponseException,
    )


def change_os_v1(sdk: SimpleNamespace, client: Any, image: str = IMAGE) -> str:
    v2 = sdk.v2
    option = v2.ChangeServerOsWithoutCloudInitOption(
        keyname="KeyPair-test",
        userid="7e25b1da389f4697a79df3a0e5bd494e",
        imageid=image,
        mode="withStopServer",
        metadata=v2.ChangeSeversOsMetadataWithoutCloudInitOption(byol="true"),
    )
    request = v2.ChangeServerOsWithoutCloudInitRequest(
        server_id=SERVER, body=v2.ChangeServerOsWithoutCloudInitRequestBody(os_change=option)
    )
    response = client.change_server_os_without_cloud_init(request)
    assert response.status_code == 200
    assert isinstance(response.job_id, str)
    return response.job_id


def wait_for_job(sdk: SimpleNamespace, client: Any, job_id: str) -> tuple[Any, list[str]]:
    """Poll ShowJob until a final status; answer the last response and every status seen."""
    seen: list[str] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        job = client.show_job(sdk.v2.ShowJobRequest(job_id=job_id))
        seen.append(job.status)
        if job.status in ("SUCCESS", "FAIL"):
            return job, seen
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never ended: {seen[-5:]}")


def show_server(sdk: SimpleNamespace, client: Any) -> Any:
    return client.show_server(sdk.v2.ShowServerRequest(server_id=SERVER)).server


def sim_stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/_sim/stats", timeout=10) as response:
        stats = json.loads(response.read())
    assert isinstance(stats, dict)
    return stats


def test_changeos_job_succeeds_and_server_shows_the_new_image(
    start_simulator: Callable[..., str], sdk: SimpleNamespace
) -> None:
    url = start_simulator()
    client = sdk.client(url)
    old_image = show_server(sdk, client).image.id
    assert old_image != IMAGE

    job_id = change_os_v1(sdk, client)
    job, seen = wait_for_job(sdk, client, job_id)

    assert job.status == "SUCCESS"
    assert job.job_id == job_id
    assert job.job_type == "changeOS"
    assert job.entities.server_id == SERVER
    assert seen[0] == "INIT" and "RUNNING" in seen
    server = show_server(sdk, client)
    assert server.image.id == IMAGE
    assert server.metadata["metering.image_id"] == IMAGE
    assert (server.status, server.os_ext_st_stask_state) == ("ACTIVE", "")
    assert sim_stats(url)["truth"][SERVER]["image_id"] == IMAGE


def test_failing_job_ends_fail_with_its_error_code(
    start_simulator: Callable[..., str], sdk: SimpleNamespace
) -> None:
    client = sdk.client(start_simulator(fail_ratio=1.0))
    old_image = show_server(sdk, client).image.id
    job, _ = wait_for_job(sdk, client, change_os_v1(sdk, client))
    assert job.status == "FAIL"
    assert job.error_code == "Ecs.0202"
    assert job.fail_reason
    assert job.entities.sub_jobs[0].entities.errorcode_message
    assert show_server(sdk, client).image.id == old_image


def test_wrong_secret_key_is_401_apigw_0301(
    start_simulator: Callable[..., str], sdk: SimpleNamespace
) -> None:
    client = sdk.client(start_simulator(), sk="not-the-secret")
    with pytest.raises(sdk.ClientRequestException) as raised:
        change_os_v1(sdk, client)
    assert raised.value.status_code == 401
    assert raised.value.error_code == "APIGW.0301"
    assert REQUEST_ID.fullmatch(raised.value.request_id)


def test_image_not_listed_is_400_ecs_0031(
    start_simulator: Callable[..., str], sdk: SimpleNamespace
) -> None:
    client = sdk.client(start_simulator(images=frozenset({OTHER_IMAGE})))
    with pytest.raises(sdk.ClientRequestException) as raised:
        change_os_v1(sdk, client, image=IMAGE)
    assert raised.value.status_code == 400
    assert raised.value.error_code == "Ecs.0031"
    assert change_os_v1(sdk, client, image=OTHER_IMAGE)


def test_busy_server_is_a_server_response_exception_501(
    start_simulator: Callable[..., str], sdk: SimpleNamespace
) -> None:
    client = sdk.client(start_simulator(job_seconds=30.0))
    change_os_v1(sdk, client)
    with pytest.raises(sdk.ServerResponseException) as raised:
        change_os_v1(sdk, client)
    assert (raised.value.status_code, raised.value.error_code) == (501, "Ecs.0603")


def test_changeos_with_cloud_init_and_user_data(
    start_simulator: Callable[..., str], sdk: SimpleNamespace
) -> None:
    v2 = sdk.v2
    client = sdk.client(start_simulator())
    user_data = base64.b64encode(b"#cloud-config\npassword: Sim-pass-123\n").decode()
    option = v2.ChangeServerOsWithCloudInitOption(
        imageid=IMAGE,
        mode="withStopServer",
        metadata=v2.ChangeSeversOsMetadata(user_data=user_data, byol="true"),
    )
    response = client.change_server_os_with_cloud_init(
        v2.ChangeServerOsWithCloudInitRequest(
            server_id=SERVER, body=v2.ChangeServerOsWithCloudInitRequestBody(os_change=option)
        )
    )
    job, _ = wait_for_job(sdk, client, response.job_id)
    assert job.status == "SUCCESS"
    assert show_server(sdk, client).image.id == IMAGE


def test_list_servers_details_with_awkward_query_values(
    start_simulator: Callable[..., str], sdk: SimpleNamespace
) -> None:
    client = sdk.client(start_simulator())
    show_server(sdk, client)  # the first reference creates the server
    listed = client.list_servers_details(
        sdk.v2.ListServersDetailsRequest(limit=25, name="ecs-b6f4", status="ACTIVE")
    )
    assert listed.count == 1
    assert listed.servers[0].id == SERVER
    # Space, '&', '=' and a non-ASCII letter in values: the signature must still verify.
    none = client.list_servers_details(
        sdk.v2.ListServersDetailsRequest(name="web 01&x=é*", tags="env=prod", offset=1)
    )
    assert (none.count, none.servers) == (0, [])


def test_simulate_command_serves_until_sigterm(sdk: SimpleNamespace) -> None:
    code = (
        "import argparse, sys\n"
        "from orchestrator.simulator.cli import add_simulate_arguments, run_simulator\n"
        "parser = argparse.ArgumentParser()\n"
        "add_simulate_arguments(parser)\n"
        "run_simulator(parser.parse_args(sys.argv[1:]))\n"
    )
    argv = ["--port", "0", "--ak", AK, "--sk", SK, "--project-id", PROJECT]
    process = subprocess.Popen(
        [sys.executable, "-c", code, *argv],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        match = re.fullmatch(r"simulator listening on (http://127\.0\.0\.1:\d+)", line)
        assert match, line
        client = sdk.client(match.group(1))
        assert show_server(sdk, client).id == SERVER
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
