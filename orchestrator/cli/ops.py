"""Operator commands of the `reimage` CLI, talking to the API (ORCH_API_URL, ORCH_API_TOKEN):
submit, watch, batches, status, servers, history, pause, resume, cancel, retry, rollback,
approve, reject.

Exit codes: 0 all succeeded, 1 some failed or the batch was aborted or cancelled, 2 usage or
configuration error, 3 API unreachable. Errors are one line, never a traceback.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import getpass
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from orchestrator.cli.apiclient import ApiClient, ApiError, ApiUnreachable
from orchestrator.cli.inputs import (
    ServerList,
    UsageError,
    amount,
    amounts,
    choices,
    map_server_fields,
    read_servers,
    server_ids,
    spread_rule,
    tags,
    uuid_arg,
    wave_numbers,
)
from orchestrator.cli.output import (
    Col,
    cloud_error,
    emit,
    emit_one,
    fit,
    print_table,
    table_of,
)

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

SETTLED = ("succeeded", "failed", "cancelled", "skipped")
# Conflicting servers a refused request (409) lists, one a line, before "... and N more".
FIRST_CONFLICTS = 20


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

# The columns of a batch in a table: its id always whole; the rest go at narrow widths.
BATCH_COLUMNS = (
    Col("id"),
    Col("state"),
    Col("total", drop=3),
    Col("progress"),
    Col("failed", drop=2),
    Col("created_at", drop=4),
)
NEW_BATCH_COLUMNS = (
    Col("id"),
    Col("state"),
    Col("total", drop=2),
    Col("parent_id", drop=1),
    Col("progress", drop=3),
)
CONTROL_COLUMNS = (
    Col("id"),
    Col("state"),
    Col("pause_reason", wrap=True),
    Col("cancel_requested", drop=1),
)


def _batch_row(batch: dict[str, Any]) -> dict[str, Any]:
    counts = batch["counts"]
    settled = sum(counts[s] for s in SETTLED)
    return {
        **batch,
        "progress": f"{settled}/{batch['total']}",
        "failed": counts["failed"],
        "succeeded": counts["succeeded"],
    }


# ------------------------------------------------------------------ submit

# The flag behind each field of a submission, so that a value the API refuses is named as the
# operator gave it: `--job-timeout (policy.job_timeout_s): must be ...`.
SUBMIT_FLAGS = {
    "project_id": "--project-id",
    "region": "--region",
    "os_change.imageid": "--image",
    "os_change.images.x86_64": "--image-x86",
    "os_change.images.aarch64": "--image-arm",
    "os_change.keyname": "--keyname",
    "os_change.userid": "--userid",
    "os_change.adminpass": "--password-prompt",
    "os_change.metadata.user_data": "--user-data-file",
    "selector.tags": "--tag",
    "selector.name": "--name-contains",
    "on_conflict": "--on-conflict",
    "policy.max_in_flight": "--max-in-flight",
    "policy.max_failures": "--max-failures",
    "policy.waves": "--waves",
    "policy.pause_after_waves": "--pause-after-waves",
    "policy.wave_delay_s": "--wave-delay",
    "policy.poll_interval_s": "--poll-interval",
    "policy.job_timeout_s": "--job-timeout",
    "policy.on_incompatible": "--on-incompatible",
    "policy.on_unhealthy": "--on-unhealthy",
    "policy.health_check.http": "--health-http",
    "policy.health_check.tcp": "--health-tcp",
    "policy.health_check.initial_delay_s": "--health-initial-delay",
    "policy.health_check.interval_s": "--health-interval",
    "policy.health_check.timeout_s": "--health-timeout",
    "policy.health_check.successes": "--health-successes",
    "policy.health_check.deadline_s": "--health-deadline",
    "policy.backup.retention_s": "--backup-retention",
    "policy.spread": "--spread",
    "policy.waves_by": "--waves-by",
    "policy.windows[0].cron": "--window-cron",
    "policy.windows[0].duration_s": "--window-duration",
    "policy.windows[0].timezone": "--window-timezone",
    "policy.windows": "--window-cron",
    "policy.approvals.after_waves": "--approvals-after-waves",
    "policy.approvals": "--approvals",
}


def flag_of(field: str, flags: Mapping[str, str]) -> str | None:
    """The flag that gave the API's `field` (the longest matching path), if any."""
    for path in sorted(flags, key=len, reverse=True):
        if field == path or field.startswith((f"{path}.", f"{path}[")):
            return flags[path]
    return None


