"""Issue 17 part 3 on real processes: with the beat stopped (no scheduled tick at all), a batch
still runs to its end, because the API kicks a tick when it accepts the batch, each task hands
on its servers' next looks itself, a sweep hands on the ended jobs waiting for it, and every
server that ends kicks the tick that claims the next one and finishes the batch. (Every wait
here is within the 2-s horizon of handed-on looks; longer waits are the beat's to find.)"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.stack import FullStack, http, start_full_stack

pytestmark = pytest.mark.e2e

TOKEN = "kicks-token-abcdefghijklmnopq"
AK, SK = "KICKSACCESSKEY000001", "kicks-secret-key-000000000000000000000001"
PROJECT = "0605767bd8b5d3f92f0ac0123456789c"
SERVERS = 30
TERMINAL = {"succeeded", "partially_failed", "aborted", "cancelled"}


@pytest.fixture
def stack(tmp_path: Path, postgres_url: str, redis_url: str) -> Iterator[FullStack]:
    full = start_full_stack(
        tmp_path,
        database_url=postgres_url,
        redis_url=redis_url,
        token=TOKEN,
        ak=AK,
        sk=SK,
        project_id=PROJECT,
        simulator_args=["--job-seconds", "1", "--seed", "7"],
        worker_concurrency=2,
    )
    try:
        yield full
    finally:
        full.processes.stop_all()


def test_a_batch_runs_to_its_end_without_the_beat(stack: FullStack) -> None:
    stack.processes.kill("beat")
    servers = [str(uuid.uuid4()) for _ in range(SERVERS)]
    status, batch = http(
        "POST",
        f"{stack.api_url}/api/v1/batches",
        token=TOKEN,
        body={
            "project_id": PROJECT,
            "region": "cn-north-4",
            "servers": servers,
            "os_change": {
                "imageid": str(uuid.uuid4()),
                "keyname": "KeyPair-kicks",
                "mode": "withStopServer",
            },
            "cloud_init": False,
            # Fewer slots than servers: each server that ends must kick the claim of the next.
            "policy": {"max_in_flight": 10, "poll_interval_s": 1, "job_timeout_s": 600},
        },
    )
    assert status == 202, batch
    deadline = time.monotonic() + 120  # stuck, not slow: the run takes a few seconds
    while batch["state"] not in TERMINAL:
        assert time.monotonic() < deadline, (
            f"the batch did not end without the beat: {batch['counts']}\n"
            + stack.processes.log_tail("worker")
        )
        stack.processes.assert_alive()
        time.sleep(0.5)
        status, batch = http("GET", f"{stack.api_url}/api/v1/batches/{batch['id']}", token=TOKEN)
        assert status == 200
    assert batch["state"] == "succeeded", batch
    assert batch["counts"]["succeeded"] == SERVERS
    _, stats = http("GET", f"{stack.sim_url}/_sim/stats")
    assert sum(stats["changeos_accepted"].values()) == SERVERS
    assert set(stats["changeos_received_by_server"].values()) == {1}  # each sent once
