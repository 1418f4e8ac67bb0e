"""The operator CLI against a real stack: submit --watch, status, servers, history, controls,
output formats, exit codes and one-line errors."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.stack import ProcessStack, start_full_stack

pytestmark = pytest.mark.e2e

TOKEN = "cli-token-0123456789abcdef"
AK, SK = "CLIACCESSKEY00000001", "cli-secret-key-00000000000000000000001"
PROJECT = "0605767bd8b5d3f92f0ac0123456789a"
IMAGE = "e215580f-73ad-429d-b6f2-5433947433b0"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessStack]:
    directory = tmp_path_factory.mktemp("cli")
    url = f"sqlite:///{directory / 'cli.db'}"
    from migrations import upgrade

    upgrade(url)
    full = start_full_stack(
        directory,
        database_url=url,
        redis_url="redis://127.0.0.1:6379/12",
        token=TOKEN,
        ak=AK,
        sk=SK,
        project_id=PROJECT,
        simulator_args=["--job-seconds", "1", "--fail-ratio", "0.3", "--seed", "5"],
        worker_concurrency=2,
    )
    processes = full.processes
    try:
        yield processes
    finally:
        processes.stop_all()


def cli(
    stack: ProcessStack | None, *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}
    if stack is not None:
        base |= {"ORCH_API_URL": stack.env["API_URL"], "ORCH_API_TOKEN": TOKEN}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
        env=base | (env or {}),
    )


def test_submit_watch_then_read_it_back(stack: ProcessStack, tmp_path: Path) -> None:
    servers = [str(uuid.uuid4()) for _ in range(10)]
    source = tmp_path / "fleet.csv"
    source.write_text("name,server_id\n" + "".join(f"web{i},{s}\n" for i, s in enumerate(servers)))
    done = cli(
        stack,
        "submit",
        "--project-id",
        PROJECT,
        "--region",
        "cn-north-4",
        "--image",
        IMAGE,
        "--keyname",
        "KeyPair-cli",
        "--servers",
        str(source),
        "--csv-column",
        "server_id",
        "--max-in-flight",
        "5",
        "--watch",
        "--output",
        "json",
    )
    final = json.loads(done.stdout)[0]
    assert final["state"] in ("succeeded", "partially_failed"), done.stderr
    assert done.returncode == (0 if final["state"] == "succeeded" else 1)
    batch_id = final["id"]

    status = cli(stack, "status", batch_id, "--output", "json")
    assert json.loads(status.stdout)[0]["id"] == batch_id
    listed = cli(stack, "servers", batch_id, "--output", "csv")
    rows = list(csv.DictReader(io.StringIO(listed.stdout)))
    assert [r["server_id"] for r in rows] == servers
    assert {r["image_id"] for r in rows} == {IMAGE}  # the image each server was sent
    failed = cli(stack, "servers", batch_id, "--state", "failed", "--output", "json")
    assert all(r["state"] == "failed" for r in json.loads(failed.stdout))
    history = cli(stack, "history", servers[0], "--output", "json")
    assert json.loads(history.stdout)[0]["to_state"] == "pending"
    batches = cli(stack, "batches", "--output", "json")
    assert batch_id in {b["id"] for b in json.loads(batches.stdout)}
    table = cli(stack, "status", batch_id)
    assert batch_id in table.stdout and table.returncode == done.returncode
    again = cli(stack, "resume", batch_id)
    assert again.returncode == 2 and again.stderr.count("\n") == 1
    assert "cannot resume" in again.stderr


def test_servers_from_stdin_pause_cancel_retry(stack: ProcessStack) -> None:
    servers = "\n".join(str(uuid.uuid4()) for _ in range(6))
    submitted = cli(
        stack,
        "submit",
        "--project-id",
        PROJECT,
        "--region",
        "cn-north-4",
        "--image",
        IMAGE,
        "--keyname",
        "k",
        "--servers",
        "-",
        "--max-in-flight",
        "1",
        "--output",
        "json",
        stdin=servers,
    )
    assert submitted.returncode == 0, submitted.stderr
    batch_id = json.loads(submitted.stdout)[0]["id"]
    paused = cli(stack, "pause", batch_id, "--reason", "look first", "--output", "json")
    assert json.loads(paused.stdout)[0]["pause_reason"] == "look first"
    cancelled = cli(stack, "cancel", batch_id, "--output", "json")
    assert json.loads(cancelled.stdout)[0]["cancel_requested"] is True
    ended = cli(stack, "watch", batch_id, "--output", "json")
    assert ended.returncode == 1 and json.loads(ended.stdout)[0]["state"] == "cancelled"
    retried = cli(stack, "retry", batch_id, "--states", "cancelled", "--output", "json")
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout)[0]["parent_id"] == batch_id


def test_bad_input_and_unreachable_api(stack: ProcessStack, tmp_path: Path) -> None:
    bad = cli(
        stack,
        "submit",
        "--project-id",
        PROJECT,
        "--region",
        "cn-north-4",
        "--image",
        "not-a-uuid",
        "--keyname",
        "k",
        "--servers",
        "-",
        stdin="also-not-a-uuid\n",
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "servers[0]" in bad.stderr and "os_change.imageid" in bad.stderr
    missing = cli(stack, "submit", "--region", "cn-north-4")
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    nofile = cli(
        stack,
        "submit",
        "--project-id",
        PROJECT,
        "--region",
        "cn-north-4",
        "--image",
        IMAGE,
        "--keyname",
        "k",
        "--servers",
        str(tmp_path / "absent.txt"),
    )
    assert nofile.returncode == 2 and "cannot read" in nofile.stderr
    unreachable = cli(
        None, "batches", env={"ORCH_API_URL": "http://127.0.0.1:1", "ORCH_API_TOKEN": "t"}
    )
    assert unreachable.returncode == 3 and "unreachable" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr + bad.stderr + missing.stderr
    no_token = cli(None, "batches")
    assert no_token.returncode == 2 and "ORCH_API_TOKEN" in no_token.stderr


def test_dry_run_prints_verdicts_by_code_and_an_incompatible_fleet_exits_non_zero(
    stack: ProcessStack,
) -> None:
    fine = [str(uuid.uuid4()) for _ in range(3)]
    locked = [str(uuid.uuid4()) for _ in range(2)]
    added = subprocess.run(
        [
            "curl",
            "-sf",
            "-X",
            "POST",
            stack.env["SIM_URL"] + "/_sim/servers",
            "-d",
            json.dumps({"servers": [{"id": s, "locked": True} for s in locked]}),
        ],
        capture_output=True,
        text=True,
    )
    assert added.returncode == 0, added.stderr
    args = ("submit", "--project-id", PROJECT, "--region", "cn-north-4", "--image", IMAGE)
    args += ("--keyname", "KeyPair-cli", "--servers", "-")
    clean = cli(stack, *args, "--dry-run", stdin="\n".join(fine))
    assert clean.returncode == 0, clean.stderr
    assert "dry run of 3 servers" in clean.stdout and "submit" in clean.stdout
    mixed = cli(stack, *args, "--dry-run", stdin="\n".join(fine + locked))
    assert mixed.returncode == 1, mixed.stderr
    assert "server_locked: 2 server(s), blocks: the server is locked" in mixed.stdout
    for server in locked:  # whole ids, one a line, so they can be copied
        assert f"  {server}\n" in mixed.stdout
    as_json = cli(stack, *args, "--dry-run", "--output", "json", stdin="\n".join(fine + locked))
    report = json.loads(as_json.stdout)
    assert report["verdicts"] == {"submit": 3, "will_fail": 2}
    assert report["codes"] == {"server_locked": 2}
    refused = cli(stack, *args, stdin="\n".join(fine + locked))
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1
    assert (
        "incompatible_servers, HTTP 422" in refused.stderr and "server_locked x2" in refused.stderr
    )
    skipped = cli(stack, *args, "--on-incompatible", "skip", stdin="\n".join(fine + locked))
    assert skipped.returncode == 0, skipped.stderr
