"""A batch against a realistic cloud (issue 17): the simulator over HTTPS with a CA of its own and
30 ms of latency per call, real `reimage worker`, `beat` and `api` processes, PostgreSQL, Redis.

Every server succeeds with exactly one changeos; the simulator's own count of the connections
(each a TLS handshake) it accepted stays far below one per server, because every worker process
keeps one session whose connections all its tasks reuse (before issue 17 every server opened a
session of its own: at least one connection per server). A worker that does not trust the CA
pauses the batch with the certificate's reason and sends nothing.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.stack import FullStack, http, stack_on_fresh_database

pytestmark = pytest.mark.e2e

TOKEN = "tls-e2e-token-abcdefghijklmnop"
AK, SK = "TLSACCESSKEY0000001", "tls-secret-key-000000000000000000000001"
PROJECT = "0605767bd8b5d3f92f0ac0123456789a"
TERMINAL = {"succeeded", "partially_failed", "aborted", "cancelled"}
SERVERS = 40
WORKERS, CONCURRENCY = 1, 4


def _options(**extra: Any) -> dict[str, Any]:
    return {
        "token": TOKEN,
        "ak": AK,
        "sk": SK,
        "project_id": PROJECT,
        "simulator_args": ["--job-seconds", "1", "--seed", "17"],
        # A budget of 20 calls a second, 2 at once: a connection pool holds as many
        # connections as calls were in flight at once, so this keeps them few however many
        # servers there are (the batch takes about 5 s of calls).
        "extra_env": {"ORCH_ECS_RATE": "10", "ORCH_ECS_BURST": "1"},
        "worker_concurrency": CONCURRENCY,
        "tls": True,
        "latency_ms": 30,
        **extra,
    }


@pytest.fixture
def tls_stack(tmp_path: Path) -> Iterator[FullStack]:
    with stack_on_fresh_database(tmp_path, redis_db=5, **_options()) as full:
        yield full


@pytest.fixture
def distrustful_worker_stack(tmp_path: Path) -> Iterator[FullStack]:
    """The API trusts the simulator's CA (pre-flight passes); the worker was not told of it."""
    options = _options(worker_env={"ORCH_ECS_CA_BUNDLE": ""})
    with stack_on_fresh_database(tmp_path, redis_db=4, **options) as full:
        yield full


def _fleet(stack: FullStack) -> list[str]:
    """Servers the project holds (listed, so pre-flight reads them in one list page)."""
    ids = [str(uuid.uuid4()) for _ in range(SERVERS)]
    status, body = stack.sim("POST", "/_sim/servers", {"servers": [{"id": i} for i in ids]})
    assert status == 200 and body["servers"] == ids
    return ids


def _submit(stack: FullStack, servers: list[str]) -> dict[str, Any]:
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
                "keyname": "KeyPair-tls",
                "mode": "withStopServer",
            },
            "policy": {"max_in_flight": SERVERS, "poll_interval_s": 1, "job_timeout_s": 600},
        },
        timeout=60,
    )
    assert status == 202, batch
    return batch


def _wait_for(
    stack: FullStack, batch: dict[str, Any], states: set[str], limit_s: float = 240
) -> dict[str, Any]:
    """Until the batch is in one of `states` (a limit so a broken build fails, not hangs)."""
    give_up = time.monotonic() + limit_s
    while batch["state"] not in states:
        assert time.monotonic() < give_up, (
            f"batch never reached {states}: {batch}\n{stack.processes.log_tail('worker')}"
        )
        stack.processes.assert_alive()
        time.sleep(0.5)
        status, batch = http("GET", f"{stack.api_url}/api/v1/batches/{batch['id']}", token=TOKEN)
        assert status == 200
    return batch


def _servers(stack: FullStack, batch_id: str) -> list[dict[str, Any]]:
    status, page = http(
        "GET", f"{stack.api_url}/api/v1/batches/{batch_id}/servers?limit=100", token=TOKEN
    )
    assert status == 200 and not page["next_cursor"]
    items: list[dict[str, Any]] = page["items"]
    return items


def test_a_batch_over_https_with_latency_reuses_connections_and_sends_once(
    tls_stack: FullStack,
) -> None:
    assert tls_stack.sim_url.startswith("https://") and tls_stack.ca_file is not None
    servers = _fleet(tls_stack)
    _, before = tls_stack.sim("GET", "/_sim/stats")
    batch = _wait_for(tls_stack, _submit(tls_stack, servers), TERMINAL)
    _, stats = tls_stack.sim("GET", "/_sim/stats")

    assert batch["state"] == "succeeded", batch
    rows = _servers(tls_stack, batch["id"])
    assert sorted(r["server_id"] for r in rows) == sorted(servers)
    assert {r["state"] for r in rows} == {"succeeded"}
    assert stats["changeos_received_by_server"] == {s: 1 for s in servers}
    assert stats["changeos_accepted"] == {s: 1 for s in servers}
    assert stats["duplicate_submissions"] == 0

    # Every connection of every process (API pre-flight, tick, sweeps, submissions, polls),
    # less the one this test's own stats call came on.
    connections = stats["connections"] - before["connections"] - 1
    calls = sum(stats["requests"].values()) - sum(before["requests"].values())
    print(f"\n{SERVERS} servers over TLS: {calls} cloud calls on {connections} connections")
    assert calls >= 2 * SERVERS  # a changeos and a job query each, at least
    assert connections <= WORKERS * CONCURRENCY * 3, (connections, calls)


def test_a_worker_without_the_ca_pauses_the_batch_on_the_certificate(
    distrustful_worker_stack: FullStack,
) -> None:
    stack = distrustful_worker_stack
    servers = _fleet(stack)
    batch = _wait_for(stack, _submit(stack, servers), {"paused", *TERMINAL}, limit_s=120)

    assert batch["state"] == "paused", batch
    reason = batch["pause_reason"]
    assert "TLS.CertificateUntrusted" in reason and "ORCH_ECS_CA_BUNDLE" in reason, reason
    assert "TLS certificate is not trusted" in reason and "credentials" not in reason, reason
    assert "certificate" in reason and "\n" not in reason
    _, stats = stack.sim("GET", "/_sim/stats")
    assert stats["requests"]["changeos"] == 0  # nothing sent, so nothing to reconcile
    rows = _servers(stack, batch["id"])
    assert not [r for r in rows if r["state"] in ("failed", "running", "succeeded")]
    stack.processes.assert_alive()  # an error recorded, not a crash
