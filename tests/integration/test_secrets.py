"""Secrets never leak, and each project is reimaged with its own cloud credentials.

One real stack (API, worker, beat, simulator; PostgreSQL; Redis) runs batches that carry known
secrets: an admin password, cloud-init user data, cloud keys from an owner-only credentials file
and from the environment, the bootstrap API token, a created API token, the webhook secret and
the sealing key. Afterwards every one of them is searched for, in every form we could have
written it, in a pg_dump of the database, every log line of our processes, /metrics, and every
webhook delivery (body and headers).
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.stack import FullStack, http, start_full_stack
from tests.integration.webhook_receiver import Receiver

BOOTSTRAP = "bootstrap-Tok3n-d41d8cd98f00b204"
PROJECT = "0605767bd8b5d3f92f0ac0123456789a"  # has its own keys in the credentials file
OTHER = "1111767bd8b5d3f92f0ac0123456789b"  # falls back to the file's default keys
AK, SK = "AKPROJECTKEY0001", "sk-project-Secr3t-9c1d"
DEFAULT_AK, DEFAULT_SK = "AKDEFAULTKEY0002", "sk-default-Secr3t-77aa"
ENV_AK, ENV_SK = "AKENVIRONMENT003", "sk-environment-Secr3t-5b2e"
ADMINPASS = "Zx9-Adm1n-Pass!"
USER_DATA_MARKER = "USERDATA-MARKER-7f3a-do-not-log"
WEBHOOK_SECRET = "whsec-Secr3t-0c9e1f"
SEALING_KEY = "sealing-Key-Secr3t-4411"
TERMINAL = {"succeeded", "partially_failed", "aborted", "cancelled"}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    yield running
    running.stop()


@pytest.fixture
def stack(
    tmp_path: Path, postgres_url: str, redis_url: str, receiver: Receiver
) -> Iterator[FullStack]:
    credentials = tmp_path / "credentials.json"
    credentials.write_text(
        json.dumps(
            {
                "default": {"ak": DEFAULT_AK, "sk": DEFAULT_SK},
                "projects": {PROJECT: {"ak": AK, "sk": SK}},
            }
        )
    )
    credentials.chmod(0o600)
    full = start_full_stack(
        tmp_path,
        database_url=postgres_url,
        redis_url=redis_url,
        token=BOOTSTRAP,
        ak=AK,  # the simulator accepts only the project's own keys
        sk=SK,
        project_id=PROJECT,
        simulator_args=["--job-seconds", "1"],
        extra_env={
            "HUAWEICLOUD_SDK_AK": ENV_AK,
            "HUAWEICLOUD_SDK_SK": ENV_SK,
            "ORCH_CREDENTIALS_FILE": str(credentials),
            "ORCH_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "ORCH_SECRET_KEY": SEALING_KEY,
            "ORCH_NOTIFY_URL": receiver.url("/global"),
        },
        # Every line our processes can write, so the search below covers the most.
        loglevel="DEBUG",
    )
    try:
        yield full
    finally:
        full.processes.stop_all()


def _wait(stack: FullStack, token: str, batch_id: str, states: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        status, batch = http("GET", f"{stack.api_url}/api/v1/batches/{batch_id}", token=token)
        assert status == 200, batch
        if batch["state"] in states:
            return batch
        assert time.monotonic() < deadline, f"{batch}\n{stack.processes.log_tail('worker')}"
        stack.processes.assert_alive()
        time.sleep(0.3)


def _forms(secret: str) -> list[str]:
    """The ways a secret could have been written down: as is, base64, JSON-escaped."""
    return [
        secret,
        base64.b64encode(secret.encode()).decode().rstrip("="),
        json.dumps(secret)[1:-1],
    ]


def test_secrets_never_leak_and_projects_use_their_own_keys(
    stack: FullStack, postgres_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    api = stack.api_url
    status, created = http(
        "POST",
        f"{api}/api/v1/tokens",
        token=BOOTSTRAP,
        body={"name": "release-bot", "role": "operator", "projects": [PROJECT, OTHER]},
    )
    assert status == 201
    operator = created["token"]
    user_data = base64.b64encode(f"#!/bin/sh\necho {USER_DATA_MARKER}\n".encode()).decode()
    servers = [str(uuid.uuid4()) for _ in range(5)]
    status, batch = http(
        "POST",
        f"{api}/api/v1/batches",
        token=operator,
        body={
            "project_id": PROJECT,
            "region": "cn-north-4",
            "servers": servers,
            "os_change": {
                "imageid": str(uuid.uuid4()),
                "adminpass": ADMINPASS,
                "metadata": {"user_data": user_data},
                "mode": "withStopServer",
            },
            "cloud_init": True,
            "notify_url": receiver.url("/batch"),
            "policy": {"poll_interval_s": 1},
        },
    )
    assert status == 202, batch
    done = _wait(stack, operator, batch["id"], TERMINAL)
    # The project's own keys (the only ones the simulator accepts) were used: changes went
    # through (a server the simulator builds without a system disk may fail, by design).
    assert done["state"] in {"succeeded", "partially_failed"} and done["counts"]["succeeded"] > 0
    assert done["has_secrets"] is False  # erased once no server needs them

    status, other = http(
        "POST",
        f"{api}/api/v1/batches",
        token=operator,
        body={
            "project_id": OTHER,
            "region": "cn-north-4",
            "servers": [str(uuid.uuid4())],
            "os_change": {
                "imageid": str(uuid.uuid4()),
                "adminpass": ADMINPASS,
                "mode": "withStopServer",
            },
        },
    )
    # The other project fell back to the default keys, which the cloud refuses: pre-flight
    # cannot read its fleet, so nothing is stored and the answer names the field and the code.
    assert status == 422, other
    assert other["error"]["code"] == "cloud_refused"
    assert other["error"]["cloud_code"] == "APIGW.0301"
    assert "project_id" in other["error"]["fields"]

    # Let the batch's webhooks go out.
    deadline = time.monotonic() + 30
    while len({r.json["batch_id"] for r in receiver.received()}) < 1:
        assert time.monotonic() < deadline, "webhooks were not delivered"
        time.sleep(0.3)
    with urllib.request.urlopen(f"{api}/metrics") as response:
        metrics = response.read().decode()

    secrets = {
        "adminpass": ADMINPASS,
        "user_data": user_data,
        "user_data script": USER_DATA_MARKER,
        "project SK": SK,
        "default SK": DEFAULT_SK,
        "environment SK": ENV_SK,
        "project AK": AK,
        "default AK": DEFAULT_AK,
        "environment AK": ENV_AK,
        "bootstrap token": BOOTSTRAP,
        "created token": operator,
        "webhook secret": WEBHOOK_SECRET,
        "sealing key": SEALING_KEY,
    }
    dump_url = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    dump = subprocess.run(
        ["pg_dump", "--data-only", dump_url], capture_output=True, text=True, check=True
    ).stdout
    assert "api_tokens" in dump and "server_history" in dump and "audit_log" in dump
    stack.processes.stop_all()  # flush every log
    logs = {
        path.name: path.read_text(errors="replace")
        for path in tmp_path.glob("*.log")
        if path.name != "simulator.log"  # the simulator stands for the cloud, which has the keys
    }
    assert {"api.log", "worker.log", "beat.log"} <= set(logs)
    assert any('"batch_id"' in line for line in logs["worker.log"].splitlines())
    webhooks = "\n".join(
        json.dumps(r.headers) + r.body.decode(errors="replace") for r in receiver.received()
    )
    places = {"database dump": dump, "metrics": metrics, "webhooks": webhooks, **logs}

    leaks = [
        f"{name} found in {where}"
        for name, secret in secrets.items()
        for form in _forms(secret)
        for where, content in places.items()
        if form in content
    ]
    assert not leaks, "\n".join(leaks)
    # And the search itself works: what is not secret is there to be found.
    assert batch["id"] in dump and batch["id"] in webhooks and "reimage_servers" in metrics
