"""End to end on real parts: simulator over HTTP, API, `reimage worker` and `reimage beat`
processes, real Redis, SQLite and PostgreSQL. 100 servers, about 10% of the jobs failing."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.stack import ProcessStack, http, start_full_stack

pytestmark = pytest.mark.e2e

TOKEN = "e2e-token-abcdefghijklmnop"
AK, SK = "E2EACCESSKEY0000001", "e2e-secret-key-000000000000000000000001"
PROJECT = "0605767bd8b5d3f92f0ac0123456789a"
TERMINAL = {"succeeded", "partially_failed", "aborted", "cancelled"}


@pytest.fixture
def stack(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[ProcessStack]:
    full = start_full_stack(
        tmp_path,
        database_url=database_url,
        redis_url=redis_url,
        token=TOKEN,
        ak=AK,
        sk=SK,
        project_id=PROJECT,
        simulator_args=["--job-seconds", "2", "--fail-ratio", "0.1", "--seed", "11"],
        extra_env={"ORCH_ECS_RATE": "200", "ORCH_ECS_BURST": "200"},
    )
    try:
        yield full.processes
    finally:
        full.processes.stop_all()


def all_servers(api: str, batch_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = ""
    while True:
        status, page = http(
            "GET", f"{api}/api/v1/batches/{batch_id}/servers?limit=40{cursor}", token=TOKEN
        )
        assert status == 200
        items += page["items"]
        if not page["next_cursor"]:
            return items
        cursor = f"&cursor={page['next_cursor']}"


def test_hundred_servers_end_in_their_cloud_jobs_state(stack: ProcessStack) -> None:
    api, sim = stack.env["API_URL"], stack.env["SIM_URL"]
    servers = [str(uuid.uuid4()) for _ in range(100)]
    image = str(uuid.uuid4())
    started = time.monotonic()
    status, batch = http(
        "POST",
        f"{api}/api/v1/batches",
        token=TOKEN,
        body={
            "project_id": PROJECT,
            "region": "cn-north-4",
            "servers": servers,
            "os_change": {
                "imageid": image,
                "keyname": "KeyPair-e2e",
                "userid": "7e25b1da389f4697a79df3a0e5bd494e",
                "metadata": {"BYOL": "true"},
                "mode": "withStopServer",
            },
            "cloud_init": False,
            "policy": {"max_in_flight": 100, "poll_interval_s": 1, "job_timeout_s": 600},
        },
    )
    assert status == 202, batch
    assert http("GET", f"{api}/api/v1/batches/{batch['id']}")[0] == 401

    deadline = time.monotonic() + 240
    while batch["state"] not in TERMINAL:
        assert time.monotonic() < deadline, f"batch stuck: {batch}\n{stack.log_tail('worker')}"
        stack.assert_alive()
        time.sleep(0.5)
        status, batch = http("GET", f"{api}/api/v1/batches/{batch['id']}", token=TOKEN)
        assert status == 200
    elapsed = time.monotonic() - started
    print(f"\n100-server batch ended {batch['state']} in {elapsed:.1f} s: {batch['counts']}")

    _, stats = http("GET", f"{sim}/_sim/stats")
    truth = stats["truth"]
    rows = all_servers(api, batch["id"])
    assert [r["server_id"] for r in rows] == servers  # nobody lost, nobody added
    for row in rows:
        expected = {"SUCCESS": "succeeded", "FAIL": "failed"}[truth[row["server_id"]]["job_status"]]
        assert row["state"] == expected, row
        assert row["job_id"] == truth[row["server_id"]]["job_id"]
        if expected == "failed":
            assert row["error_code"] == "Ecs.0202" and row["error_message"]
    assert stats["changeos_accepted"] == {s: 1 for s in servers}
    assert stats["duplicate_submissions"] == 0
    failed = sum(1 for r in rows if r["state"] == "failed")
    assert 0 < failed < 30
    assert batch["state"] == "partially_failed"
    assert batch["counts"]["failed"] == failed
    assert batch["counts"]["succeeded"] == 100 - failed

    for row in rows:
        _, history = http("GET", f"{api}/api/v1/servers/{row['server_id']}/history", token=TOKEN)
        path = [(h["from_state"], h["to_state"]) for h in history["items"]]
        assert path[0] == (None, "pending")
        assert ("pending", "submitting") in path
        assert ("submitting", "running") in path
        assert path[-1] == ("running", row["state"])
        last = history["items"][-1]
        assert last["job_id"] == row["job_id"]
        assert last["details"]["job"]["status"] in ("SUCCESS", "FAIL")
        assert all(h["batch_id"] == batch["id"] for h in history["items"])
