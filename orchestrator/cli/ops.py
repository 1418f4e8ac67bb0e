"""Operator commands of the `reimage` CLI, talking to the API (ORCH_API_URL, ORCH_API_TOKEN):
submit, watch, batches, status, servers, history, pause, resume, cancel, retry, rollback,
approve, reject.

Exit codes: 0 all succeeded, 1 some failed or the batch was aborted or cancelled, 2 usage or
configuration error, 3 API unreachable. Errors are one line, never a traceback.
"""

from __future__ import annotations

import argparse
import base64
import csv
import dataclasses
import getpass
import io
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from orchestrator.cli.apiclient import ApiClient, ApiError, ApiUnreachable

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
TERMINAL = {"succeeded", "partially_failed", "aborted", "cancelled"}
STATES = (
    "pending",
    "submitting",
    "backing_up",
    "running",
    "verifying",
    "succeeded",
    "failed",
    "cancelled",
    "skipped",
)


class UsageError(Exception):
    """Bad input from the operator: one line, exit code 2."""


def client_from_env() -> ApiClient:
    token = os.environ.get("ORCH_API_TOKEN")
    if not token:
        raise UsageError("ORCH_API_TOKEN is not set")
    return ApiClient(os.environ.get("ORCH_API_URL", "http://127.0.0.1:8080"), token)


def exit_code_for(batch: dict[str, Any]) -> int:
    if batch["state"] == "succeeded":
        return EXIT_OK
    if batch["state"] in TERMINAL:
        return EXIT_FAILED
    return EXIT_OK


# ------------------------------------------------------------------ output


def emit(rows: list[dict[str, Any]], columns: Sequence[str], output: str, title: str = "") -> None:
    if output == "json":
        print(json.dumps(rows, indent=2, default=str))
    elif output == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        print(buffer.getvalue(), end="")
    else:
        table = Table(*columns, title=title or None)
        for row in rows:
            table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
        Console().print(table)


def _batch_row(batch: dict[str, Any]) -> dict[str, Any]:
    counts = batch["counts"]
    settled = sum(counts[s] for s in ("succeeded", "failed", "cancelled", "skipped"))
    return {
        **batch,
        "progress": f"{settled}/{batch['total']}",
        "failed": counts["failed"],
        "succeeded": counts["succeeded"],
    }


# ------------------------------------------------------------------ submit


def _read_servers(source: str, column: str | None) -> list[str]:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror}") from None
    if column:
        reader = csv.DictReader(io.StringIO(text))
        if reader.fieldnames is None or column not in reader.fieldnames:
            raise UsageError(f"{source}: no CSV column named {column!r}")
        return [row[column].strip() for row in reader if row.get(column, "").strip()]
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _amount(text: str) -> int | str:
    return text if text.endswith("%") else int(text)


def _policy(args: argparse.Namespace) -> dict[str, Any]:
    policy: dict[str, Any] = {}
    try:
        if args.max_in_flight:
            policy["max_in_flight"] = _amount(args.max_in_flight)
        if args.max_failures is not None:
            policy["max_failures"] = _amount(args.max_failures)
        if args.waves:
            policy["waves"] = [_amount(w) for w in args.waves.split(",")]
    except ValueError:
        raise UsageError("counts are integers or percentages like 10%") from None
    if args.pause_after_waves == "all":
        policy["pause_after_waves"] = True
    elif args.pause_after_waves:
        policy["pause_after_waves"] = [int(w) for w in args.pause_after_waves.split(",")]
    for name in ("wave_delay_s", "poll_interval_s", "job_timeout_s"):
        value = getattr(args, name)
        if value is not None:
            policy[name] = value
    if args.no_skip_matching:
        policy["skip_matching"] = False
    if getattr(args, "on_incompatible", None):
        policy["on_incompatible"] = args.on_incompatible
    return {**policy, **_verify_and_undo(args), **_shape_and_calendar(args)}


