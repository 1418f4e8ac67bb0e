"""The official SDK against `reimage simulate --tls-dir ... --latency-ms ...` (a real process):
it trusts the simulator through the CA file the simulator wrote (`HttpConfig.ssl_ca_cert`,
verification on), and refuses it without."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.devstack.stack import free_port
from tests.support.sdk import prepare_sdk, sdk_client

pytestmark = pytest.mark.integration

AK = "AKTESTEXAMPLE0000001"
SK = "sktestexample0000000000000000000000000001"
PROJECT = "0605767bd8b5d3f92f0ac0123456789a"
SERVER = "b6f4a5b4-1c8e-4d7c-9a3e-2f1d0c9b8a71"
IMAGE = "e215580f-73ad-429d-b6f2-5433947433b0"


def _stats(url: str, ca_file: Path) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=str(ca_file))
    with urllib.request.urlopen(f"{url}/_sim/stats", timeout=5, context=context) as answer:
        stats: dict[str, Any] = json.loads(answer.read())
        return stats


@pytest.fixture
def tls_simulator(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port, tls_dir = free_port(), tmp_path / "tls"
    log = (tmp_path / "simulator.log").open("wb")
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "orchestrator", "simulate", "--port", str(port)),
            *("--ak", AK, "--sk", SK, "--project-id", PROJECT, "--job-seconds", "0"),
            *("--tls-dir", str(tls_dir), "--latency-ms", "30"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url, ca_file = f"https://127.0.0.1:{port}", tls_dir / "ca.pem"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (tmp_path / "simulator.log").read_text()
            try:
                _stats(url, ca_file)
                break
            except OSError:  # not listening yet, or the CA file not written yet
                assert time.monotonic() < deadline, "the TLS simulator did not answer"
                time.sleep(0.2)
        printed = (tmp_path / "simulator.log").read_text()
        assert f"CA certificate: {ca_file}" in printed and f"listening on {url}" in printed
        yield url, ca_file
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
        log.close()


def test_sdk_changes_os_over_https_trusting_the_simulators_ca(
    tls_simulator: tuple[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url, ca_file = tls_simulator
    prepare_sdk(monkeypatch, tmp_path)
    from huaweicloudsdkecs import v2

    client = sdk_client(v2.EcsClient, url, ak=AK, sk=SK, project_id=PROJECT, ca_file=ca_file)
    request = v2.ChangeServerOsWithoutCloudInitRequest(
        server_id=SERVER,
        body=v2.ChangeServerOsWithoutCloudInitRequestBody(
            os_change=v2.ChangeServerOsWithoutCloudInitOption(
                keyname="KeyPair-test",
                userid="7e25b1da389f4697a79df3a0e5bd494e",
                imageid=IMAGE,
                mode="withStopServer",
            )
        ),
    )
    job_id = client.change_server_os_without_cloud_init(request).job_id
    job = client.show_job(v2.ShowJobRequest(job_id=job_id))  # --job-seconds 0: already over
    assert job.status == "SUCCESS"
    server = client.show_server(v2.ShowServerRequest(server_id=SERVER)).server
    assert server.image.id == IMAGE
    stats = _stats(url, ca_file)
    assert stats["requests"]["changeos"] == 1
    assert stats["connections"] >= 1


def test_sdk_without_the_ca_refuses_the_simulators_certificate(
    tls_simulator: tuple[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url, ca_file = tls_simulator
    prepare_sdk(monkeypatch, tmp_path)
    from huaweicloudsdkcore.exceptions.exceptions import SslHandShakeException
    from huaweicloudsdkecs import v2

    client = sdk_client(v2.EcsClient, url, ak=AK, sk=SK, project_id=PROJECT)
    with pytest.raises(SslHandShakeException):
        client.show_job(v2.ShowJobRequest(job_id="ff808081-0000-4000-8000-000000000001"))
    assert _stats(url, ca_file)["requests"]["show_job"] == 0
