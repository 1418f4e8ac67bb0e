"""The operator CLI's output and input checks (issue 16): tables that never cut an id at any
width, the history's cloud code and message, a server file's mistakes by line, every bad flag
named, ids checked before any request, conflicts listed, JSON objects for one thing.

Pure functions first; then the real `reimage` process against an API that is not there, which
proves nothing was sent (a request would end in exit code 3, "unreachable")."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from orchestrator.cli.apiclient import ApiError
from orchestrator.cli.inputs import (
    ServerList,
    UsageError,
    amount,
    amounts,
    map_server_fields,
    read_servers,
    spread_rule,
    uuid_arg,
    wave_numbers,
)
from orchestrator.cli.main import build_parser
from orchestrator.cli.ops import (
    BATCH_COLUMNS,
    FAILURE_COLUMNS,
    SERVER_COLUMNS,
    STATES,
    SUBMIT_FLAGS,
    _batch_row,
    _policy,
    conflict_lines,
    for_operator,
    history_rows,
    print_history,
    progress_line,
    reason_lines,
    status_lines,
)
from orchestrator.cli.output import Col, cloud_error, emit, emit_one, fit, print_table

IDS = [str(uuid.UUID(int=i * 7919 + 0x6C17BFCA53070000)) for i in range(4)]


def render(rows: list[dict[str, Any]], columns: Any, width: int) -> str:
    buffer = io.StringIO()
    print_table(rows, columns, Console(file=buffer, width=width, color_system=None))
    return buffer.getvalue()


def batch(**changes: Any) -> dict[str, Any]:
    counts = dict.fromkeys(STATES, 0)
    base: dict[str, Any] = {
        "id": IDS[0],
        "state": "running",
        "total": 10,
        "counts": {**counts, "pending": 6, "running": 2, "succeeded": 2},
        "current_wave": 1,
        "waves_total": 2,
        "error_budget": {"allowed": 1, "used": 0, "left": 1},
        "pause_reason": None,
        "paused_by": None,
        "abort_reason": None,
        "cancel_requested": False,
        "broken": 0,
        "created_at": "2026-12-02T15:15:55.256719Z",
    }
    return {**base, **changes}


# ------------------------------------------------------------------ 1: whole ids at any width


@pytest.mark.parametrize("width", [40, 60, 80, 100, 120, 200])
def test_batch_ids_are_whole_in_the_batches_table_at_any_width(width: int) -> None:
    rows = [_batch_row(batch(id=i, state="partially_failed")) for i in IDS]
    text = render(rows, BATCH_COLUMNS, width)
    for batch_id in IDS:
        assert batch_id in text, text
    assert "…" not in text
    # Wider than the console only where a line holds an id that cannot fit at all.
    assert max(len(line) for line in text.splitlines()) <= max(width, len("created_at  ") + 36)


@pytest.mark.parametrize("width", [30, 50, 80, 132])
def test_server_ids_and_messages_are_whole_in_the_servers_table(width: int) -> None:
    rows = [
        {
            "server_id": s,
            "state": "failed",
            "wave": 1,
            "image_id": IDS[0],
            "job_id": "ff80808288d41e1b018a6d7c5c8a2a5b",
            "health": "",
            "error_code": "Ecs.0202",
            "error_message": "Creating the system disk failed.",
        }
        for s in IDS
    ]
    text = render(rows, SERVER_COLUMNS, width)
    assert "…" not in text
    for server in IDS:
        assert server in text, text
    assert max(len(line) for line in text.splitlines()) <= max(width, 36 + 11), text
    # The message may wrap inside its column, but every word of it is there.
    assert all(word in text for word in ["Creating", "the", "system", "disk", "failed."])


def test_at_80_columns_the_least_important_columns_go_first() -> None:
    rows = [_batch_row(batch(id=i, state="partially_failed")) for i in IDS]
    fitted = fit(rows, BATCH_COLUMNS, 80)
    assert fitted is not None
    assert [c.key for c in fitted[0]] == ["id", "state", "progress", "failed"]
    wide = fit(rows, BATCH_COLUMNS, 200)
    assert wide is not None and [c.key for c in wide[0]] == [c.key for c in BATCH_COLUMNS]
    server = {
        "server_id": IDS[0],
        "state": "succeeded",
        "wave": 1,
        "image_id": IDS[1],
        "job_id": "ff80808288d41e1b018a6d7c5c8a2a5b",
        "health": "3 probe(s), 2 healthy in a row, last 200",
        "error_code": "Ecs.0202",
        "error_message": "Creating the system disk failed.",
    }
    servers = fit([server], SERVER_COLUMNS, 80)
    assert servers is not None
    assert [c.key for c in servers[0]] == ["server_id", "state", "error_code", "error_message"]


def test_too_narrow_for_any_table_each_row_is_printed_whole_as_lines() -> None:
    text = render([{"server_id": IDS[1], "error_code": "Ecs.0202"}], FAILURE_COLUMNS, 30)
    assert f"latest failures  {IDS[1]}" in text and "Ecs.0202" in text
    assert "┃" not in text


def test_a_value_is_never_read_as_markup() -> None:
    text = render([{"id": IDS[0], "note": "[bold]x[/] [red]"}], ["id", Col("note")], 120)
    assert "[bold]x[/] [red]" in text


# ------------------------------------------------------------------ 2: pause and abort reasons


def test_status_says_why_a_batch_is_paused_aborted_or_being_cancelled() -> None:
    paused = status_lines(batch(state="paused", pause_reason="look first", paused_by="alice"))
    assert "paused: look first (by alice); resume to continue" in paused
    gate = reason_lines(
        batch(state="paused", pause_reason="awaiting approval", paused_by="policy", approval_gate=0)
    )
    assert gate == ["paused: awaiting approval (by policy); approvers approve (or reject) it"]
    aborted = reason_lines(
        batch(
            state="aborted",
            abort_reason="error_budget",
            error_budget={"allowed": 0, "used": 1, "left": 0},
        )
    )
    assert aborted == [
        "aborted: the error budget is spent (1 failed, 0 allowed); "
        "servers not yet sent are cancelled"
    ]
    assert reason_lines(batch(abort_reason="error_budget"))[0].startswith("aborting: ")
    cancelling = reason_lines(batch(cancel_requested=True))
    assert cancelling[0].startswith("cancel requested: ")
    assert reason_lines(batch(state="cancelled", cancel_requested=True)) == []
    assert reason_lines(batch()) == []


# ------------------------------------------------------------------ 3: history code and message


def test_the_cloud_error_of_a_history_row_as_the_web_page_reads_it() -> None:
    assert cloud_error({"code": "Ecs.0005", "message": "bad"}) == ("Ecs.0005", "bad")
    job = {"job": {"error_code": "Ecs.0202", "fail_reason": "Creating the system disk failed."}}
    assert cloud_error(job) == ("Ecs.0202", "Creating the system disk failed.")
    assert cloud_error({"job_gone": {"code": "Ecs.0610", "message": "gone"}}) == (
        "Ecs.0610",
        "gone",
    )
    assert cloud_error({"wave": 1}) == (None, None)
    assert cloud_error(None) == (None, None)
    rows = history_rows([{"batch_id": IDS[0], "to_state": "failed", "details": job}])
    assert rows[0]["code"] == "Ecs.0202" and rows[0]["message"].startswith("Creating")


def test_history_is_one_table_per_batch_with_code_and_message_columns() -> None:
    job = {"job": {"error_code": "Ecs.0202", "fail_reason": "Creating the system disk failed."}}
    items: list[dict[str, Any]] = [
        {"batch_id": IDS[0], "at": "2026-12-02T15:15:55.256719Z", "to_state": "pending"},
        {
            "batch_id": IDS[0],
            "at": "2026-12-02T15:16:16.829441Z",
            "to_state": "failed",
            "reason": "job_failed",
            "details": job,
        },
        {"batch_id": IDS[1], "at": "2026-12-02T16:00:00.000001Z", "to_state": "pending"},
    ]
    buffer = io.StringIO()
    print_history(history_rows(items), Console(file=buffer, width=80, color_system=None))
    text = buffer.getvalue()
    assert f"batch {IDS[0]}\n" in text and f"batch {IDS[1]}\n" in text
    header = next(line for line in text.splitlines() if "┃ at" in line)
    assert "code" in header and "message" in header
    assert "Ecs.0202" in text and "disk" in text and "…" not in text


# ------------------------------------------------------------------ 4: a server file, by line


def test_a_csv_row_without_the_column_or_with_a_bad_id_is_named_by_its_line(
    tmp_path: Path,
) -> None:
    good = tmp_path / "fleet.csv"
    good.write_text("name,server_id\nweb1," + IDS[0] + "\n\nweb2," + IDS[1].upper() + "\n")
    servers = read_servers(str(good), "server_id")
    assert servers.ids == [IDS[0], IDS[1]] and servers.lines == [2, 4]
    for body, expected in [
        (f"name,server_id\nweb1,{IDS[0]}\nweb2\n", "fleet.csv line 3: no server_id value"),
        (f"name,server_id\nweb1,{IDS[0]}\nweb2,\n", "fleet.csv line 3: no server_id value"),
        ("name,server_id\nweb1,web-3\n", "fleet.csv line 2: 'web-3' is not a server UUID"),
        (
            f"name,server_id\na,{IDS[0]}\nb,{IDS[1]}\nc,{IDS[0]}\n",
            f"fleet.csv line 4: {IDS[0]} repeats line 2",
        ),
        ("name,server_id\na,x\nb,\nc,y\n", "line 2: 'x' is not a server UUID (and 2 more"),
        ("name,id\n", "fleet.csv: no CSV column named 'server_id'"),
        ("name,server_id\n", "fleet.csv: no server ids"),
    ]:
        bad = tmp_path / "fleet.csv"
        bad.write_text(body)
        with pytest.raises(UsageError) as caught:
            read_servers(str(bad), "server_id")
        message = str(caught.value)
        assert expected in message and "\n" not in message, message


def test_a_plain_list_counts_comment_and_blank_lines_too(tmp_path: Path) -> None:
    listed = tmp_path / "ids.txt"
    listed.write_text(f"# fleet\n{IDS[0]}\n\n  not-an-id\n")
    with pytest.raises(UsageError, match=r"ids.txt line 4: 'not-an-id' is not a server UUID$"):
        read_servers(str(listed), None)
    spreadsheet = tmp_path / "bom.csv"
    spreadsheet.write_bytes(("\ufeffserver_id\n" + IDS[2] + "\n").encode())
    assert read_servers(str(spreadsheet), "server_id").ids == [IDS[2]]


def test_the_apis_servers_index_maps_back_to_the_files_line() -> None:
    servers = ServerList("fleet.csv", [IDS[0], IDS[1]], [2, 5])
    fields = {"servers[1]": "duplicate of servers[0]", "servers": "at most 10000"}
    assert map_server_fields(fields, servers) == {
        "fleet.csv line 5": "duplicate of fleet.csv line 2",
        "servers": "at most 10000",
    }
    refused = ApiError(400, "invalid_request", "request has 2 invalid fields", fields)
    line = for_operator(refused, SUBMIT_FLAGS, servers).one_line()
    assert "fleet.csv line 5: duplicate of fleet.csv line 2" in line
    assert "servers[1]" not in line


# ------------------------------------------------------------------ 5: every bad flag named


def submit_args(*flags: str) -> Any:
    return build_parser().parse_args(
        ["submit", "--project-id", "p", "--region", "cn-north-4", "--image", IDS[0], *flags]
    )


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (("--waves", "0,abc"), "--waves: "),
        (("--waves", "1,,50%"), "--waves: "),
        (("--waves", "150%"), "--waves: "),
        (("--max-in-flight", "0"), "--max-in-flight: "),
        (("--max-in-flight", "ten"), "--max-in-flight: "),
        (("--max-failures", "-1"), "--max-failures: "),
        (("--max-failures", "5.5"), "--max-failures: "),
        (("--pause-after-waves", "x"), "--pause-after-waves: "),
        (("--pause-after-waves", "0"), "--pause-after-waves: "),
        (("--spread", "zone"), "--spread: "),
        (("--spread", "availability_zone=x"), "--spread: "),
        (("--approvals", "1", "--approvals-after-waves", "a"), "--approvals-after-waves: "),
        (("--window-cron", "0 1 * * SAT"), "--window-cron "),
    ],
)
def test_a_bad_value_of_a_flag_names_the_flag(flags: tuple[str, ...], named: str) -> None:
    with pytest.raises(UsageError) as caught:
        _policy(submit_args(*flags))
    assert str(caught.value).startswith(named) and "\n" not in str(caught.value)


def test_counts_and_percentages_as_the_api_takes_them() -> None:
    assert amounts("--waves", "1, 10%,100%") == [1, "10%", "100%"]
    assert amount("--max-failures", "0", minimum=0) == 0
    assert amount("--max-failures", "0%", minimum=0) == "0%"
    assert wave_numbers("--pause-after-waves", "1,3") == [1, 3]
    assert spread_rule("tag:rack=2") == {"by": "tag:rack", "max_in_flight": 2}
    policy = _policy(submit_args("--waves", "1,50%", "--max-failures", "0"))
    assert policy["waves"] == [1, "50%"] and policy["max_failures"] == 0


def test_a_value_the_api_refuses_is_named_by_its_flag() -> None:
    refused = ApiError(
        400,
        "invalid_request",
        "request has 2 invalid fields",
        {"policy.job_timeout_s": "must be >= 60", "policy.windows[0].timezone": "unknown"},
    )
    line = for_operator(refused, SUBMIT_FLAGS).one_line()
    assert "--job-timeout (policy.job_timeout_s): must be >= 60" in line
    assert "--window-timezone (policy.windows[0].timezone): unknown" in line


# ------------------------------------------------------------------ 6: ids checked locally


def test_an_id_that_is_not_a_uuid_is_refused_before_any_request() -> None:
    with pytest.raises(UsageError, match=r"^batch id 12345 is not a UUID$"):
        uuid_arg("12345", "batch id")
    assert uuid_arg(IDS[0].upper(), "batch id") == IDS[0]


def run_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    # Nothing listens on port 1: a request would end in exit code 3.
    env = {"PATH": "/usr/bin:/bin", "ORCH_API_URL": "http://127.0.0.1:1", "ORCH_API_TOKEN": "t"}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "command",
    [
        ("status",),
        ("watch",),
        ("servers",),
        ("pause",),
        ("resume",),
        ("cancel",),
        ("approve",),
        ("reject",),
        ("retry",),
        ("rollback",),
    ],
)
def test_every_command_taking_a_batch_id_checks_it_first(command: tuple[str, ...]) -> None:
    result = run_cli(*command, "12345")
    assert result.returncode == 2, result.stderr
    assert result.stderr == "reimage: batch id 12345 is not a UUID\n"
    assert result.stdout == ""


def test_history_checks_its_server_id_and_bad_flags_send_nothing(tmp_path: Path) -> None:
    history = run_cli("history", "web-1")
    assert (history.returncode, history.stderr) == (2, "reimage: server id web-1 is not a UUID\n")
    fleet = tmp_path / "fleet.csv"
    fleet.write_text(f"name,server_id\nweb1,{IDS[0]}\nweb2\n")
    submit: tuple[str, ...] = ("submit", "--project-id", "p", "--region", "cn-north-4")
    submit += ("--image", IDS[0])
    submit += ("--keyname", "k")
    for extra, expected in [
        (("--servers", str(fleet), "--csv-column", "server_id"), f"{fleet} line 3: "),
        (("--servers", "-", "--waves", "0,abc"), "--waves: '0' is not a count"),
        (("--servers", "-", "--pause-after-waves", "x"), "--pause-after-waves: "),
        (("--servers", "-", "--tag", "nokey"), "--tag: "),
    ]:
        result = run_cli(*submit, *extra, stdin=IDS[1] + "\n")
        assert result.returncode == 2, (extra, result.stderr)
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"reimage: {expected}"), result.stderr
    for args, expected in [
        (("retry", IDS[0], "--states", "faild"), "--states: "),
        (("rollback", IDS[0], "--servers", "a,b"), "--servers: "),
        (("rollback", IDS[0], "--max-in-flight", "0"), "--max-in-flight: "),
    ]:
        result = run_cli(*args)
        assert result.returncode == 2 and result.stderr.startswith(f"reimage: {expected}")


# ------------------------------------------------------------------ 7: conflicts listed


def test_a_conflict_lists_the_first_twenty_servers_with_their_batch_and_state() -> None:
    conflicts = [
        {"server_id": str(uuid.UUID(int=i)), "batch_id": IDS[1], "state": "running"}
        for i in range(25)
    ]
    lines = conflict_lines(conflicts)
    assert len(lines) == 21 and lines[-1] == "  ... and 5 more"
    assert lines[0] == f"  {uuid.UUID(int=0)}  in batch {IDS[1]} (running)"
    assert conflict_lines(conflicts[:2]) == lines[:2]


# ------------------------------------------------------------------ 8: watch without a terminal


def test_a_progress_line_has_the_counts_and_reasons_on_one_line() -> None:
    line = progress_line(batch(state="paused", pause_reason="look first", paused_by="bob"))
    assert line == (
        f"batch {IDS[0]} paused, wave 1/2, 2/10 settled: pending 6, running 2, succeeded 2 "
        "(paused: look first (by bob); resume to continue)"
    )
    assert "\n" not in line


# ------------------------------------------------------------------ 9: one object, one document


def test_one_batch_is_a_json_object_and_a_listing_an_array(
    capsys: pytest.CaptureFixture[str],
) -> None:
    emit_one(_batch_row(batch()), BATCH_COLUMNS, "json")
    one = json.loads(capsys.readouterr().out)
    assert isinstance(one, dict) and one["id"] == IDS[0]
    emit([_batch_row(batch())], BATCH_COLUMNS, "json")
    assert isinstance(json.loads(capsys.readouterr().out), list)
    emit_one(_batch_row(batch()), ["id", "state"], "csv")
    assert capsys.readouterr().out == f"id,state\r\n{IDS[0]},running\r\n"
