"""Rollout control with real processes: `reimage worker` and `reimage beat`, the API and the
simulator over HTTP, real Redis and PostgreSQL. One stack serves the whole module."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.integration.stack import ProcessStack, http, stack_on_fresh_database

pytestmark = pytest.mark.e2e

TOKEN = "rollout-token-abcdefghijkl"
AK, SK = "ROLLOUTACCESSKEY0001", "rollout-secret-key-0000000000000000000001"
PROJECT = "0605767bd8b5d3f92f0ac0123456789a"
GOOD_IMAGE = "e215580f-73ad-429d-b6f2-5433947433b0"
JOB_FAIL_CODE = "Ecs.0202"  # what the simulator's failing jobs answer
TERMINAL = {"succeeded", "partially_failed", "aborted", "cancelled"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessStack]:
    directory = tmp_path_factory.mktemp("rollout")
    with stack_on_fresh_database(
        directory,
        redis_db=13,
        token=TOKEN,
        ak=AK,
        sk=SK,
        project_id=PROJECT,
        simulator_args=["--job-seconds", "1", "--seed", "3", "--images", GOOD_IMAGE],
        extra_env={"ORCH_ECS_RATE": "500", "ORCH_ECS_BURST": "500"},
    ) as full:
        yield full.processes


def api(stack: ProcessStack, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    return http(method, stack.env["API_URL"] + path, token=TOKEN, body=body)


def sim_stats(stack: ProcessStack) -> dict[str, Any]:
    return http("GET", stack.env["SIM_URL"] + "/_sim/stats")[1]  # type: ignore[no-any-return]


def new_servers(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


def batch_body(servers: list[str], image: str = GOOD_IMAGE, **policy: Any) -> dict[str, Any]:
    return {
        "project_id": PROJECT,
        "region": "cn-north-4",
        "servers": servers,
        "os_change": {"imageid": image, "keyname": "KeyPair-r", "mode": "withStopServer"},
        "policy": {"poll_interval_s": 1, "job_timeout_s": 300, **policy},
    }


def submit(stack: ProcessStack, servers: list[str], **kwargs: Any) -> dict[str, Any]:
    status, batch = api(stack, "POST", "/api/v1/batches", batch_body(servers, **kwargs))
    assert status == 202, batch
    return batch  # type: ignore[no-any-return]


def wait_for(
    stack: ProcessStack, batch_id: str, states: set[str], timeout_s: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        stack.assert_alive()
        status, batch = api(stack, "GET", f"/api/v1/batches/{batch_id}")
        assert status == 200
        if batch["state"] in states:
            return batch  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"{batch}\n{stack.log_tail('worker')}"
        time.sleep(0.3)


def servers_of(stack: ProcessStack, batch_id: str) -> list[dict[str, Any]]:
    status, page = api(stack, "GET", f"/api/v1/batches/{batch_id}/servers?limit=1000")
    assert status == 200
    return page["items"]  # type: ignore[no-any-return]


def history(stack: ProcessStack, server_id: str) -> list[dict[str, Any]]:
    return api(stack, "GET", f"/api/v1/servers/{server_id}/history")[1]["items"]  # type: ignore[no-any-return]


def test_in_flight_limit_and_waves_in_order(stack: ProcessStack) -> None:
    http("POST", stack.env["SIM_URL"] + "/_sim/reset")
    servers = new_servers(24)
    batch = submit(stack, servers, max_in_flight=4, waves=[3, "50%"])
    done = wait_for(stack, batch["id"], TERMINAL)
    assert done["state"] == "succeeded"
    assert [w["size"] for w in done["waves"]] == [3, 12, 9]
    assert done["waves_total"] == 3
    assert sim_stats(stack)["max_concurrent_jobs"] <= 4
    rows = servers_of(stack, batch["id"])
    assert [r["wave"] for r in rows] == [1] * 3 + [2] * 12 + [3] * 9
    sent: dict[int, list[str]] = {}
    ended: dict[int, list[str]] = {}
    for row in rows:
        events = history(stack, row["server_id"])
        sent.setdefault(row["wave"], []).append(
            next(h["at"] for h in events if h["reason"] == "changeos_sent")
        )
        ended.setdefault(row["wave"], []).append(events[-1]["at"])
    for wave in (2, 3):  # a wave starts only when the one before has ended
        assert min(sent[wave]) >= max(ended[wave - 1])


def test_pause_stops_submissions_and_resume_continues(stack: ProcessStack) -> None:
    servers = new_servers(16)
    batch = submit(stack, servers, max_in_flight=2)
    deadline = time.monotonic() + 30
    while api(stack, "GET", f"/api/v1/batches/{batch['id']}")[1]["counts"]["succeeded"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    status, paused = api(
        stack,
        "POST",
        f"/api/v1/batches/{batch['id']}/pause",
        {"reason": "checking the first servers"},
    )
    assert status == 200 and paused["state"] == "paused"
    assert (
        paused["pause_reason"] == "checking the first servers"
        and paused["paused_by"] == "bootstrap"
    )
    assert api(stack, "POST", f"/api/v1/batches/{batch['id']}/pause")[0] == 200  # idempotent
    time.sleep(1.0)  # one tick, plus tasks already past their check
    accepted = sum(sim_stats(stack)["changeos_accepted"].get(s, 0) for s in servers)
    time.sleep(3.0)
    assert sum(sim_stats(stack)["changeos_accepted"].get(s, 0) for s in servers) == accepted
    assert accepted < len(servers)
    status, resumed = api(stack, "POST", f"/api/v1/batches/{batch['id']}/resume")
    assert status == 200 and resumed["state"] == "running" and resumed["pause_reason"] is None
    done = wait_for(stack, batch["id"], TERMINAL)
    assert done["state"] == "succeeded" and done["counts"]["succeeded"] == 16
    assert api(stack, "POST", f"/api/v1/batches/{batch['id']}/resume")[0] == 409
    status, body = api(stack, "POST", f"/api/v1/batches/{batch['id']}/pause")
    assert status == 409 and body["error"]["state"] == "succeeded"


def test_cancel_follows_running_jobs_and_cancels_the_rest(stack: ProcessStack) -> None:
    servers = new_servers(12)
    batch = submit(stack, servers, max_in_flight=2)
    deadline = time.monotonic() + 30
    while sum(sim_stats(stack)["changeos_accepted"].get(s, 0) for s in servers) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    status, cancelling = api(stack, "POST", f"/api/v1/batches/{batch['id']}/cancel")
    assert status == 200 and cancelling["cancel_requested"] is True
    done = wait_for(stack, batch["id"], TERMINAL)
    assert done["state"] == "cancelled"
    accepted = {s for s in servers if sim_stats(stack)["changeos_accepted"].get(s)}
    rows = {r["server_id"]: r for r in servers_of(stack, batch["id"])}
    for server in servers:  # what was sent is followed to its end; nothing else is sent
        assert rows[server]["state"] == ("succeeded" if server in accepted else "cancelled")
    assert done["counts"]["cancelled"] == len(servers) - len(accepted) > 0
    cancelled = next(s for s in servers if s not in accepted)
    assert history(stack, cancelled)[-1]["reason"] == "cancelled"
    assert api(stack, "POST", f"/api/v1/batches/{batch['id']}/cancel")[0] == 200  # idempotent


def test_error_budget_aborts_then_retry_of_the_failed(stack: ProcessStack) -> None:
    servers = new_servers(10)
    # Every job fails while this is set (a bad image pre-flight cannot see: it boots nothing).
    http("POST", stack.env["SIM_URL"] + "/_sim/faults", body={"fail_ratio": 1.0})
    try:
        batch = submit(stack, servers, max_in_flight=1, max_failures=3)
        done = wait_for(stack, batch["id"], TERMINAL)
    finally:
        http("POST", stack.env["SIM_URL"] + "/_sim/faults", body={"fail_ratio": 0.0})
    assert done["state"] == "aborted" and done["abort_reason"] == "error_budget"
    assert done["counts"]["failed"] == 4  # 3 allowed: the fourth failure stops the batch
    assert done["counts"]["cancelled"] == 6
    assert done["error_budget"] == {"allowed": 3, "used": 4, "left": 0}
    rows = servers_of(stack, batch["id"])
    assert [r["state"] for r in rows] == ["failed"] * 4 + ["cancelled"] * 6
    assert {r["error_code"] for r in rows[:4]} == {JOB_FAIL_CODE}
    assert history(stack, rows[-1]["server_id"])[-1]["reason"] == "error_budget"

    status, child = api(
        stack,
        "POST",
        f"/api/v1/batches/{batch['id']}/retry",
        {
            "states": ["failed", "cancelled"],
            "os_change": {"imageid": GOOD_IMAGE, "keyname": "KeyPair-r", "mode": "withStopServer"},
        },
    )
    assert status == 202, child
    assert child["parent_id"] == batch["id"] and child["total"] == 10
    assert wait_for(stack, child["id"], TERMINAL)["state"] == "succeeded"
    bad = api(stack, "POST", f"/api/v1/batches/{batch['id']}/retry", {"states": ["running"]})
    assert bad[0] == 400 and "states" in bad[1]["error"]["fields"]


def test_skip_matching_and_dry_run(stack: ProcessStack) -> None:
    servers = new_servers(4)
    first = submit(stack, servers[:2])
    assert wait_for(stack, first["id"], TERMINAL)["state"] == "succeeded"
    before = sim_stats(stack)["requests"]["changeos"]
    status, report = api(
        stack,
        "POST",
        "/api/v1/batches?dry_run=true",
        batch_body(servers, max_in_flight="50%", waves=[1, 1], max_failures="25%"),
    )
    assert status == 200 and report["dry_run"] is True
    verdicts = {r["server_id"]: r["verdict"] for r in report["servers"]}
    assert verdicts == {
        servers[0]: "skip",
        servers[1]: "skip",
        servers[2]: "submit",
        servers[3]: "submit",
    }
    assert report["plan"] == {
        "waves": [1, 1, 1, 1],
        "max_in_flight": 2,
        "max_failures": 1,
        "pause_after_waves": False,
        "wave_delay_s": 0.0,
        "on_incompatible": "reject",
        "health_check": None,
        "on_unhealthy": "keep",
        "backup": None,
        "spread": None,
        "waves_by": None,
        "domains": None,
    }
    assert sim_stats(stack)["requests"]["changeos"] == before  # the dry run sent nothing
    assert all(s not in sim_stats(stack)["changeos_accepted"] for s in servers[2:])
    second = submit(stack, servers)
    done = wait_for(stack, second["id"], TERMINAL)
    assert done["counts"]["skipped"] == 2 and done["counts"]["succeeded"] == 2
    for server in servers[:2]:
        assert history(stack, server)[-1]["reason"] == "already_on_image"
    assert {s: sim_stats(stack)["changeos_accepted"][s] for s in servers} == {s: 1 for s in servers}


def test_twenty_concurrent_overlapping_posts_one_winner_per_server(stack: ProcessStack) -> None:
    shared = new_servers(10)
    bodies = [
        batch_body(
            [shared[i % 10], shared[(i + 3) % 10], *new_servers(1)],
            max_in_flight=1,
            waves=[1],
            pause_after_waves=True,
        )
        for i in range(20)
    ]
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda b: api(stack, "POST", "/api/v1/batches", b), bodies))
    winners = [batch for status, batch in results if status == 202]
    losers = [batch for status, batch in results if status == 409]
    assert len(winners) + len(losers) == 20 and winners and losers
    owners: dict[str, str] = {}
    for batch in winners:
        for row in servers_of(stack, batch["id"]):
            assert row["server_id"] not in owners, "two batches hold one server"
            owners[row["server_id"]] = batch["id"]
    for loser in losers:
        assert loser["error"]["conflicts"]
        assert all(c["server_id"] in shared for c in loser["error"]["conflicts"])
    for batch in winners:  # leave nothing running for the next test
        api(stack, "POST", f"/api/v1/batches/{batch['id']}/cancel")


def test_selector_resolves_to_exactly_the_tagged_servers_across_pages(stack: ProcessStack) -> None:
    sim = stack.env["SIM_URL"]
    web_prod = new_servers(2500)  # three pages of the list API (1000 a page)
    decoys = {
        "web-dev": (new_servers(150), ["role=web", "env=dev"]),
        "db-prod": (new_servers(150), ["role=db", "env=prod"]),
    }
    entries = [
        {"id": s, "name": f"web-{i:04d}", "tags": ["role=web", "env=prod"]}
        for i, s in enumerate(web_prod)
    ]
    for name, (ids, tags) in decoys.items():
        entries += [{"id": s, "name": f"{name}-{i}", "tags": tags} for i, s in enumerate(ids)]
    status, _ = http("POST", sim + "/_sim/servers", body={"servers": entries})
    assert status == 200
    body = batch_body([], waves=[1], pause_after_waves=True)
    body.pop("servers")
    body["selector"] = {"tags": ["role=web", "env=prod"], "name": "web-"}
    lists_before = sim_stats(stack)["requests"]["list_servers"]
    status, report = api(stack, "POST", "/api/v1/batches?dry_run=true", body)
    assert status == 200 and report["total"] == 2500
    assert {r["server_id"] for r in report["servers"]} == set(web_prod)
    assert sim_stats(stack)["requests"]["list_servers"] - lists_before >= 3
    status, batch = api(stack, "POST", "/api/v1/batches", body)
    assert status == 202 and batch["total"] == 2500
    assert batch["selector"]["tags"] == ["role=web", "env=prod"]
    # Frozen at submission: a server tagged later does not join the batch.
    http(
        "POST",
        sim + "/_sim/servers",
        body={
            "servers": [
                {"id": str(uuid.uuid4()), "name": "web-late", "tags": ["role=web", "env=prod"]}
            ]
        },
    )
    api(stack, "POST", f"/api/v1/batches/{batch['id']}/cancel")
    done = wait_for(stack, batch["id"], TERMINAL)
    assert done["total"] == 2500 and done["state"] == "cancelled"
    stored = servers_of(stack, batch["id"])
    status, page = api(stack, "GET", f"/api/v1/batches/{batch['id']}/servers?limit=1000")
    seen = {r["server_id"] for r in page["items"]}
    while page["next_cursor"]:
        page = api(
            stack,
            "GET",
            f"/api/v1/batches/{batch['id']}/servers?limit=1000&cursor={page['next_cursor']}",
        )[1]
        seen |= {r["server_id"] for r in page["items"]}
    assert seen == set(web_prod) and len(stored) == 1000
    nothing = dict(body, selector={"tags": ["role=none"]})
    status, error = api(stack, "POST", "/api/v1/batches", nothing)
    assert status == 400 and error["error"]["fields"] == {"selector": "matched no servers"}