def _shape_and_calendar(args: argparse.Namespace) -> dict[str, Any]:
    """Failure domains, maintenance windows and approvals from the submit flags."""
    policy: dict[str, Any] = {}
    spread = []
    for rule in getattr(args, "spread", None) or []:
        kind, sep, amount = rule.rpartition("=")
        if not sep or not kind:
            raise UsageError(f"--spread {rule}: give KIND=N, e.g. availability_zone=5")
        try:
            spread.append({"by": kind, "max_in_flight": _amount(amount)})
        except ValueError:
            raise UsageError(f"--spread {rule}: N is an integer or a percentage") from None
    if spread:
        policy["spread"] = spread
    if getattr(args, "waves_by", None):
        policy["waves_by"] = args.waves_by
    if getattr(args, "window_cron", None):
        if args.window_duration_s is None:
            raise UsageError("--window-cron needs --window-duration (seconds)")
        policy["windows"] = [
            {
                "cron": args.window_cron,
                "duration_s": args.window_duration_s,
                "timezone": args.window_timezone or "UTC",
            }
        ]
    before, after = getattr(args, "approvals", None), getattr(args, "approvals_after_waves", None)
    if before or after:
        approvals: dict[str, Any] = {"before_start": before or 0}
        if after:
            try:
                approvals["after_waves"] = [int(w) for w in after.split(",")]
            except ValueError:
                raise UsageError("--approvals-after-waves: wave numbers, e.g. 1,2") from None
        policy["approvals"] = approvals
    return policy


def _verify_and_undo(args: argparse.Namespace) -> dict[str, Any]:
    """The health gate, what follows a failed one, and the backup before the change."""
    policy: dict[str, Any] = {}
    check = _health_check(args)
    if check:
        policy["health_check"] = check
    if getattr(args, "on_unhealthy", None):
        policy["on_unhealthy"] = args.on_unhealthy
    if getattr(args, "backup", False):
        policy["backup"] = {"mode": "image"}
        if args.backup_retention_s is not None:
            policy["backup"]["retention_s"] = args.backup_retention_s
    return policy


def _health_check(args: argparse.Namespace) -> dict[str, Any] | None:
    """`--health-http URL` or `--health-tcp HOST:PORT`, with the timings given."""
    http, tcp = getattr(args, "health_http", None), getattr(args, "health_tcp", None)
    if http and tcp:
        raise UsageError("--health-http and --health-tcp: give one of them")
    if not (http or tcp):
        return None
    check: dict[str, Any] = {"http": http} if http else {"tcp": tcp}
    for name in ("initial_delay_s", "interval_s", "timeout_s", "successes", "deadline_s"):
        value = getattr(args, f"health_{name}", None)
        if value is not None:
            check[name] = value
    return check


def _images(args: argparse.Namespace) -> dict[str, Any]:
    per_arch = {
        arch: image
        for arch, image in (("x86_64", args.image_x86), ("aarch64", args.image_arm))
        if image
    }
    if args.image and per_arch:
        raise UsageError("give --image, or --image-x86/--image-arm, not both")
    if per_arch:
        return {"images": per_arch}
    if not args.image:
        raise UsageError("give --image (or --image-x86 and/or --image-arm)")
    return {"imageid": args.image}


def _os_change(args: argparse.Namespace) -> dict[str, Any]:
    change: dict[str, Any] = {**_images(args), "mode": "withStopServer"}
    if args.no_stop:
        change.pop("mode")
    if args.keyname:
        change["keyname"] = args.keyname
    if args.userid:
        change["userid"] = args.userid
    if args.password_prompt:
        if not sys.stdin.isatty():
            raise UsageError("--password-prompt needs a terminal")
        change["adminpass"] = getpass.getpass("new OS password: ")
    metadata: dict[str, str] = {}
    if args.byol:
        metadata["BYOL"] = "true"
    if args.user_data_file:
        try:
            raw = Path(args.user_data_file).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {args.user_data_file}: {exc.strerror}") from None
        metadata["user_data"] = base64.b64encode(raw).decode()
    if metadata:
        change["metadata"] = metadata
    return change


def cmd_submit(args: argparse.Namespace, api: ApiClient) -> int:
    body: dict[str, Any] = {
        "project_id": args.project_id,
        "region": args.region,
        "os_change": _os_change(args),
        "cloud_init": args.cloud_init,
        "policy": _policy(args),
    }
    if args.servers:
        body["servers"] = _read_servers(args.servers, args.csv_column)
    if args.tag or args.name_contains:
        body["selector"] = {
            "tags": args.tag or [],
            **({"name": args.name_contains} if args.name_contains else {}),
        }
    if "servers" not in body and "selector" not in body:
        raise UsageError("give --servers FILE (or - for stdin), or a selector (--tag, --name)")
    if args.on_conflict:
        body["on_conflict"] = args.on_conflict
    if args.dry_run:
        # Pre-flight reads the whole fleet at the fleet's rate: give it minutes, not seconds.
        report = dataclasses.replace(api, timeout_s=max(api.timeout_s, DRY_RUN_TIMEOUT_S)).post(
            "/api/v1/batches", body, dry_run="true"
        )
        print_dry_run(report, args.output)
        incompatible = report["verdicts"].get("will_fail", 0)
        return EXIT_FAILED if incompatible else EXIT_OK
    batch = api.post("/api/v1/batches", body)
    if args.watch:  # one document on stdout: the batch as it ended
        return watch(api, batch["id"], args.output)
    emit([_batch_row(batch)], ["id", "state", "total", "progress"], args.output)
    return EXIT_OK


