"""Failure domains, maintenance windows and approvals with real processes: `reimage worker`
and `reimage beat`, the API and the simulator over HTTP (whose servers have zones,
anti-affinity groups and tags, and whose stats give the peak of concurrent changeos jobs per
zone and per group: the cloud's own view), real Redis and PostgreSQL. One stack serves the
whole module. (The clock tests prove the timings; these prove the processes keep them.)"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.integration.stack import ProcessStack, http, stack_on_fresh_database

pytestmark = pytest.mark.e2e

TOKEN = "domains-token-abcdefghijkl"
AK, SK = "DOMAINSACCESSKEY0001", "domains-secret-key-0000000000000000000001"
PROJECT = "0605767bd8b5d3f92f0ac0123456789a"
IMAGE = "e215580f-73ad-429d-b6f2-5433947433b0"
TERMINAL = {"succeeded", "partially_failed", "aborted", "cancelled"}
JOB_S = 1.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessStack]:
    directory = tmp_path_factory.mktemp("domains")
    with stack_on_fresh_database(
        directory,
        redis_db=10,
        token=TOKEN,
        ak=AK,
        sk=SK,
        project_id=PROJECT,
        simulator_args=["--job-seconds", str(JOB_S), "--seed", "4"],
        # A quick tick: a group's 15 servers go one after another, each waiting for a claim.
        extra_env={"ORCH_ECS_RATE": "500", "ORCH_ECS_BURST": "500", "ORCH_TICK_SECONDS": "0.25"},
    ) as full:
        yield full.processes


def api(stack: ProcessStack, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    return http(method, stack.env["API_URL"] + path, token=TOKEN, body=body)


def sim(stack: ProcessStack, method: str, path: str, body: Any = None) -> Any:
    status, answer = http(method, stack.env["SIM_URL"] + path, body=body)
    assert status == 200, answer
    return answer


def register(stack: ProcessStack, servers: list[dict[str, Any]]) -> None:
    sim(stack, "POST", "/_sim/servers", {"servers": servers})


def submit(stack: ProcessStack, servers: list[str], **policy: Any) -> dict[str, Any]:
    body = {
        "project_id": PROJECT,
        "region": "cn-north-4",
        "servers": servers,
        "os_change": {"imageid": IMAGE, "keyname": "KeyPair-d", "mode": "withStopServer"},
        "policy": {"poll_interval_s": 1, "job_timeout_s": 300, **policy},
    }
    status, batch = api(stack, "POST", "/api/v1/batches", body)
    assert status == 202, batch
    return batch  # type: ignore[no-any-return]


def wait_for(stack: ProcessStack, batch_id: str, timeout_s: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        stack.assert_alive()
        status, batch = api(stack, "GET", f"/api/v1/batches/{batch_id}")
        assert status == 200
        if batch["state"] in TERMINAL:
            return batch  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"{batch}\n{stack.log_tail('worker')}"
        time.sleep(0.5)


def unix(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_300_servers_in_3_zones_and_20_groups_never_exceed_their_limits(
    stack: ProcessStack,
) -> None:
    zones = [f"cn-north-4{z}" for z in "abc"]
    groups = [str(uuid.uuid4()) for _ in range(20)]
    servers = [
        {
            "id": str(uuid.uuid4()),
            "availability_zone": zones[i % 3],
            "server_group": groups[i % 20],
        }
        for i in range(300)
    ]
    register(stack, servers)
    ids = [s["id"] for s in servers]
    started = time.monotonic()
    batch = submit(
        stack,
        ids,
        max_in_flight=100,
        spread=[
            {"by": "availability_zone", "max_in_flight": 5},
            {"by": "server_group", "max_in_flight": 1},
        ],
    )
    assert batch["domains"]["sizes"]["availability_zone"] == dict.fromkeys(zones, 100)
    final = wait_for(stack, batch["id"])
    wall = time.monotonic() - started
    assert final["state"] in ("succeeded", "partially_failed"), final
    stats = sim(stack, "GET", "/_sim/stats")
    by_zone, by_group = stats["peak_jobs_by_zone"], stats["peak_jobs_by_group"]
    # The cloud's own view: never more than 5 jobs at once in a zone, 1 in a group...
    assert all(by_zone[z] <= 5 for z in zones), by_zone
    assert all(by_group[g] <= 1 for g in groups), by_group
    # ...and no slower than the limits force: every zone reached its 5.
    assert all(by_zone[z] == 5 for z in zones), by_zone
    # The limits allow 15 jobs at once (3 zones x 5; 20 groups x 1 would allow 20): 300 / 15
    # rounds of one job each is the bound.
    bound = 300 / 15 * JOB_S
    print(f"\n[domains] 300 servers, spread zone 5 / group 1: {wall:.1f} s, bound {bound:.0f} s")


def test_waves_by_zone_finish_zone_a_before_zone_b_receives_a_changeos(
    stack: ProcessStack,
) -> None:
    servers = [
        {"id": str(uuid.uuid4()), "availability_zone": zone}
        for zone in ("cn-north-4b", "cn-north-4a") * 6
    ]
    register(stack, servers)
    ids = [s["id"] for s in servers]
    since = time.time()
    batch = submit(stack, ids, waves_by="availability_zone", waves=[1, "100%"], max_in_flight=10)
    assert batch["domains"]["wave_labels"] == [
        "cn-north-4a", "cn-north-4a", "cn-north-4b", "cn-north-4b",
    ]  # fmt: skip
    final = wait_for(stack, batch["id"])
    assert final["state"] == "succeeded", final
    calls = sim(stack, "GET", f"/_sim/changeos?since={since}")["calls"]
    received = {c["server_id"]: c["at"] for c in calls}
    zone_of = {s["id"]: s["availability_zone"] for s in servers}
    ended = {}
    for server in ids:
        _, page = api(stack, "GET", f"/api/v1/servers/{server}/history")
        ended[server] = unix(page["items"][-1]["at"])
    last_a = max(ended[s] for s in ids if zone_of[s] == "cn-north-4a")
    first_b = min(received[s] for s in ids if zone_of[s] == "cn-north-4b")
    assert last_a < first_b


def changeos_since(stack: ProcessStack, since: float) -> list[dict[str, Any]]:
    return sim(stack, "GET", f"/_sim/changeos?since={since}")["calls"]  # type: ignore[no-any-return]


def test_a_window_opening_20_s_after_submission_holds_every_changeos_until_then(
    stack: ProcessStack,
) -> None:
    servers = [{"id": str(uuid.uuid4())} for _ in range(4)]
    register(stack, servers)
    opens = datetime.now(UTC) + timedelta(seconds=20)
    since = time.time()
    batch = submit(
        stack,
        [s["id"] for s in servers],
        windows=[{"start": opens.isoformat(), "end": (opens + timedelta(hours=1)).isoformat()}],
    )
    deadline = time.monotonic() + 10
    while True:  # the tick notices the window and says when it opens
        _, view = api(stack, "GET", f"/api/v1/batches/{batch['id']}")
        if view["waiting_for_window"]:
            break
        assert time.monotonic() < deadline, view
        time.sleep(0.3)
    assert abs(unix(view["window_opens_at"]) - opens.timestamp()) < 0.01
    final = wait_for(stack, batch["id"])
    assert final["state"] == "succeeded" and not final["waiting_for_window"]
    sent = [c["at"] for c in changeos_since(stack, since)]
    assert len(sent) == 4 and min(sent) >= opens.timestamp()  # none before it opened


def test_a_batch_needing_two_approvals_does_nothing_until_the_second_distinct_approver(
    stack: ProcessStack,
) -> None:
    approvers = []
    for name in ("approver-1", "approver-2"):
        status, made = api(stack, "POST", "/api/v1/tokens", {"name": name, "role": "approver"})
        assert status == 201, made
        approvers.append(made["token"])
    servers = [{"id": str(uuid.uuid4())} for _ in range(3)]
    register(stack, servers)
    since = time.time()
    batch = submit(stack, [s["id"] for s in servers], approvals={"before_start": 2})
    path = f"{stack.env['API_URL']}/api/v1/batches/{batch['id']}"

    def waiting() -> dict[str, Any]:
        deadline = time.monotonic() + 10
        while True:
            _, view = api(stack, "GET", f"/api/v1/batches/{batch['id']}")
            if view["state"] == "paused" and view["approval_gate"] == 0:
                return view  # type: ignore[no-any-return]
            assert time.monotonic() < deadline, view
            time.sleep(0.3)

    waiting()
    status, refused = api(stack, "POST", f"/api/v1/batches/{batch['id']}/approve", {})
    assert status == 403 and "submitter" in refused["error"]["message"]  # four eyes
    status, _ = api(stack, "POST", f"/api/v1/batches/{batch['id']}/resume")
    assert status == 409  # a resume cannot open an approval gate
    status, first = http("POST", path + "/approve", token=approvers[0], body={"comment": "ok"})
    assert status == 200 and first["state"] == "paused", first
    status, _ = http("POST", path + "/approve", token=approvers[0], body={})
    assert status == 409  # the same person counts once
    time.sleep(3)  # a few ticks with one approval: still nothing
    assert changeos_since(stack, since) == []
    status, second = http("POST", path + "/approve", token=approvers[1], body={})
    assert status == 200 and second["state"] == "running", second
    final = wait_for(stack, batch["id"])
    assert final["state"] == "succeeded"
    assert [d["principal"] for d in final["approvals"]["decisions"]] == [
        "approver-1",
        "approver-2",
    ]
    assert len(changeos_since(stack, since)) == 3
    _, audit = api(stack, "GET", f"/api/v1/audit?action=batch.approve&batch_id={batch['id']}")
    outcomes = sorted(entry["status"] for entry in audit["items"])
    assert outcomes == [200, 200, 403, 409]  # every attempt is in the audit log