def for_operator(
    exc: ApiError, flags: Mapping[str, str], servers: ServerList | None = None
) -> ApiError:
    """The API's refusal in the operator's terms: `servers[3]` as the file and line the id was
    read from, a policy field as the flag that set it."""
    fields = map_server_fields(exc.fields, servers) if servers else dict(exc.fields)
    named: dict[str, str] = {}
    for field, reason in fields.items():
        flag = flag_of(field, flags)
        named[f"{flag} ({field})" if flag else field] = reason
    return dataclasses.replace(exc, fields=named)


def _policy(args: argparse.Namespace) -> dict[str, Any]:
    policy: dict[str, Any] = {}
    if args.max_in_flight is not None:
        policy["max_in_flight"] = amount("--max-in-flight", args.max_in_flight)
    if args.max_failures is not None:
        policy["max_failures"] = amount("--max-failures", args.max_failures, minimum=0)
    if args.waves is not None:
        policy["waves"] = amounts("--waves", args.waves)
    if args.pause_after_waves == "all":
        policy["pause_after_waves"] = True
    elif args.pause_after_waves is not None:
        policy["pause_after_waves"] = wave_numbers("--pause-after-waves", args.pause_after_waves)
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
    spread = [spread_rule(rule) for rule in getattr(args, "spread", None) or []]
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
            approvals["after_waves"] = wave_numbers("--approvals-after-waves", after)
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
    servers: ServerList | None = None
    if args.csv_column and not args.servers:
        raise UsageError("--csv-column: give --servers FILE too")
    if args.servers:
        servers = read_servers(args.servers, args.csv_column)
        body["servers"] = servers.ids
    if args.tag or args.name_contains:
        body["selector"] = {
            "tags": tags("--tag", args.tag or []),
            **({"name": args.name_contains} if args.name_contains else {}),
        }
    if "servers" not in body and "selector" not in body:
        raise UsageError("give --servers FILE (or - for stdin), or a selector (--tag, --name)")
    if args.on_conflict:
        body["on_conflict"] = args.on_conflict
    try:
        if args.dry_run:
            # Pre-flight reads the whole fleet at the fleet's rate: give it minutes, not seconds.
            patient = dataclasses.replace(api, timeout_s=max(api.timeout_s, DRY_RUN_TIMEOUT_S))
            report = patient.post("/api/v1/batches", body, dry_run="true")
        else:
            batch = api.post("/api/v1/batches", body)
    except ApiError as exc:
        raise for_operator(exc, SUBMIT_FLAGS, servers) from None
    if args.dry_run:
        print_dry_run(report, args.output)
        incompatible = report["verdicts"].get("will_fail", 0)
        return EXIT_FAILED if incompatible else EXIT_OK
    if args.watch:  # one document on stdout: the batch as it ended
        return watch(api, batch["id"], args.output)
    emit_one(_batch_row(batch), [c for c in BATCH_COLUMNS if c.key != "created_at"], args.output)
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

FAILURE_COLUMNS = (
    Col("server_id", label="latest failures"),
    Col("error_code", label="code"),
    Col("error_message", label="message", wrap=True),
)
# How many of a batch's failed servers watch shows.
LATEST_FAILURES = 5


def _settled(batch: Mapping[str, Any]) -> int:
    return sum(batch["counts"][s] for s in SETTLED)


def progress_line(batch: Mapping[str, Any]) -> str:
    """One line of a batch's progress, for a watch without a terminal: its state, wave and the
    servers in each state (those with any)."""
    counts = batch["counts"]
    states = ", ".join(f"{s} {counts[s]}" for s in STATES if counts.get(s))
    line = (
        f"batch {batch['id']} {batch['state']}, wave {batch['current_wave']}/"
        f"{batch['waves_total']}, {_settled(batch)}/{batch['total']} settled: "
        f"{states or 'no servers'}"
    )
    reasons = reason_lines(batch)
    return line + (f" ({'; '.join(reasons)})" if reasons else "")