DRY_RUN_TIMEOUT_S = 900.0
# A dry run's table shows this many servers of each reason code.
FIRST_OF_EACH_CODE = 5


def print_dry_run(report: dict[str, Any], output: str) -> None:
    """Counts per verdict and per reason code, then the first servers of each code."""
    if output == "json":
        print(json.dumps(report, indent=2))
        return
    servers = report["servers"]
    if output != "table":
        rows = [{**s, "codes": ",".join(r["code"] for r in s.get("reasons", []))} for s in servers]
        emit(rows, ["server_id", "verdict", "image_id", "codes"], output)
        return
    console = Console()
    plan = report["plan"]
    console.print(
        f"dry run of {report['total']} servers: nothing stored, nothing sent; "
        f"{report['cloud_calls']['total']} cloud calls; waves {len(plan['waves'])}, "
        f"max in flight {plan['max_in_flight']}, on_incompatible {plan['on_incompatible']}"
    )
    verdicts = Table("verdict", "servers")
    for verdict, count in sorted(report["verdicts"].items(), key=lambda kv: -kv[1]):
        verdicts.add_row(verdict, str(count))
    console.print(verdicts)
    # One block per code, most frequent first: full ids (one a line) so they can be copied.
    for code, count in sorted(report["codes"].items(), key=lambda kv: (-kv[1], kv[0])):
        having = [s for s in servers if any(r["code"] == code for r in s.get("reasons", []))]
        first = (
            next((r for r in having[0]["reasons"] if r["code"] == code), None) if having else None
        )
        kind = "blocks" if first and first["blocking"] else "warning"
        console.print(
            f"[bold]{code}[/]: {count} server(s), {kind}: {first['message'] if first else ''}"
        )
        for server in having[:FIRST_OF_EACH_CODE]:
            console.print(f"  {server['server_id']}", soft_wrap=True)
        if len(having) > FIRST_OF_EACH_CODE:
            console.print(f"  ... and {len(having) - FIRST_OF_EACH_CODE} more")


# ------------------------------------------------------------------ watch


def _watch_view(batch: dict[str, Any], failures: list[dict[str, Any]], rate: float) -> Group:
    progress = Progress(
        TextColumn("{task.description:>10}"),
        BarColumn(bar_width=40),
        TextColumn("{task.completed}/{task.total}"),
    )
    for state in STATES:
        progress.add_task(state, total=batch["total"], completed=batch["counts"][state])
    for wave in batch.get("waves", [])[:12]:
        settled = sum(wave["counts"][s] for s in ("succeeded", "failed", "cancelled", "skipped"))
        progress.add_task(f"wave {wave['wave']}", total=wave["size"], completed=settled)
    counts = batch["counts"]
    left = batch["total"] - sum(counts[s] for s in ("succeeded", "failed", "cancelled", "skipped"))
    eta = f"{left / rate:.0f} s" if rate > 0 else "-"
    budget = batch["error_budget"]
    header = (
        f"batch {batch['id']}  [bold]{batch['state']}[/]  wave {batch['current_wave']}/"
        f"{batch['waves_total']}  rate {rate:.1f}/s  ETA {eta}  budget left "
        f"{'unlimited' if budget['allowed'] is None else budget['left']}"
    )
    if batch.get("pause_reason"):
        header += f"\npaused by {batch.get('paused_by')}: {batch['pause_reason']}"
    table = Table("latest failures", "code", "message")
    for item in failures[-5:]:
        table.add_row(item["server_id"], item["error_code"] or "", item["error_message"] or "")
    return Group(header, progress, table)


