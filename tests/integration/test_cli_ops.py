"""The operator CLI against a real stack: submit --watch, status, servers, history, controls,
output formats, exit codes and one-line errors."""

from __future__ import annotations

import csv
import io
import json
import os
import re
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
    final = json.loads(done.stdout)  # one batch: one object
    assert final["state"] in ("succeeded", "partially_failed"), done.stderr
    assert done.returncode == (0 if final["state"] == "succeeded" else 1)
    batch_id = final["id"]

    status = cli(stack, "status", batch_id, "--output", "json")
    assert json.loads(status.stdout)["id"] == batch_id
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
    batch_id = json.loads(submitted.stdout)["id"]
    paused = cli(stack, "pause", batch_id, "--reason", "look first", "--output", "json")
    assert json.loads(paused.stdout)["pause_reason"] == "look first"
    cancelled = cli(stack, "cancel", batch_id, "--output", "json")
    assert json.loads(cancelled.stdout)["cancel_requested"] is True
    ended = cli(stack, "watch", batch_id, "--output", "json")
    assert ended.returncode == 1 and json.loads(ended.stdout)["state"] == "cancelled"
    retried = cli(stack, "retry", batch_id, "--states", "cancelled", "--output", "json")
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout)["parent_id"] == batch_id


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
        stdin=str(uuid.uuid4()) + "\n",
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    # The API's refusal, named by the flag that gave the value.
    assert "--image (os_change.imageid): not a UUID" in bad.stderr
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
    args: tuple[str, ...] = ("submit", "--project-id", PROJECT, "--region", "cn-north-4")
    args += ("--image", IMAGE)
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


# ------------------------------------------------------------------ issue 16: a new user's report

# The simulator fails the jobs of a server by its seed (5) and id, at --fail-ratio 0.3.
SEED, FAIL_RATIO = 5, 0.3
NARROW = {"COLUMNS": "80"}


def fleet(failing: int, passing: int) -> tuple[list[str], list[str]]:
    from orchestrator.simulator.shared import unit_hash

    bad: list[str] = []
    good: list[str] = []
    while len(bad) < failing or len(good) < passing:
        server = str(uuid.uuid4())
        fails = unit_hash(SEED, server, "fail") < FAIL_RATIO
        if fails and len(bad) < failing:
            bad.append(server)
        elif not fails and len(good) < passing:
            good.append(server)
    return bad, good


SUBMIT: tuple[str, ...] = ("submit", "--project-id", PROJECT, "--region", "cn-north-4")
SUBMIT += ("--image", IMAGE)
SUBMIT += ("--keyname", "KeyPair-cli")


def test_watch_without_a_terminal_then_whole_ids_and_cloud_errors_at_80_columns(
    stack: ProcessStack, tmp_path: Path
) -> None:
    failing, passing = fleet(2, 3)
    source = tmp_path / "fleet.csv"
    source.write_text(
        "name,server_id\n" + "".join(f"w{i},{s}\n" for i, s in enumerate(failing + passing))
    )
    done = cli(
        stack, *SUBMIT, "--servers", str(source), "--csv-column", "server_id", "--watch",
        env=NARROW,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    batch_id = lines[0].split()[1]
    # Piped: plain progress lines, the failures, then the final line on a line of its own.
    assert done.stdout.endswith("\n") and lines[-1] == f"batch {batch_id} ended partially_failed"
    assert all(line.startswith(f"batch {batch_id} ") for line in lines if "settled" in line)
    assert not re.search(r"[━╺] +\d+/\d+$", done.stdout, re.M)  # no bars without a terminal
    for server in failing:
        assert server in done.stdout

    batches = cli(stack, "batches", env=NARROW)
    assert batch_id in batches.stdout and "…" not in batches.stdout
    servers = cli(stack, "servers", batch_id, env=NARROW)
    assert "…" not in servers.stdout
    for server in failing + passing:
        assert server in servers.stdout
    assert "Ecs.0202" in servers.stdout

    history = cli(stack, "history", failing[0], env=NARROW)
    assert history.returncode == 0, history.stderr
    assert f"batch {batch_id}\n" in history.stdout
    header = next(line for line in history.stdout.splitlines() if "┃ at" in line)
    assert "code" in header and "message" in header
    assert "Ecs.0202" in history.stdout and "…" not in history.stdout
    as_csv = list(
        csv.DictReader(io.StringIO(cli(stack, "history", failing[0], "--output", "csv").stdout))
    )
    assert {r["code"] for r in as_csv} >= {"Ecs.0202"}
    assert any(r["message"] for r in as_csv if r["code"] == "Ecs.0202")

    status = cli(stack, "status", batch_id, "--output", "json")
    assert json.loads(status.stdout)["id"] == batch_id  # an object, not a list of one


def test_status_says_why_a_batch_aborted_and_a_refused_conflict_lists_each_server(
    stack: ProcessStack,
) -> None:
    failing, passing = fleet(3, 3)
    aborted = cli(
        stack, *SUBMIT, "--servers", "-", "--max-failures", "0", "--max-in-flight", "1",
        "--watch", "--output", "json", stdin="\n".join(failing + passing),
    )  # fmt: skip
    ended = json.loads(aborted.stdout)
    assert ended["state"] == "aborted" and aborted.returncode == 1, aborted.stderr
    status = cli(stack, "status", ended["id"])
    assert status.returncode == 1
    assert "aborted: the error budget is spent (1 failed, 0 allowed)" in status.stdout

    held = cli(
        stack, *SUBMIT, "--servers", "-", "--max-in-flight", "1", "--output", "json",
        stdin="\n".join(passing),
    )  # fmt: skip
    batch_id = json.loads(held.stdout)["id"]
    paused = cli(stack, "pause", batch_id, "--reason", "look first")
    assert paused.returncode == 0, paused.stderr
    shown = cli(stack, "status", batch_id)
    assert "paused: look first" in shown.stdout and "resume to continue" in shown.stdout

    again = cli(stack, *SUBMIT, "--servers", "-", stdin="\n".join([*passing, failing[0]]))
    assert again.returncode == 2 and again.stdout == ""
    refusal = again.stderr.splitlines()
    assert "already belong to an active batch (conflict, HTTP 409)" in refusal[0]
    assert "--on-conflict skip" in refusal[0]
    assert len(refusal) == 1 + len(passing), again.stderr
    for server in passing:
        assert any(line.startswith(f"  {server}  in batch {batch_id} (") for line in refusal[1:]), (
            again.stderr
        )

    cancelled = cli(stack, "cancel", batch_id)
    assert cancelled.returncode == 0, cancelled.stderr
    watched = cli(stack, "watch", batch_id)
    assert watched.returncode == 1, watched.stderr
    assert watched.stdout.splitlines()[-1] == f"batch {batch_id} ended cancelled"
    assert "latest failures" not in watched.stdout and "┏" not in watched.stdout
