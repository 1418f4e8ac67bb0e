"""The health gate, the automatic rollback and the on-demand rollback with real processes:
`reimage worker` and `reimage beat`, the API and the simulator over HTTP (whose
`/_sim/health/{id}` is what the gate probes), real Redis and PostgreSQL. One stack serves
the whole module. (`test_health_gate_clock.py` proves the timings on a clock the test moves.)"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from tests.integration.stack import ProcessStack, http, stack_on_fresh_database

pytestmark = pytest.mark.e2e

TOKEN = "verify-token-abcdefghijkl"
AK, SK = "VERIFYACCESSKEY00001", "verify-secret-key-00000000000000000000001"
PROJECT = "0605767bd8b5d3f92f0ac0123456789a"
GOOD_IMAGE = "e215580f-73ad-429d-b6f2-5433947433b0"
BROKEN_IMAGE = "0b0e0e0e-73ad-429d-b6f2-5433947433b1"
TERMINAL = {"succeeded", "partially_failed", "aborted", "cancelled"}
INITIAL_DELAY_S = 2.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessStack]:
    directory = tmp_path_factory.mktemp("verify")
    with stack_on_fresh_database(
        directory,
        redis_db=11,
        token=TOKEN,
        ak=AK,
        sk=SK,
        project_id=PROJECT,
        simulator_args=[
            *("--job-seconds", "1", "--seed", "5"),
            *("--images", f"{GOOD_IMAGE},{BROKEN_IMAGE}"),
            *("--broken-images", BROKEN_IMAGE, "--boot-seconds", "1"),
            *("--backup-seconds", "1", "--image-quota", "20"),
        ],
        extra_env={
            "ORCH_ECS_RATE": "500",
            "ORCH_ECS_BURST": "500",
            "ORCH_HEALTH_ALLOWED_HOSTS": json.dumps(["127.0.0.1"]),
            "ORCH_BACKUP_SWEEP_S": "1",
        },
    ) as full:
        yield full.processes


def api(stack: ProcessStack, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    return http(method, stack.env["API_URL"] + path, token=TOKEN, body=body)


def sim(stack: ProcessStack, path: str) -> Any:
    return http("GET", stack.env["SIM_URL"] + path)[1]


def health_check(stack: ProcessStack, **timings: Any) -> dict[str, Any]:
    return {
        "http": stack.env["SIM_URL"] + "/_sim/health/{server_id}",
        "initial_delay_s": INITIAL_DELAY_S,
        "interval_s": 1,
        "timeout_s": 2,
        "deadline_s": 8,
        **timings,
    }


def submit(stack: ProcessStack, servers: list[str], image: str, **policy: Any) -> dict[str, Any]:
    body = {
        "project_id": PROJECT,
        "region": "cn-north-4",
        "servers": servers,
        "os_change": {"imageid": image, "keyname": "KeyPair-v", "mode": "withStopServer"},
        "policy": {"poll_interval_s": 1, "job_timeout_s": 300, **policy},
    }
    status, batch = api(stack, "POST", "/api/v1/batches", body)
    assert status == 202, batch
    return batch  # type: ignore[no-any-return]


def wait_for(stack: ProcessStack, batch_id: str, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        stack.assert_alive()
        status, batch = api(stack, "GET", f"/api/v1/batches/{batch_id}")
        assert status == 200
        if batch["state"] in TERMINAL:
            return batch  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"{batch}\n{stack.log_tail('worker')}"
        time.sleep(0.3)


def servers_of(stack: ProcessStack, batch_id: str) -> dict[str, dict[str, Any]]:
    status, page = api(stack, "GET", f"/api/v1/batches/{batch_id}/servers?limit=1000")
    assert status == 200
    return {s["server_id"]: s for s in page["items"]}


def history(stack: ProcessStack, server_id: str) -> list[dict[str, Any]]:
    status, page = api(stack, "GET", f"/api/v1/servers/{server_id}/history?limit=1000")
    assert status == 200
    return page["items"]  # type: ignore[no-any-return]


def changeos_received(stack: ProcessStack, servers: list[str]) -> dict[str, list[str]]:
    """The images each server was sent, in order, as the simulator received them."""
    calls = sim(stack, "/_sim/changeos")["calls"]
    received: dict[str, list[str]] = {s: [] for s in servers}
    for call in calls:
        if call["server_id"] in received and call.get("answer", "accepted") == "accepted":
            received[call["server_id"]].append(call["image_id"])
    return received


def image_of(stack: ProcessStack, server_id: str) -> str:
    """The image the server runs, as the simulator's health answer names it."""
    _, body = http("GET", f"{stack.env['SIM_URL']}/_sim/health/{server_id}")
    return str(body["image_id"])