def watch(api: ApiClient, batch_id: str, output: str, interval_s: float = 1.0) -> int:
    """Follow a batch until it ends; exit code by its final state."""
    if output != "table":
        while True:
            batch = api.get(f"/api/v1/batches/{batch_id}")
            if batch["state"] in TERMINAL:
                emit([_batch_row(batch)], ["id", "state", "total", "succeeded", "failed"], output)
                return exit_code_for(batch)
            time.sleep(interval_s)
    samples: list[tuple[float, int]] = []
    console = Console()
    with Live(console=console, refresh_per_second=4) as live:
        while True:
            batch = api.get(f"/api/v1/batches/{batch_id}")
            settled = sum(
                batch["counts"][s] for s in ("succeeded", "failed", "cancelled", "skipped")
            )
            samples = [*samples[-30:], (time.monotonic(), settled)]
            rate = 0.0
            if len(samples) > 1 and samples[-1][0] > samples[0][0]:
                rate = (samples[-1][1] - samples[0][1]) / (samples[-1][0] - samples[0][0])
            failures = api.get(f"/api/v1/batches/{batch_id}/servers", state="failed", limit="20")[
                "items"
            ]
            live.update(_watch_view(batch, failures, rate))
            if batch["state"] in TERMINAL:
                break
            time.sleep(interval_s)
    console.print(f"batch {batch_id} ended {batch['state']}")
    return exit_code_for(batch)


# ------------------------------------------------------------------ the rest


def cmd_watch(args: argparse.Namespace, api: ApiClient) -> int:
    return watch(api, args.batch, args.output)


def cmd_batches(args: argparse.Namespace, api: ApiClient) -> int:
    page = api.get("/api/v1/batches", limit=str(args.limit))
    emit(
        [_batch_row(b) for b in page["items"]],
        ["id", "state", "total", "progress", "failed", "created_at"],
        args.output,
    )
    return EXIT_OK


def cmd_status(args: argparse.Namespace, api: ApiClient) -> int:
    batch = api.get(f"/api/v1/batches/{args.batch}")
    if args.output == "table":
        budget = batch["error_budget"]
        allowed = "unlimited" if budget["allowed"] is None else budget["allowed"]
        line = (
            f"batch {batch['id']} {batch['state']}, wave {batch['current_wave']}/"
            f"{batch['waves_total']}, failures {budget['used']} of {allowed} allowed"
        )
        if batch.get("rolling_back"):
            line += f", {batch['rolling_back']} rolling back"
        if batch.get("kind") == "rollback":
            line += f" (a rollback of {batch['parent_id']})"
        if batch.get("waiting_for_window"):
            line += f", waiting for its window (opens {batch['window_opens_at']})"
        Console().print(line, soft_wrap=True)
        if batch.get("pause_reason"):
            Console().print(f"paused by {batch.get('paused_by')}: {batch['pause_reason']}")
        for decision in (batch.get("approvals") or {}).get("decisions") or []:
            gate = "before the start" if decision["gate"] == 0 else f"after wave {decision['gate']}"
            note = f": {decision['comment']}" if decision.get("comment") else ""
            Console().print(
                f"{decision['decision']} {gate} by {decision['principal']} at {decision['at']}"
                + note,
                soft_wrap=True,
            )
        emit(
            [{"state": s, "servers": n} for s, n in batch["counts"].items()],
            ["state", "servers"],
            "table",
        )
    else:
        emit(
            [batch] if args.output == "json" else [_batch_row(batch)],
            ["id", "state", "total", "succeeded", "failed", "progress"],
            args.output,
        )
    return exit_code_for(batch) if batch["state"] in TERMINAL else EXIT_OK


def health_summary(server: dict[str, Any]) -> str:
    """The health gate, a backup or a rollback of one server, in a few words."""
    parts: list[str] = []
    if server.get("phase") == "rollback":
        parts.append("rolling back")
    backup = server.get("backup") or {}
    if backup.get("status"):
        parts.append(f"backup {backup['status']}")
    health = server.get("health") or {}
    if health:
        log = health.get("log") or {}
        if health.get("target_error"):
            parts.append(f"cannot probe: {health['target_error']}")
        elif not log.get("count"):
            parts.append("warming up")
        else:
            last = (log.get("last") or {}).get("detail", "-")
            streak = log.get("streak", 0)
            parts.append(f"{log['count']} probe(s), {streak} healthy in a row, last {last}")
    return "; ".join(parts)


