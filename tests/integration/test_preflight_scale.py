"""Pre-flight's cost at fleet size, on real processes: a dry run of 10,000 servers reads them in
bulk (tens of cloud calls, counted by the simulator), and a dry run whose client disconnects
stops spending the fleet's rate budget."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.integration.stack import ProcessStack, http, stack_on_fresh_database

pytestmark = pytest.mark.e2e

TOKEN = "preflight-scale-token-abcdefgh"
AK, SK = "PREFLIGHTSCALEKEY001", "preflight-scale-secret-000000000000000001"
PROJECT = "0605767bd8b5d3f92f0ac0123456789c"
IMAGE = "5c3d1e0a-1111-4a2b-8c3d-000000000001"
FLEET = 10_000
# The rate budget of this stack: slow enough that a disconnect lands mid-way.
RATE = 4


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessStack]:
    directory = tmp_path_factory.mktemp("preflight-scale")
    with stack_on_fresh_database(
        directory,
        redis_db=11,
        token=TOKEN,
        ak=AK,
        sk=SK,
        project_id=PROJECT,
        simulator_args=[
            *("--inventory-size", str(FLEET), "--inventory-tags", "role=fleet"),
            "--strict-inventory",
        ],
        extra_env={"ORCH_ECS_RATE": str(RATE), "ORCH_ECS_BURST": "1"},
    ) as full:
        yield full.processes


def request_body(**targets: Any) -> dict[str, Any]:
    return {
        "project_id": PROJECT,
        "region": "cn-north-4",
        "os_change": {"imageid": IMAGE, "keyname": "ops-key", "mode": "withStopServer"},
        **targets,
    }


def cloud_calls(stack: ProcessStack) -> int:
    stats = http("GET", stack.env["SIM_URL"] + "/_sim/stats")[1]
    return sum(stats["requests"].values())  # type: ignore[no-any-return]


def dry_run(stack: ProcessStack, body: dict[str, Any]) -> dict[str, Any]:
    status, report = http(
        "POST",
        stack.env["API_URL"] + "/api/v1/batches?dry_run=true",
        token=TOKEN,
        body=body,
        timeout=120,
    )
    assert status == 200, report
    return report  # type: ignore[no-any-return]


def test_a_dry_run_of_ten_thousand_servers_costs_tens_of_calls(stack: ProcessStack) -> None:
    before = cloud_calls(stack)
    report = dry_run(stack, request_body(selector={"tags": ["role=fleet"]}))
    spent = cloud_calls(stack) - before
    assert report["total"] == FLEET and report["verdicts"] == {"submit": FLEET}
    # 10 list pages, 1 flavor list, 2 image queries (target, present), 10 volume pages.
    assert spent == report["cloud_calls"]["total"] == 23, report["cloud_calls"]
    listed = [s["server_id"] for s in report["servers"]]
    before = cloud_calls(stack)
    again = dry_run(stack, request_body(servers=listed))
    assert again["verdicts"] == {"submit": FLEET}
    assert cloud_calls(stack) - before == again["cloud_calls"]["total"] <= 25


def test_a_dry_run_stops_when_its_client_disconnects(stack: ProcessStack) -> None:
    api = urlsplit(stack.env["API_URL"])
    payload = json.dumps(request_body(selector={"tags": ["role=fleet"]})).encode()
    head = (
        f"POST /api/v1/batches?dry_run=true HTTP/1.1\r\nHost: {api.netloc}\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    before = cloud_calls(stack)
    with socket.create_connection((api.hostname, api.port), timeout=10) as client:
        client.sendall(head + payload)
        time.sleep(1.5)  # a few of its ~23 calls at 4 a second
    at_close = cloud_calls(stack)
    # Long enough for the rest of the dry run (about 6 s at this rate) had it gone on.
    time.sleep(7)
    spent = cloud_calls(stack) - before
    assert at_close - before >= 1, "the dry run had not started"
    assert spent - (at_close - before) <= 2, "calls went on after the client left"
    assert spent < 23
