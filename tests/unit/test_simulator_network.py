"""The simulator as a network would show it (issue 17): HTTPS with a CA it makes at start, a
latency before every cloud answer, and a count of the connections it accepted; and our client
against it, trusting the CA through ORCH_ECS_CA_BUNDLE or refusing the certificate."""

from __future__ import annotations

import argparse
import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509

from orchestrator.cloud.client import Credentials, EcsClient
from orchestrator.cloud.errors import ConfigError
from orchestrator.cloud.http_session import HttpSessions
from orchestrator.simulator.app import create_simulator_app
from orchestrator.simulator.cli import add_simulate_arguments
from orchestrator.simulator.cloud import SimulatorConfig
from orchestrator.simulator.tls import make_server_tls

AK = "AKTESTEXAMPLE0000001"
SK = "sktestexample0000000000000000000000000001"
PROJECT = "0605767bd8b5d3f92f0ac0123456789a"


class Sleeps:
    """Records the latency the simulator waits, instead of waiting it."""

    def __init__(self) -> None:
        self.waited: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waited.append(seconds)


@dataclass
class Served:
    url: str
    ca_file: Path | None


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


async def _serve(
    tmp_path: Path, sleeps: Sleeps, *, tls: bool, latency_s: float = 0.0
) -> AsyncIterator[Served]:
    app = create_simulator_app(
        SimulatorConfig(ak=AK, sk=SK, project_id=PROJECT, job_seconds=1.0),
        latency_s=latency_s,
        sleep=sleeps,
    )
    runner = web.AppRunner(app)
    await runner.setup()
    made = make_server_tls(tmp_path / "tls") if tls else None
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=made.context if made else None)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Served(
            f"{'https' if tls else 'http'}://127.0.0.1:{port}", made.ca_path if made else None
        )
    finally:
        await runner.cleanup()


@pytest.fixture
async def https(tmp_path: Path, sleeps: Sleeps) -> AsyncIterator[Served]:
    async for served in _serve(tmp_path, sleeps, tls=True, latency_s=0.03):
        yield served


def _client(http: aiohttp.ClientSession, url: str) -> EcsClient:
    return EcsClient(
        http,
        endpoint=url,
        project_id=PROJECT,
        region="cn-north-4",
        credentials=Credentials(access_key=AK, secret_key=SK),
    )


async def _stats(url: str, ca_file: Path | None) -> dict[str, object]:
    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
    connector = aiohttp.TCPConnector(ssl=context) if context else aiohttp.TCPConnector()
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.get(url + "/_sim/stats") as answer,
    ):
        body: dict[str, object] = await answer.json()
        return body


def test_tls_dir_holds_the_ca_certificate_only(tmp_path: Path) -> None:
    made = make_server_tls(tmp_path / "tls")
    assert sorted(p.name for p in (tmp_path / "tls").iterdir()) == ["ca.pem"]
    text = made.ca_path.read_bytes()
    assert b"PRIVATE KEY" not in text
    ca = x509.load_pem_x509_certificate(text)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert lifetime.days <= 3  # short-lived
    assert isinstance(made.context, ssl.SSLContext)


async def test_our_client_trusts_the_simulator_through_its_ca_bundle(
    https: Served, sleeps: Sleeps
) -> None:
    assert https.url.startswith("https://") and https.ca_file is not None
    sessions = HttpSessions(str(https.ca_file))
    async with sessions.cloud() as http:
        flavors = await _client(http, https.url).list_flavors()
    assert flavors  # an answer, parsed, over verified TLS
    assert sleeps.waited == [0.03]  # one cloud call: its latency, once


async def test_without_the_bundle_the_certificate_is_a_config_error_not_a_retry(
    https: Served,
) -> None:
    sessions = HttpSessions(None)  # the system's CAs, which never signed the simulator's
    async with sessions.cloud() as http:
        with pytest.raises(ConfigError) as caught:
            await _client(http, https.url).list_flavors()
    error = caught.value
    assert error.code == "TLS.CertificateUntrusted"
    assert "certificate" in error.message and "ORCH_ECS_CA_BUNDLE" in error.message
    assert "\n" not in str(error)


async def test_a_changeos_meeting_an_untrusted_certificate_is_no_outcome_unknown(
    https: Served,
) -> None:
    """Refused before a byte was sent: a ConfigError (the batch stops), never an unknown
    outcome that would be reconciled, nor a retry."""
    from orchestrator.cloud.models import OsChange

    change = OsChange(imageid="e215580f-73ad-429d-b6f2-5433947433b0", keyname="kp")
    async with HttpSessions(None).cloud() as http:
        with pytest.raises(ConfigError):
            await _client(http, https.url).change_os(
                "b6f4a5b4-1c8e-4d7c-9a3e-2f1d0c9b8a71", change, cloud_init=False
            )
    assert (await _stats(https.url, https.ca_file))["requests"]["changeos"] == 0  # type: ignore[index]


async def test_latency_before_every_cloud_answer_not_the_control_routes(
    https: Served, sleeps: Sleeps
) -> None:
    sessions = HttpSessions(str(https.ca_file))
    async with sessions.cloud() as http:
        client = _client(http, https.url)
        await client.list_flavors()
        await client.list_flavors()
    await _stats(https.url, https.ca_file)
    assert sleeps.waited == [0.03, 0.03]


async def test_connections_counted_one_per_connection_not_per_request(
    https: Served, sleeps: Sleeps
) -> None:
    before = (await _stats(https.url, https.ca_file))["connections"]
    sessions = HttpSessions(str(https.ca_file))
    sessions.keep_on(asyncio.get_running_loop())
    for _ in range(3):  # three "tasks", one kept session: one connection, kept alive
        async with sessions.cloud() as http:
            for _ in range(5):
                await _client(http, https.url).list_flavors()
    after_kept = (await _stats(https.url, https.ca_file))["connections"]
    await sessions.close()
    for _ in range(3):  # a session per use, as each server had before: a connection each
        async with HttpSessions(str(https.ca_file)).cloud() as http:
            await _client(http, https.url).list_flavors()
    after_fresh = (await _stats(https.url, https.ca_file))["connections"]
    assert isinstance(before, int) and isinstance(after_kept, int)
    assert isinstance(after_fresh, int)
    # The stats calls themselves came on one new connection each.
    assert after_kept - before == 1 + 1
    assert after_fresh - after_kept == 3 + 1
    assert sessions.cloud_sessions_opened == 1


async def test_plain_http_without_latency_is_the_default(tmp_path: Path, sleeps: Sleeps) -> None:
    async for served in _serve(tmp_path, sleeps, tls=False):
        async with HttpSessions(None).cloud() as http:
            await _client(http, served.url).list_flavors()
        assert sleeps.waited == []


def test_simulate_options_default_to_plain_http_and_no_latency(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_simulate_arguments(parser)
    base = ["--ak", AK, "--sk", SK, "--project-id", PROJECT]
    args = parser.parse_args(base)
    assert args.tls_dir is None and args.latency_ms == 0.0
    args = parser.parse_args([*base, "--tls-dir", str(tmp_path), "--latency-ms", "30"])
    assert args.tls_dir == tmp_path and args.latency_ms == 30.0
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--latency-ms", "-1"])