def cmd_servers(args: argparse.Namespace, api: ApiClient) -> int:
    query = {"limit": "1000", **({"state": args.state} if args.state else {})}
    items = api.pages(f"/api/v1/batches/{args.batch}/servers", **query)
    if args.output != "json":
        items = [{**item, "health": health_summary(item)} for item in items]
    emit(
        items,
        [
            "server_id",
            "state",
            "wave",
            "image_id",
            "job_id",
            "health",
            "error_code",
            "error_message",
        ],
        args.output,
    )
    return EXIT_OK


def cmd_history(args: argparse.Namespace, api: ApiClient) -> int:
    items = api.pages(f"/api/v1/servers/{args.server}/history", limit="1000")
    emit(items, ["at", "batch_id", "from_state", "to_state", "reason", "job_id"], args.output)
    return EXIT_OK


def _control(action: str) -> Callable[[argparse.Namespace, ApiClient], int]:
    def run(args: argparse.Namespace, api: ApiClient) -> int:
        body = {"reason": args.reason} if getattr(args, "reason", None) else {}
        batch = api.post(f"/api/v1/batches/{args.batch}/{action}", body)
        emit([_batch_row(batch)], ["id", "state", "pause_reason", "cancel_requested"], args.output)
        return EXIT_OK

    return run


def _decide(decision: str) -> Callable[[argparse.Namespace, ApiClient], int]:
    """`approve` / `reject`: one decision on the gate a batch waits on."""

    def run(args: argparse.Namespace, api: ApiClient) -> int:
        body = {"comment": args.comment} if args.comment else {}
        batch = api.post(f"/api/v1/batches/{args.batch}/{decision}", body)
        emit(
            [_batch_row(batch)],
            ["id", "state", "pause_reason", "cancel_requested"],
            args.output,
        )
        return EXIT_OK

    return run


def cmd_rollback(args: argparse.Namespace, api: ApiClient) -> int:
    body: dict[str, Any] = {}
    if args.servers and args.failed:
        raise UsageError("--servers and --failed: give one of them (neither: every changed one)")
    if args.servers:
        body["servers"] = [s.strip() for s in args.servers.split(",") if s.strip()]
    elif args.failed:
        body["states"] = ["failed"]
    if args.max_in_flight:
        try:
            body["policy"] = {"max_in_flight": _amount(args.max_in_flight)}
        except ValueError:
            raise UsageError("--max-in-flight: an integer or a percentage like 10%") from None
    batch = api.post(f"/api/v1/batches/{args.batch}/rollback", body)
    emit([_batch_row(batch)], ["id", "state", "total", "parent_id"], args.output)
    return watch(api, batch["id"], args.output) if args.watch else EXIT_OK


def cmd_retry(args: argparse.Namespace, api: ApiClient) -> int:
    batch = api.post(f"/api/v1/batches/{args.batch}/retry", {"states": args.states.split(",")})
    emit([_batch_row(batch)], ["id", "state", "total", "parent_id"], args.output)
    return watch(api, batch["id"], args.output) if args.watch else EXIT_OK


