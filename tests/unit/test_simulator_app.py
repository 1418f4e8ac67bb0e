"""The simulator over HTTP: the gateway's checks, both error shapes, request ids, paging, and the
`reimage simulate` options."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from orchestrator.cloud.signer import authorization_header, parse_raw_query, sdk_date
from orchestrator.simulator.app import SIMULATOR, create_simulator_app
from orchestrator.simulator.cli import add_simulate_arguments, config_from_args
from orchestrator.simulator.cloud import SimulatorConfig
from tests.support.clocks import ManualClock

AK = "AKTESTEXAMPLE0000001"
SK = "sktestexample0000000000000000000000000001"
PROJECT = "0605767bd8b5d3f92f0ac0123456789a"
SERVER = "b6f4a5b4-1c8e-4d7c-9a3e-2f1d0c9b8a71"
IMAGE = "e215580f-73ad-429d-b6f2-5433947433b0"
TOKEN = "MIIZ-simulated-token"
REQUEST_ID = re.compile(r"[0-9a-f]{32}")
CHANGEOS = f"/v1/{PROJECT}/cloudservers/{SERVER}/changeos"
BODY = json.dumps(
    {"os-change": {"keyname": "kp", "userid": "u1", "imageid": IMAGE, "mode": "withStopServer"}}
).encode()

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[[web.Application], Awaitable[Client]]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def make_app(clock: ManualClock, **overrides: Any) -> web.Application:
    settings: dict[str, Any] = {"ak": AK, "sk": SK, "project_id": PROJECT, "job_seconds": 10.0}
    settings.update(overrides)
    return create_simulator_app(SimulatorConfig(**settings), clock=clock)


@pytest.fixture
async def client(aiohttp_client: ClientFactory, clock: ManualClock) -> Client:
    return await aiohttp_client(make_app(clock, auth_token=TOKEN))


def signed_headers(
    client: Client,
    method: str,
    path_and_query: str,
    body: bytes = b"",
    *,
    sk: str = SK,
    signed_at: datetime | None = None,
) -> dict[str, str]:
    """Headers as the SDK builds them, signed over exactly what is sent."""
    path, _, query = path_and_query.partition("?")
    headers = {
        "Content-Type": "application/json",
        "Host": f"{client.server.host}:{client.server.port}",
        "X-Project-Id": PROJECT,
        "X-Sdk-Date": sdk_date(signed_at),
    }
    headers["Authorization"] = authorization_header(
        access_key=AK,
        secret_key=sk,
        method=method,
        path=path,
        query=parse_raw_query(query),
        headers=headers,
        body=body,
    )
    return headers


async def call(
    client: Client, method: str, path_and_query: str, body: bytes = b"", **signing: Any
) -> tuple[int, dict[str, Any], str]:
    """(status, JSON body, X-Request-Id) of a signed request."""
    headers = signed_headers(client, method, path_and_query, body, **signing)
    async with client.request(method, path_and_query, data=body or None, headers=headers) as resp:
        return resp.status, await resp.json(), resp.headers["X-Request-Id"]


# --- the gateway -----------------------------------------------------------------------------


async def test_bad_signature_is_401_apigw_0301_flat_body(client: Client) -> None:
    status, body, request_id = await call(client, "POST", CHANGEOS, BODY, sk="wrong-secret")
    assert status == 401
    assert set(body) == {"error_code", "error_msg", "request_id"}
    assert body["error_code"] == "APIGW.0301"
    assert body["error_msg"].startswith("Incorrect IAM authentication information: ")
    assert REQUEST_ID.fullmatch(request_id)
    assert body["request_id"] == request_id


async def test_tampered_body_fails_the_signature(client: Client) -> None:
    headers = signed_headers(client, "POST", CHANGEOS, BODY)
    async with client.post(CHANGEOS, data=BODY.replace(b"kp", b"kq"), headers=headers) as resp:
        assert resp.status == 401
        assert (await resp.json())["error_code"] == "APIGW.0301"


async def test_missing_authorization_is_401_apigw_0301(client: Client) -> None:
    async with client.get(f"/v1/{PROJECT}/cloudservers/{SERVER}") as resp:
        body = await resp.json()
        assert resp.status == 401
        assert body["error_code"] == "APIGW.0301"
        assert body["request_id"] == resp.headers["X-Request-Id"]


async def test_sdk_date_too_far_from_the_clock_is_apigw_0303(client: Client) -> None:
    old = datetime.now(UTC) - timedelta(minutes=16)
    status, body, _ = await call(
        client, "GET", f"/v1/{PROJECT}/cloudservers/{SERVER}", signed_at=old
    )
    assert (status, body["error_code"]) == (401, "APIGW.0303")
    recent = datetime.now(UTC) - timedelta(minutes=14)
    status, _, _ = await call(
        client, "GET", f"/v1/{PROJECT}/cloudservers/{SERVER}", signed_at=recent
    )
    assert status == 200


async def test_auth_token_is_an_alternative_to_signing(client: Client) -> None:
    path = f"/v1/{PROJECT}/cloudservers/{SERVER}"
    async with client.get(path, headers={"X-Auth-Token": TOKEN}) as resp:
        assert resp.status == 200
        assert (await resp.json())["server"]["id"] == SERVER
    async with client.get(path, headers={"X-Auth-Token": "stale"}) as resp:
        body = await resp.json()
        assert resp.status == 401
        assert set(body) == {"error_code", "error_msg", "request_id"}
        assert body["error_code"] == "Common.0013"


async def test_any_token_is_invalid_when_none_is_configured(
    aiohttp_client: ClientFactory, clock: ManualClock
) -> None:
    client = await aiohttp_client(make_app(clock))
    async with client.get(f"/v1/{PROJECT}/jobs/{'0' * 32}", headers={"X-Auth-Token": ""}) as resp:
        assert resp.status == 401
        assert (await resp.json())["error_code"] == "Common.0013"


async def test_signature_covers_the_query_exactly_as_sent(client: Client) -> None:
    # A raw '+' and an encoded '%' only verify when the raw query string is checked: the
    # decoded one turns '+' into a space and '%2541' into '%41', which then decodes again.
    name = quote("web 01&x=é 100%41", safe="")
    path = f"/v1/{PROJECT}/cloudservers/detail?limit=25&name={name}&tags=env%3Da+b"
    status, body, _ = await call(client, "GET", path)
    assert status == 200
    assert body == {"count": 0, "servers": []}


async def test_every_answer_carries_a_request_id(client: Client) -> None:
    seen = []
    status, _, request_id = await call(client, "GET", f"/v1/{PROJECT}/cloudservers/{SERVER}")
    assert status == 200
    seen.append(request_id)
    status, body, request_id = await call(client, "GET", f"/v1/{PROJECT}/no-such-api")
    assert (status, body["error_code"]) == (404, "APIGW.0101")
    seen.append(request_id)
    async with client.get("/_sim/stats") as resp:
        seen.append(resp.headers["X-Request-Id"])
    assert all(REQUEST_ID.fullmatch(value) for value in seen)
    assert len(set(seen)) == 3


async def test_rate_limit_answers_429_apigw_0308_but_not_on_control_paths(
    aiohttp_client: ClientFactory, clock: ManualClock
) -> None:
    client = await aiohttp_client(make_app(clock, rate_limit=1.0, burst=1))
    path = f"/v1/{PROJECT}/cloudservers/{SERVER}"
    assert (await call(client, "GET", path))[0] == 200
    status, body, request_id = await call(client, "GET", path)
    assert status == 429
    assert body == {
        "error_code": "APIGW.0308",
        "error_msg": "The throttling threshold has been reached: "
        "policy user over ratelimit,limit:1,time:1 second",
        "request_id": request_id,
    }
    async with client.get("/_sim/stats") as resp:
        assert resp.status == 200
        assert (await resp.json())["requests"]["rejected_429"] == 1
    clock.now += 1.0
    assert (await call(client, "GET", path))[0] == 200


async def test_every_changeos_received_is_listed_with_its_time_and_answer(
    aiohttp_client: ClientFactory, clock: ManualClock
) -> None:
    """Throttled ones too: the gateway turned them away, but the client did send them."""
    client = await aiohttp_client(make_app(clock, rate_limit=1.0, burst=1))
    assert (await call(client, "POST", CHANGEOS, BODY))[0] == 200
    clock.now += 0.5
    assert (await call(client, "POST", CHANGEOS, BODY))[0] == 429
    clock.now += 1.0
    assert (await call(client, "POST", CHANGEOS, BODY))[0] == 501
    async with client.get("/_sim/changeos") as resp:
        calls = (await resp.json())["calls"]
    assert [(c["server_id"], c["answer"]) for c in calls] == [
        (SERVER, "accepted"),
        (SERVER, "APIGW.0308"),
        (SERVER, "Ecs.0603"),
    ]
    assert [round(c["at"] - calls[0]["at"], 3) for c in calls] == [0.0, 0.5, 1.5]
    async with client.get(f"/_sim/changeos?since={calls[1]['at']}") as resp:
        assert (await resp.json())["calls"] == calls[1:]
    async with client.get("/_sim/changeos?since=soon") as resp:
        assert resp.status == 400
        assert "since" in (await resp.json())["error"]


# --- the ECS API -----------------------------------------------------------------------------


async def test_invalid_changeos_is_400_with_the_ecs_body(client: Client) -> None:
    status, body, request_id = await call(client, "POST", CHANGEOS, b'{"os-change": {}}')
    assert status == 400
    assert body == {
        "error": {"code": "Ecs.0005", "message": body["error"]["message"], "details": []}
    }
    assert body["error"]["message"]
    assert REQUEST_ID.fullmatch(request_id)


async def test_project_mismatch_is_400_ecs_0023(client: Client) -> None:
    other = "ffffffffffffffffffffffffffffffff"
    status, body, _ = await call(client, "GET", f"/v1/{other}/cloudservers/{SERVER}")
    assert (status, body["error"]["code"]) == (400, "Ecs.0023")


async def test_busy_server_is_501_ecs_0603(client: Client) -> None:
    assert (await call(client, "POST", CHANGEOS, BODY))[0] == 200
    status, body, _ = await call(client, "POST", CHANGEOS, BODY)
    assert (status, body["error"]["code"]) == (501, "Ecs.0603")


async def test_changeos_job_and_server_follow_the_clock(client: Client, clock: ManualClock) -> None:
    status, accepted, _ = await call(client, "POST", CHANGEOS, BODY)
    assert status == 200
    assert set(accepted) == {"job_id"}
    job_path = f"/v1/{PROJECT}/jobs/{accepted['job_id']}"
    server_path = f"/v1/{PROJECT}/cloudservers/{SERVER}"

    assert (await call(client, "GET", job_path))[1]["status"] == "INIT"
    clock.now += 5
    assert (await call(client, "GET", job_path))[1]["status"] == "RUNNING"
    rebuilding = (await call(client, "GET", server_path))[1]["server"]
    assert (rebuilding["status"], rebuilding["OS-EXT-STS:task_state"]) == ("REBUILD", "rebuilding")
    clock.now += 5
    assert (await call(client, "GET", job_path))[1]["status"] == "SUCCESS"
    assert (await call(client, "GET", server_path))[1]["server"]["image"]["id"] == IMAGE

    async with client.get("/_sim/stats") as resp:
        stats = await resp.json()
    assert stats["changeos_accepted"] == {SERVER: 1}
    assert stats["truth"][SERVER]["job_status"] == "SUCCESS"
    assert stats["requests"]["show_job"] == 3

    async with client.post("/_sim/reset") as resp:
        assert resp.status == 200
    status, body, _ = await call(client, "GET", job_path)
    assert (status, body["error"]["code"]) == (400, "Common.0011")


async def test_list_pages_through_three_pages_with_marker(client: Client) -> None:
    cloud = client.app[SIMULATOR].cloud
    ids = [cloud.add_server(now=0.0, name=f"web-{n}", tags=["env=prod"]) for n in range(7)]
    cloud.add_server(now=0.0, name="db-0", tags=["env=test"])

    pages: list[list[str]] = []
    marker = ""
    while True:
        query = f"limit=3&tags=env%3Dprod{'&marker=' + marker if marker else ''}"
        status, body, _ = await call(client, "GET", f"/v1/{PROJECT}/cloudservers/detail?{query}")
        assert status == 200
        assert body["count"] == 7
        pages.append([server["id"] for server in body["servers"]])
        if len(body["servers"]) < 3:
            break
        marker = pages[-1][-1]
    assert [len(page) for page in pages] == [3, 3, 1]
    assert [sid for page in pages for sid in page] == ids


# --- reimage simulate options ----------------------------------------------------------------


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_simulate_arguments(parser)
    return parser.parse_args(["--ak", AK, "--sk", SK, "--project-id", PROJECT, *argv])


def test_simulate_defaults() -> None:
    args = _parse()
    assert (args.host, args.port) == ("127.0.0.1", 8700)
    assert config_from_args(args) == SimulatorConfig(ak=AK, sk=SK, project_id=PROJECT)


def test_simulate_options_become_the_config() -> None:
    config = config_from_args(
        _parse(
            "--job-seconds", "1.5", "--fail-ratio", "0.25", "--seed", "9",
            "--images", f"{IMAGE.upper()}, {SERVER}", "--auth-token", TOKEN,
            "--rate-limit", "20", "--burst", "5",
        )
    )  # fmt: skip
    assert config == SimulatorConfig(
        ak=AK,
        sk=SK,
        project_id=PROJECT,
        job_seconds=1.5,
        fail_ratio=0.25,
        seed=9,
        images=frozenset({IMAGE, SERVER}),
        auth_token=TOKEN,
        rate_limit=20.0,
        burst=5,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--fail-ratio", "1.5"],
        ["--fail-ratio", "-0.1"],
        ["--fail-ratio", "nan"],
        ["--job-seconds", "-1"],
        ["--images", "ubuntu"],
        ["--rate-limit", "0"],
        ["--burst", "0"],
    ],
)
def test_simulate_rejects_bad_options(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        _parse(*argv)


def test_simulate_requires_credentials_and_project() -> None:
    parser = argparse.ArgumentParser()
    add_simulate_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--ak", AK, "--sk", SK])
