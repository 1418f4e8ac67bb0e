"""Server conditions and faults over HTTP: `/_sim/servers`, `/_sim/faults`, what a client really
receives (a 202 without a job, a Retry-After, a dropped connection, an answer too late) and the
new `reimage simulate` options."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from orchestrator.simulator.app import create_simulator_app
from orchestrator.simulator.cli import add_simulate_arguments, config_from_args
from orchestrator.simulator.cloud import ServerSpec, SimulatorConfig, is_uuid
from orchestrator.simulator.faults import FAULT_FIELDS
from tests.support.clocks import ManualClock
from tests.unit.test_simulator_app import (
    AK,
    BODY,
    CHANGEOS,
    IMAGE,
    PROJECT,
    SERVER,
    SK,
    Client,
    ClientFactory,
    call,
    make_app,
    signed_headers,
)

LOCKED = "11111111-1111-4111-8111-111111111111"
DISKLESS = "22222222-2222-4222-8222-222222222222"
GONE = "33333333-3333-4333-8333-333333333333"
BUSY = "44444444-4444-4444-8444-444444444444"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def changeos(server_id: str) -> str:
    return f"/v1/{PROJECT}/cloudservers/{server_id}/changeos"


def show(server_id: str) -> str:
    return f"/v1/{PROJECT}/cloudservers/{server_id}"


async def put_servers(client: Client, servers: list[dict[str, Any]]) -> list[str]:
    async with client.post("/_sim/servers", json={"servers": servers}) as resp:
        assert resp.status == 200, await resp.text()
        ids = (await resp.json())["servers"]
    assert isinstance(ids, list)
    return ids


async def stats(client: Client) -> dict[str, Any]:
    async with client.get("/_sim/stats") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert isinstance(body, dict)
    return body


async def set_faults(client: Client, **settings: Any) -> tuple[int, dict[str, Any]]:
    async with client.post("/_sim/faults", json=settings) as resp:
        return resp.status, await resp.json()


# --- /_sim/servers ---------------------------------------------------------------------------


async def test_sim_servers_conditions_answer_their_codes(
    aiohttp_client: ClientFactory, clock: ManualClock
) -> None:
    client = await aiohttp_client(make_app(clock))
    ids = await put_servers(
        client,
        [
            {"id": LOCKED, "locked": True},
            {"id": DISKLESS, "has_system_disk": False},
            {"id": GONE, "missing": True},
            {"id": BUSY, "busy_for_s": 60},
            {"name": "no-id-given"},
        ],
    )
    assert ids[:4] == [LOCKED, DISKLESS, GONE, BUSY]
    assert is_uuid(ids[4])
    for server_id, expected in (
        (LOCKED, (400, "Ecs.0605")),
        (DISKLESS, (400, "Ecs.0105")),
        (GONE, (404, "Ecs.0114")),
        (BUSY, (501, "Ecs.0603")),
    ):
        status, body, _ = await call(client, "POST", changeos(server_id), BODY)
        assert (status, body["error"]["code"]) == expected, server_id
    status, body, _ = await call(client, "GET", show(GONE))
    assert (status, body["error"]["code"]) == (404, "Ecs.0114")
    status, body, _ = await call(client, "GET", show(BUSY))
    assert body["server"]["OS-EXT-STS:task_state"] == "powering-on"

    clock.now += 59.9
    assert (await call(client, "POST", changeos(BUSY), BODY))[0] == 501
    clock.now += 0.1
    status, body, _ = await call(client, "POST", changeos(BUSY), BODY)
    assert status == 200 and set(body) == {"job_id"}

    await put_servers(client, [{"id": LOCKED}])  # replaced: unlocked now
    assert (await call(client, "POST", changeos(LOCKED), BODY))[0] == 200
    assert (await stats(client))["changeos_received_by_server"][BUSY] == 3


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"{not json", id="not-json"),
        pytest.param(b'{"servers": [{"locked": "yes"}]}', id="bad-value"),
        pytest.param(b'{"server": []}', id="wrong-key"),
    ],
)
async def test_sim_servers_rejects_bad_entries(
    aiohttp_client: ClientFactory, clock: ManualClock, payload: bytes
) -> None:
    client = await aiohttp_client(make_app(clock))
    async with client.post("/_sim/servers", data=payload) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]


async def test_list_with_tags_across_three_pages_with_marker(
    aiohttp_client: ClientFactory, clock: ManualClock
) -> None:
    client = await aiohttp_client(make_app(clock))
    assert (await call(client, "GET", show(SERVER)))[0] == 200  # lazily created: no tags
    prod = await put_servers(
        client, [{"name": f"web-{n}", "tags": ["env=prod", "team=a"]} for n in range(7)]
    )
    await put_servers(
        client,
        [
            {"name": "db-0", "tags": ["env=test"]},
            {"id": GONE, "missing": True, "tags": ["env=prod"]},
        ],
    )

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
    assert [sid for page in pages for sid in page] == prod

    status, body, _ = await call(client, "GET", f"/v1/{PROJECT}/cloudservers/detail?limit=1000")
    assert body["count"] == 9  # the lazy one, 7 prod, the db; never the missing one
    assert GONE not in [server["id"] for server in body["servers"]]


# --- faults clients must survive -------------------------------------------------------------


async def test_flow_control_is_http_202_with_no_job(
    aiohttp_client: ClientFactory, clock: ManualClock
) -> None:
    client = await aiohttp_client(make_app(clock, flow_control_ratio=1.0))
    status, body, _ = await call(client, "POST", CHANGEOS, BODY)
    assert status == 202
    assert body == {"error": {"code": "Common.0024", "message": "exceeds flow over limit"}}
    counters = await stats(client)
    assert counters["changeos_accepted"] == {}
    assert counters["faults"]["flow_control"] == 1
    assert counters["truth"] == {}
    assert (await call(client, "GET", show(SERVER)))[1]["server"]["status"] == "ACTIVE"


async def test_429_carries_retry_after(aiohttp_client: ClientFactory, clock: ManualClock) -> None:
    client = await aiohttp_client(make_app(clock, rate_limit=1.0, burst=1, retry_after=3.0))
    path = show(SERVER)
    seen = []
    for _ in range(2):
        headers = signed_headers(client, "GET", path)
        async with client.get(path, headers=headers) as resp:
            seen.append((resp.status, resp.headers.get("Retry-After")))
    assert seen == [(200, None), (429, "3")]
    status, body = await set_faults(client, retry_after=None)
    assert (status, body["retry_after"]) == (200, None)
    async with client.get(path, headers=signed_headers(client, "GET", path)) as resp:
        assert resp.status == 429
        assert "Retry-After" not in resp.headers


async def test_dropped_changeos_closes_the_connection_but_the_job_exists(
    aiohttp_client: ClientFactory, clock: ManualClock
) -> None:
    client = await aiohttp_client(make_app(clock, drop_ratio=1.0))
    headers = signed_headers(client, "POST", CHANGEOS, BODY)
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        async with client.post(CHANGEOS, data=BODY, headers=headers) as resp:
            await resp.read()
    counters = await stats(client)
    assert counters["changeos_accepted"] == {SERVER: 1}
    assert counters["faults"]["dropped"] == 1
    assert counters["truth"][SERVER]["job_status"] == "INIT"
    status, body, _ = await call(client, "POST", CHANGEOS, BODY)  # retried blindly: busy
    assert (status, body["error"]["code"]) == (501, "Ecs.0603")


async def test_slow_answer_outlasts_a_client_timeout_after_the_side_effect(
    aiohttp_client: ClientFactory, clock: ManualClock
) -> None:
    client = await aiohttp_client(make_app(clock, slow_ratio=1.0, slow_seconds=0.5))
    headers = signed_headers(client, "POST", CHANGEOS, BODY)
    with pytest.raises(TimeoutError):
        async with client.post(
            CHANGEOS, data=BODY, headers=headers, timeout=aiohttp.ClientTimeout(total=0.1)
        ) as resp:
            await resp.read()
    counters = await stats(client)  # control paths are never slow
    assert counters["changeos_accepted"] == {SERVER: 1}
    assert counters["faults"]["slow"] == 1

    started = time.monotonic()
    status, _, _ = await call(client, "GET", show(SERVER))
    assert status == 200
    assert time.monotonic() - started >= 0.5


async def test_purged_job_is_common_0011(aiohttp_client: ClientFactory, clock: ManualClock) -> None:
    client = await aiohttp_client(make_app(clock, job_ttl=5.0))
    job_path = f"/v1/{PROJECT}/jobs/{(await call(client, 'POST', CHANGEOS, BODY))[1]['job_id']}"
    clock.now += 14.9  # the job ends after 10 s
    assert (await call(client, "GET", job_path))[1]["status"] == "SUCCESS"
    clock.now += 0.1
    status, body, _ = await call(client, "GET", job_path)
    assert (status, body["error"]["code"]) == (400, "Common.0011")
    assert (await stats(client))["faults"]["purged"] == 1


async def test_broken_after_success(aiohttp_client: ClientFactory, clock: ManualClock) -> None:
    client = await aiohttp_client(make_app(clock, error_after_success_ratio=1.0))
    old_image = (await call(client, "GET", show(SERVER)))[1]["server"]["image"]["id"]
    job_id = (await call(client, "POST", CHANGEOS, BODY))[1]["job_id"]
    clock.now += 10
    assert (await call(client, "GET", f"/v1/{PROJECT}/jobs/{job_id}"))[1]["status"] == "SUCCESS"
    server = (await call(client, "GET", show(SERVER)))[1]["server"]
    assert (server["status"], server["OS-EXT-STS:vm_state"]) == ("ERROR", "error")
    assert server["image"]["id"] == old_image != IMAGE
    assert (await stats(client))["faults"]["broken"] == 1


async def test_faults_turn_on_and_off_mid_run(
    aiohttp_client: ClientFactory, clock: ManualClock
) -> None:
    client = await aiohttp_client(make_app(clock))
    async with client.get("/_sim/faults") as resp:
        assert set(await resp.json()) == set(FAULT_FIELDS)
    status, settings = await set_faults(client, transient_error_ratio=1)
    assert (status, settings["transient_error_ratio"]) == (200, 1.0)
    first = await call(client, "GET", show(SERVER))
    second = await call(client, "GET", show(SERVER))
    assert (first[0], first[1]["error"]["code"]) == (500, "Ecs.0615")
    assert (second[0], second[1]["error"]["code"]) == (503, "Common.1503")
    await set_faults(client, transient_error_ratio=0)
    assert (await call(client, "GET", show(SERVER)))[0] == 200

    status, body = await set_faults(client, drop_ratio=7)
    assert status == 400 and "drop_ratio" in body["error"]
    async with client.get("/_sim/faults") as resp:
        assert (await resp.json())["drop_ratio"] == 0.0

    await set_faults(client, rate_limit=1, burst=1)
    assert [(await call(client, "GET", show(SERVER)))[0] for _ in range(2)] == [200, 429]
    await set_faults(client, rate_limit=None)
    assert (await call(client, "GET", show(SERVER)))[0] == 200

    await set_faults(client, drop_ratio=1)
    async with client.post("/_sim/reset") as resp:
        assert resp.status == 200
    async with client.get("/_sim/faults") as resp:
        assert (await resp.json())["drop_ratio"] == 0.0


async def test_changeos_turned_away_by_the_gateway_still_counts_as_received(
    aiohttp_client: ClientFactory, clock: ManualClock
) -> None:
    client = await aiohttp_client(make_app(clock, rate_limit=1.0, burst=1))
    assert (await call(client, "POST", CHANGEOS, BODY, sk="wrong"))[0] == 401
    assert (await call(client, "POST", CHANGEOS, BODY))[0] == 200
    assert (await call(client, "POST", CHANGEOS, BODY))[0] == 429
    counters = await stats(client)
    assert counters["changeos_received_by_server"] == {SERVER: 3}
    assert counters["changeos_accepted"] == {SERVER: 1}
    assert counters["concurrent_jobs_now"] == 1


# --- reimage simulate options ----------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_simulate_arguments(parser)
    return parser.parse_args(["--ak", AK, "--sk", SK, "--project-id", PROJECT, *argv])


def test_fault_and_inventory_options_become_the_config(tmp_path: Path) -> None:
    inventory = tmp_path / "fleet.json"
    inventory.write_text(json.dumps({"servers": [{"id": LOCKED, "locked": True}]}))
    config = config_from_args(
        parse(
            "--retry-after", "2", "--transient-error-ratio", "0.1", "--flow-control-ratio", "0.2",
            "--drop-ratio", "0.3", "--slow-ratio", "0.4", "--slow-seconds", "45",
            "--stuck-ratio", "0.05", "--job-ttl", "600", "--error-after-success-ratio", "0.06",
            "--job-seconds-spread", "0.5", "--inventory", str(inventory),
            "--inventory-size", "100", "--inventory-tags", "env=prod,tier=web",
            "--strict-inventory", "--rate-limit", "10",
        )
    )  # fmt: skip
    assert config == SimulatorConfig(
        ak=AK,
        sk=SK,
        project_id=PROJECT,
        rate_limit=10.0,
        retry_after=2.0,
        transient_error_ratio=0.1,
        flow_control_ratio=0.2,
        drop_ratio=0.3,
        slow_ratio=0.4,
        slow_seconds=45.0,
        stuck_ratio=0.05,
        job_ttl=600.0,
        error_after_success_ratio=0.06,
        job_seconds_spread=0.5,
        inventory=(ServerSpec(id=LOCKED, locked=True),),
        inventory_size=100,
        inventory_tags=("env=prod", "tier=web"),
        strict_inventory=True,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--retry-after", "-1"],
        ["--transient-error-ratio", "1.5"],
        ["--flow-control-ratio", "-0.1"],
        ["--drop-ratio", "nan"],
        ["--slow-ratio", "2"],
        ["--slow-seconds", "-1"],
        ["--stuck-ratio", "x"],
        ["--job-ttl", "-5"],
        ["--error-after-success-ratio", "1.01"],
        ["--job-seconds-spread", "0.95"],
        ["--inventory-size", "-1"],
        ["--inventory-size", "ten"],
        ["--inventory-tags", "env"],
        ["--inventory", "/nonexistent/fleet.json"],
    ],
)
def test_simulate_rejects_bad_fault_options(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse(*argv)


def test_simulate_rejects_an_inventory_file_with_a_bad_entry(tmp_path: Path) -> None:
    inventory = tmp_path / "fleet.json"
    inventory.write_text(json.dumps({"servers": [{"id": "not-a-uuid"}]}))
    with pytest.raises(SystemExit):
        parse("--inventory", str(inventory))


async def test_strict_inventory_from_the_command_line(
    aiohttp_client: ClientFactory, clock: ManualClock, tmp_path: Path
) -> None:
    inventory = tmp_path / "fleet.json"
    inventory.write_text(json.dumps({"servers": [{"id": SERVER, "tags": ["env=prod"]}]}))
    config = config_from_args(
        parse("--inventory", str(inventory), "--inventory-size", "3", "--strict-inventory")
    )
    client = await aiohttp_client(create_simulator_app(config, clock=clock))
    assert (await call(client, "GET", show(SERVER)))[0] == 200
    assert (await call(client, "GET", show(LOCKED)))[0] == 404
    listed = (await call(client, "GET", f"/v1/{PROJECT}/cloudservers/detail"))[1]
    names = [server["name"] for server in listed["servers"]]
    assert names == ["ecs-b6f4a5b4", "web-0001", "web-0002", "web-0003"]