def _watch_view(batch: dict[str, Any], failures: list[dict[str, Any]], rate: float) -> Group:
    progress = Progress(
        TextColumn("{task.description:>10}"),
        BarColumn(bar_width=40),
        TextColumn("{task.completed}/{task.total}"),
    )
    for state in STATES:
        progress.add_task(state, total=batch["total"], completed=batch["counts"][state])
    for wave in batch.get("waves", [])[:12]:
        settled = sum(wave["counts"][s] for s in SETTLED)
        progress.add_task(f"wave {wave['wave']}", total=wave["size"], completed=settled)
    left = batch["total"] - _settled(batch)
    eta = f"{left / rate:.0f} s" if rate > 0 else "-"
    budget = batch["error_budget"]
    header = (
        f"batch {batch['id']}  [bold]{batch['state']}[/]  wave {batch['current_wave']}/"
        f"{batch['waves_total']}  rate {rate:.1f}/s  ETA {eta}  budget left "
        f"{'unlimited' if budget['allowed'] is None else budget['left']}"
    )
    for reason in reason_lines(batch):
        header += "\n" + escape(reason)
    parts: list[RenderableType] = [header, progress]
    if failures:  # never an empty table
        latest = failures[-LATEST_FAILURES:]
        table = table_of(latest, FAILURE_COLUMNS, Console().width)
        parts.append(table or Text("\n".join(f["server_id"] for f in latest)))
    return Group(*parts)


def _failures(api: ApiClient, batch: Mapping[str, Any]) -> list[dict[str, Any]]:
    if not batch["counts"]["failed"]:
        return []
    path = f"/api/v1/batches/{batch['id']}/servers"
    items: list[dict[str, Any]] = api.get(path, state="failed", limit="20")["items"]
    return items


def watch(
    api: ApiClient,
    batch_id: str,
    output: str,
    interval_s: float = 1.0,
    terminal: bool | None = None,
) -> int:
    """Follow a batch until it ends; exit code by its final state. On a terminal: live bars.
    Otherwise (piped, logged): a line at each change of the counts, then the failures (if any)
    and the final line, each on its own line. JSON or CSV: the batch as it ended, only."""
    if output != "table":
        while True:
            batch = api.get(f"/api/v1/batches/{batch_id}")
            if batch["state"] in TERMINAL:
                emit_one(_batch_row(batch), ["id", "state", "total", "succeeded", "failed"], output)
                return exit_code_for(batch)
            time.sleep(interval_s)
    if not (sys.stdout.isatty() if terminal is None else terminal):
        return _watch_lines(api, batch_id, interval_s)
    samples: list[tuple[float, int]] = []
    console = Console()
    with Live(console=console, refresh_per_second=4) as live:
        while True:
            batch = api.get(f"/api/v1/batches/{batch_id}")
            samples = [*samples[-30:], (time.monotonic(), _settled(batch))]
            rate = 0.0
            if len(samples) > 1 and samples[-1][0] > samples[0][0]:
                rate = (samples[-1][1] - samples[0][1]) / (samples[-1][0] - samples[0][0])
            live.update(_watch_view(batch, _failures(api, batch), rate))
            if batch["state"] in TERMINAL:
                break
            time.sleep(interval_s)
    console.print(f"batch {batch_id} ended {batch['state']}", highlight=False)
    return exit_code_for(batch)


def _watch_lines(api: ApiClient, batch_id: str, interval_s: float) -> int:
    last = ""
    while True:
        batch = api.get(f"/api/v1/batches/{batch_id}")
        line = progress_line(batch)
        if line != last:
            print(line, flush=True)
            last = line
        if batch["state"] in TERMINAL:
            break
        time.sleep(interval_s)
    failures = _failures(api, batch)
    if failures:
        print_table(failures[-LATEST_FAILURES:], FAILURE_COLUMNS)
    print(f"batch {batch_id} ended {batch['state']}", flush=True)
    return exit_code_for(batch)


# ------------------------------------------------------------------ the rest


def cmd_watch(args: argparse.Namespace, api: ApiClient) -> int:
    return watch(api, args.batch, args.output)


def cmd_batches(args: argparse.Namespace, api: ApiClient) -> int:
    page = api.get("/api/v1/batches", limit=str(args.limit))
    emit([_batch_row(b) for b in page["items"]], BATCH_COLUMNS, args.output)
    return EXIT_OK


def reason_lines(batch: Mapping[str, Any]) -> list[str]:
    """Why a batch is paused, aborted or being cancelled, and what is left broken, in words."""
    lines: list[str] = []
    state = batch["state"]
    reason = batch.get("pause_reason")
    who = batch.get("paused_by")
    by = f" (by {who})" if who and who not in (reason or "") else ""
    if state == "paused":
        gate = batch.get("approval_gate") is not None
        then = "approvers approve (or reject) it" if gate else "resume to continue"
        lines.append(f"paused: {reason or 'no reason given'}{by}; {then}")
    elif reason and state in TERMINAL:
        lines.append(f"was paused: {reason}{by}")
    abort = batch.get("abort_reason")
    if abort:
        verb = "aborted" if state in TERMINAL else "aborting"
        if abort == "error_budget":
            budget = batch.get("error_budget") or {}
            lines.append(
                f"{verb}: the error budget is spent ({budget.get('used')} failed, "
                f"{budget.get('allowed')} allowed); servers not yet sent are cancelled"
            )
        else:
            lines.append(f"{verb}: {abort}")
    if batch.get("cancel_requested") and state not in TERMINAL:
        lines.append(
            "cancel requested: servers not yet sent are cancelled, "
            "jobs running are followed to their end"
        )
    if batch.get("broken"):
        lines.append(f"{batch['broken']} server(s) left in ERROR by their job")
    return lines