def unix(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_a_broken_image_stops_at_its_canaries_and_rolls_them_back(stack: ProcessStack) -> None:
    servers = [str(uuid.uuid4()) for _ in range(6)]
    batch = submit(
        stack,
        servers,
        BROKEN_IMAGE,
        waves=[2, "100%"],
        max_failures=0,
        health_check=health_check(stack),
        on_unhealthy="rollback",
    )
    final = wait_for(stack, batch["id"])
    assert final["state"] == "aborted" and final["abort_reason"] == "error_budget"
    rows = servers_of(stack, batch["id"])
    canaries, rest = servers[:2], servers[2:]
    assert [rows[s]["state"] for s in canaries] == ["failed", "failed"]
    assert all(rows[s]["state"] == "cancelled" for s in rest)
    received = changeos_received(stack, servers)
    for server in canaries:
        previous = rows[server]["previous_image"]
        assert previous and previous != BROKEN_IMAGE
        assert rows[server]["error_code"] == "health_check_failed"
        # Exactly two changeos: the change, and the one rollback to the previous image.
        assert received[server] == [BROKEN_IMAGE, previous]
        status, health = http("GET", f"{stack.env['SIM_URL']}/_sim/health/{server}")
        deadline = time.monotonic() + 10
        while status != 200 and time.monotonic() < deadline:  # it boots for a second
            time.sleep(0.3)
            status, health = http("GET", f"{stack.env['SIM_URL']}/_sim/health/{server}")
        assert status == 200 and health["image_id"] == previous  # back, and healthy
        reasons = [h["reason"] for h in history(stack, server)]
        assert "rollback_started" in reasons and reasons[-1] == "rolled_back"
    assert all(received[s] == [] for s in rest)  # no other server received a changeos


def test_a_healthy_image_succeeds_only_after_its_first_healthy_probe(stack: ProcessStack) -> None:
    servers = [str(uuid.uuid4()) for _ in range(4)]
    batch = submit(stack, servers, GOOD_IMAGE, health_check=health_check(stack))
    final = wait_for(stack, batch["id"])
    assert final["state"] == "succeeded", final
    first_healthy = sim(stack, "/_sim/stats")["first_healthy_probe_by_server"]
    for server in servers:
        steps = history(stack, server)
        verifying = next(h for h in steps if h["to_state"] == "verifying")
        succeeded = steps[-1]
        assert succeeded["to_state"] == "succeeded" and succeeded["reason"] == "healthy"
        # Probed, and only called healthy once the simulator had answered healthy...
        assert succeeded["details"]["probes"] >= 1
        assert server in first_healthy and unix(succeeded["at"]) >= first_healthy[server] - 0.05
        # ...and never before initial_delay_s after the change ended.
        assert unix(succeeded["at"]) - unix(verifying["at"]) >= INITIAL_DELAY_S
        assert succeeded["details"]["healthy_after_s"] >= INITIAL_DELAY_S


def test_an_on_demand_rollback_of_the_failed_servers_sends_each_one_changeos(
    stack: ProcessStack,
) -> None:
    servers = [str(uuid.uuid4()) for _ in range(3)]
    batch = submit(stack, servers, BROKEN_IMAGE, health_check=health_check(stack, deadline_s=4))
    final = wait_for(stack, batch["id"])
    assert final["state"] == "partially_failed" and final["counts"]["failed"] == 3
    rows = servers_of(stack, batch["id"])
    never_changed = str(uuid.uuid4())
    status, refused = api(
        stack, "POST", f"/api/v1/batches/{batch['id']}/rollback", {"servers": [never_changed]}
    )
    assert status == 400 and "servers[0]" in refused["error"]["fields"]
    status, rollback = api(
        stack, "POST", f"/api/v1/batches/{batch['id']}/rollback", {"states": ["failed"]}
    )
    assert status == 202, rollback
    assert rollback["kind"] == "rollback" and rollback["parent_id"] == batch["id"]
    done = wait_for(stack, rollback["id"])
    assert done["state"] == "succeeded", done
    received = changeos_received(stack, servers)
    back = servers_of(stack, rollback["id"])
    for server in servers:
        previous = rows[server]["previous_image"]
        assert received[server] == [BROKEN_IMAGE, previous]  # exactly one changeos each
        assert back[server]["image_id"] == previous and back[server]["state"] == "succeeded"
        assert image_of(stack, server) == previous
    # A retry of a rollback batch is a rollback again: these servers are already back, so
    # each is skipped (pre-flight) and nothing more is sent.
    status, again = api(
        stack, "POST", f"/api/v1/batches/{rollback['id']}/retry", {"states": ["succeeded"]}
    )
    assert status == 202, again
    assert again["kind"] == "rollback" and again["parent_id"] == rollback["id"]
    assert "imageid" not in again["os_change"]
    ended = wait_for(stack, again["id"])
    assert ended["state"] == "succeeded" and ended["counts"]["skipped"] == 3, ended
    assert changeos_received(stack, servers) == received


def test_backups_come_first_and_go_after_their_retention(stack: ProcessStack) -> None:
    servers = [str(uuid.uuid4()) for _ in range(3)]
    batch = submit(stack, servers, GOOD_IMAGE, backup={"mode": "image", "retention_s": 3})
    final = wait_for(stack, batch["id"])
    assert final["state"] == "succeeded", final
    rows = servers_of(stack, batch["id"])
    sent = {c["server_id"]: c["at"] for c in sim(stack, "/_sim/changeos")["calls"]}
    deadline = time.monotonic() + 30
    while True:  # the beat's retention sweep runs every second here
        calls = sim(stack, "/_sim/images/log")["calls"]
        deleted = {c["image_id"] for c in calls if c["kind"] == "delete"}
        if all(rows[s]["backup"]["image_id"] in deleted for s in servers):
            break
        assert time.monotonic() < deadline, calls
        time.sleep(0.5)
    created = {c["server_id"]: c for c in calls if c["kind"] == "create"}
    for server in servers:
        assert created[server]["active_at"] <= sent[server]  # backed up before the change
        notes = [h["reason"] for h in history(stack, server)]
        assert notes[-1] == "backup_deleted"


def test_more_backups_than_the_quota_leaves_is_a_422_and_stores_nothing(
    stack: ProcessStack,
) -> None:
    status, before = api(stack, "GET", "/api/v1/batches?limit=100")
    body = {
        "project_id": PROJECT,
        "region": "cn-north-4",
        "servers": [str(uuid.uuid4()) for _ in range(25)],
        "os_change": {"imageid": GOOD_IMAGE, "keyname": "KeyPair-v", "mode": "withStopServer"},
        "policy": {"backup": {"mode": "image"}},
    }
    status, refused = api(stack, "POST", "/api/v1/batches", body)
    assert status == 422, refused
    assert refused["error"]["code"] == "backup_quota"
    numbers = refused["error"]["backup_quota"]
    assert numbers["needed"] == 25 and numbers["quota"] == 20 and numbers["left"] < 25
    _, after = api(stack, "GET", "/api/v1/batches?limit=100")
    assert len(after["items"]) == len(before["items"])  # nothing stored