def add_operator_commands(sub: Any) -> None:
    def command(name: str, help_text: str, func: Callable[..., int]) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
        parser.add_argument("--output", choices=("table", "json", "csv"), default="table")
        parser.set_defaults(func=run_operator(func))
        return parser

    p = command(
        "submit", "submit a batch (servers from a file or stdin, or a selector)", cmd_submit
    )
    p.add_argument("--project-id", required=True)
    p.add_argument("--region", required=True)
    p.add_argument("--image", help="the new image's UUID (every server)")
    p.add_argument("--image-x86", help="the image for x86 servers (with or without --image-arm)")
    p.add_argument("--image-arm", help="the image for Kunpeng (Arm) servers")
    p.add_argument("--servers", help="file of server ids, one a line (or a CSV); - for stdin")
    p.add_argument("--csv-column", help="take server ids from this CSV column")
    p.add_argument("--tag", action="append", help="selector: key=value (repeatable)")
    p.add_argument("--name-contains", help="selector: part of the server name")
    p.add_argument("--keyname")
    p.add_argument("--userid")
    p.add_argument("--password-prompt", action="store_true", help="ask for the new password")
    p.add_argument("--cloud-init", action="store_true")
    p.add_argument("--user-data-file")
    p.add_argument("--byol", action="store_true")
    p.add_argument("--no-stop", action="store_true", help="do not send mode=withStopServer")
    p.add_argument("--max-in-flight")
    p.add_argument("--max-failures")
    p.add_argument("--waves", help="e.g. 1,10%%,50%%,100%%")
    p.add_argument("--pause-after-waves", help="'all' or wave numbers, e.g. 1,2")
    p.add_argument("--wave-delay", dest="wave_delay_s", type=float)
    p.add_argument("--poll-interval", dest="poll_interval_s", type=float)
    p.add_argument("--job-timeout", dest="job_timeout_s", type=int)
    p.add_argument("--no-skip-matching", action="store_true")
    p.add_argument("--on-conflict", choices=("reject", "skip"))
    p.add_argument(
        "--on-incompatible",
        choices=("reject", "skip"),
        help="servers pre-flight finds incompatible: refuse the batch (default) or skip them",
    )
    p.add_argument("--health-http", help="health gate: a URL template, e.g. http://{ip}:8080/ok")
    p.add_argument("--health-tcp", help="health gate: host:port template, e.g. {ip}:22")
    p.add_argument("--health-initial-delay", dest="health_initial_delay_s", type=float)
    p.add_argument("--health-interval", dest="health_interval_s", type=float)
    p.add_argument("--health-timeout", dest="health_timeout_s", type=float)
    p.add_argument("--health-successes", dest="health_successes", type=int)
    p.add_argument("--health-deadline", dest="health_deadline_s", type=float)
    p.add_argument(
        "--on-unhealthy",
        choices=("keep", "rollback"),
        help="a server that fails its health gate: keep it as it is, or roll it back",
    )
    p.add_argument("--backup", action="store_true", help="save each system disk as an image first")
    p.add_argument(
        "--spread",
        action="append",
        metavar="KIND=N",
        help="at most N (or N%%) in flight per availability_zone, server_group or tag:<key>",
    )
    p.add_argument("--waves-by", help="one wave group per domain value, e.g. availability_zone")
    p.add_argument("--window-cron", help="new changes only in this window, e.g. '0 1 * * SAT'")
    p.add_argument("--window-duration", dest="window_duration_s", type=float)
    p.add_argument("--window-timezone", help="the window's IANA time zone (default UTC)")
    p.add_argument("--approvals", type=int, help="distinct approvers needed before the start")
    p.add_argument("--approvals-after-waves", help="waves after which one approval is needed")
    p.add_argument("--backup-retention", dest="backup_retention_s", type=int)
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--watch", action="store_true")
    p = command("watch", "follow a batch live until it ends", cmd_watch)
    p.add_argument("batch")
    p = command("batches", "list batches, newest first", cmd_batches)
    p.add_argument("--limit", type=int, default=20)
    p = command("status", "one batch: state, counts, waves, budget", cmd_status)
    p.add_argument("batch")
    p = command("servers", "a batch's servers", cmd_servers)
    p.add_argument("batch")
    p.add_argument("--state", choices=STATES)
    p = command("history", "a server's history across batches", cmd_history)
    p.add_argument("server")
    for action in ("pause", "resume", "cancel"):
        p = command(action, f"{action} a batch", _control(action))
        p.add_argument("batch")
        if action == "pause":
            p.add_argument("--reason")
    p = command(
        "approve", "approve the gate a batch waits on (not your own batch)", _decide("approve")
    )
    p.add_argument("batch")
    p.add_argument("--comment")
    p = command(
        "reject", "refuse the gate a batch waits on: the batch is cancelled", _decide("reject")
    )
    p.add_argument("batch")
    p.add_argument("--comment")
    p = command(
        "rollback", "a new batch: each server back to the image it ran before", cmd_rollback
    )
    p.add_argument("batch")
    p.add_argument("--servers", help="comma-separated server ids (default: every changed one)")
    p.add_argument("--failed", action="store_true", help="only the batch's failed servers")
    p.add_argument("--max-in-flight")
    p.add_argument("--watch", action="store_true")
    p = command("retry", "a new batch of a batch's servers in the given states", cmd_retry)
    p.add_argument("batch")
    p.add_argument("--states", default="failed")
    p.add_argument("--watch", action="store_true")


def run_operator(
    func: Callable[[argparse.Namespace, ApiClient], int],
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args, client_from_env())
        except UsageError as exc:
            print(f"reimage: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except ApiUnreachable as exc:
            print(f"reimage: {exc}", file=sys.stderr)
            return EXIT_UNREACHABLE
        except ApiError as exc:
            print(f"reimage: {exc.one_line()}", file=sys.stderr)
            return EXIT_USAGE if exc.status in (400, 401, 403, 404, 409, 422) else EXIT_FAILED

    return run