def status_lines(batch: Mapping[str, Any]) -> list[str]:
    """`reimage status` above its table of counts: the batch in a line, then its reasons and
    every approval decision."""
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
    lines = [line, *reason_lines(batch)]
    for decision in (batch.get("approvals") or {}).get("decisions") or []:
        gate = "before the start" if decision["gate"] == 0 else f"after wave {decision['gate']}"
        note = f": {decision['comment']}" if decision.get("comment") else ""
        lines.append(
            f"{decision['decision']} {gate} by {decision['principal']} at {decision['at']}" + note
        )
    return lines


STATUS_CSV_COLUMNS = (
    *("id", "state", "total", "succeeded", "failed", "progress"),
    *("pause_reason", "paused_by", "abort_reason", "cancel_requested"),
)


def cmd_status(args: argparse.Namespace, api: ApiClient) -> int:
    batch = api.get(f"/api/v1/batches/{args.batch}")
    if args.output == "table":
        console = Console()
        for line in status_lines(batch):
            console.print(Text(line), soft_wrap=True)
        print_table(
            [{"state": s, "servers": n} for s, n in batch["counts"].items()],
            ["state", "servers"],
            console,
        )
    elif args.output == "json":
        emit_one(batch, [], "json")
    else:
        emit_one(
            _batch_row(batch),
            STATUS_CSV_COLUMNS,
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


SERVER_COLUMNS = (
    Col("server_id"),
    Col("state"),
    Col("wave", drop=3),
    Col("image_id", drop=5),
    Col("job_id", drop=4),
    Col("health", wrap=True, drop=2),
    Col("error_code", label="code"),
    Col("error_message", label="message", wrap=True),
)


def cmd_servers(args: argparse.Namespace, api: ApiClient) -> int:
    query = {"limit": "1000", **({"state": args.state} if args.state else {})}
    items = api.pages(f"/api/v1/batches/{args.batch}/servers", **query)
    if args.output != "json":
        items = [{**item, "health": health_summary(item)} for item in items]
    emit(items, SERVER_COLUMNS, args.output)
    return EXIT_OK


# A server's history in a table, one per batch (the batch id above it, whole).
HISTORY_COLUMNS = (
    Col("at"),
    Col("from_state", label="from", drop=3),
    Col("to_state", label="to"),
    Col("reason", drop=2),
    Col("attempt", drop=4),
    Col("job_id", drop=5),
    Col("code"),
    Col("message", wrap=True),
)
HISTORY_CSV_COLUMNS = ("at", "batch_id", "from_state", "to_state", "reason", "attempt", "job_id")


def history_rows(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """History rows with the cloud's error code and message read from each row's details."""
    rows = []
    for item in items:
        code, message = cloud_error(item.get("details"))
        rows.append({**item, "code": code, "message": message})
    return rows


def cmd_history(args: argparse.Namespace, api: ApiClient) -> int:
    items = api.pages(f"/api/v1/servers/{args.server}/history", limit="1000")
    if args.output == "json":
        emit(items, [], "json")
    elif args.output == "csv":
        emit(history_rows(items), [*HISTORY_CSV_COLUMNS, "code", "message"], "csv")
    else:
        print_history(history_rows(items), Console())
    return EXIT_OK


def print_history(rows: list[dict[str, Any]], console: Console) -> None:
    """One table per batch, in the order the batches first appear, each under its batch id."""
    by_batch: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_batch.setdefault(str(row.get("batch_id")), []).append(row)
    if not by_batch:
        console.print(Text("no history"))
    # The same columns under every batch: those that fit the widest of them.
    fitted = fit(rows, HISTORY_COLUMNS, console.width)
    columns = fitted[0] if fitted else HISTORY_COLUMNS
    for index, (batch_id, batch_rows) in enumerate(by_batch.items()):
        if index:
            console.print()
        console.print(Text(f"batch {batch_id}"), soft_wrap=True)
        print_table(batch_rows, columns, console)


def _control(action: str) -> Callable[[argparse.Namespace, ApiClient], int]:
    def run(args: argparse.Namespace, api: ApiClient) -> int:
        body = {"reason": args.reason} if getattr(args, "reason", None) else {}
        batch = api.post(f"/api/v1/batches/{args.batch}/{action}", body)
        emit_one(_batch_row(batch), CONTROL_COLUMNS, args.output)
        return EXIT_OK

    return run


def _decide(decision: str) -> Callable[[argparse.Namespace, ApiClient], int]:
    """`approve` / `reject`: one decision on the gate a batch waits on."""

    def run(args: argparse.Namespace, api: ApiClient) -> int:
        body = {"comment": args.comment} if args.comment else {}
        batch = api.post(f"/api/v1/batches/{args.batch}/{decision}", body)
        emit_one(_batch_row(batch), CONTROL_COLUMNS, args.output)
        return EXIT_OK

    return run


ROLLBACK_FLAGS = {"servers": "--servers", "states": "--failed", "policy": "--max-in-flight"}
RETRY_STATES = ("failed", "cancelled", "skipped", "succeeded")


def _new_batch(args: argparse.Namespace, api: ApiClient, batch: dict[str, Any]) -> int:
    """A retry's or a rollback's new batch: shown, then followed with --watch (JSON or CSV:
    only the batch as it ended, one document)."""
    if not (args.watch and args.output != "table"):
        emit_one(_batch_row(batch), NEW_BATCH_COLUMNS, args.output)
    return watch(api, batch["id"], args.output) if args.watch else EXIT_OK


def cmd_rollback(args: argparse.Namespace, api: ApiClient) -> int:
    body: dict[str, Any] = {}
    if args.servers and args.failed:
        raise UsageError("--servers and --failed: give one of them (neither: every changed one)")
    if args.servers:
        body["servers"] = server_ids("--servers", args.servers)
    elif args.failed:
        body["states"] = ["failed"]
    if args.max_in_flight is not None:
        body["policy"] = {"max_in_flight": amount("--max-in-flight", args.max_in_flight)}
    try:
        batch = api.post(f"/api/v1/batches/{args.batch}/rollback", body)
    except ApiError as exc:
        raise for_operator(exc, ROLLBACK_FLAGS) from None
    return _new_batch(args, api, batch)


def cmd_retry(args: argparse.Namespace, api: ApiClient) -> int:
    states = choices("--states", args.states, RETRY_STATES)
    try:
        batch = api.post(f"/api/v1/batches/{args.batch}/retry", {"states": states})
    except ApiError as exc:
        raise for_operator(exc, {"states": "--states"}) from None
    return _new_batch(args, api, batch)


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


def conflict_lines(conflicts: list[dict[str, str]]) -> list[str]:
    """A refusal's conflicting servers, one a line, each with the batch it is active in."""
    lines = [
        f"  {c.get('server_id')}  in batch {c.get('batch_id')} ({c.get('state', 'active')})"
        for c in conflicts[:FIRST_CONFLICTS]
    ]
    if len(conflicts) > FIRST_CONFLICTS:
        lines.append(f"  ... and {len(conflicts) - FIRST_CONFLICTS} more")
    return lines


def check_ids(args: argparse.Namespace) -> None:
    """The batch and server ids of the command line, checked before any request is sent."""
    if getattr(args, "batch", None) is not None:
        args.batch = uuid_arg(args.batch, "batch id")
    if getattr(args, "server", None) is not None:
        args.server = uuid_arg(args.server, "server id")


def run_operator(
    func: Callable[[argparse.Namespace, ApiClient], int],
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            check_ids(args)
            return func(args, client_from_env())
        except UsageError as exc:
            print(f"reimage: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except ApiUnreachable as exc:
            print(f"reimage: {exc}", file=sys.stderr)
            return EXIT_UNREACHABLE
        except ApiError as exc:
            line = exc.one_line()
            if exc.conflicts and hasattr(args, "on_conflict"):
                line += "; --on-conflict skip submits the others"
            print(f"reimage: {line}", file=sys.stderr)
            for conflict in conflict_lines(exc.conflicts):
                print(conflict, file=sys.stderr)
            return EXIT_USAGE if exc.status in API_REFUSALS else EXIT_FAILED
        except BrokenPipeError:
            # The reader stopped reading (`reimage servers B | head`): no traceback, and none
            # when Python flushes stdout on the way out either.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_OK

    return run


# The API refused the request as given (bad input, no access, no such thing, a conflict, an
# incompatible fleet): like a usage error, exit code 2. Any other error status: 1.
API_REFUSALS = (400, 401, 403, 404, 409, 422)
