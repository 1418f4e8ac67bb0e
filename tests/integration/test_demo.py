"""`reimage demo` end to end: it runs a batch, prints what a newcomer copies to submit their own
(which works, copied as printed), then Ctrl-C stops it and every process it started; without
--keep-running it exits with the CLI's exit code and points at nothing it has stopped."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def descendants(pid: int) -> set[int]:
    """Every live process whose parent chain leads to `pid` (read from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "HUAWEICLOUD_"))}
    env["ORCH_DATABASE_URL"] = f"sqlite:///{tmp_path / 'demo.db'}"
    return env


def test_demo_without_keep_running_exits_1_on_failures_and_points_at_nothing(
    tmp_path: Path,
) -> None:
    ended = subprocess.run(
        [sys.executable, "-m", "orchestrator", "demo", "--servers", "12", "--job-seconds", "1",
         "--fail-ratio", "0.5", "--no-keep-running"],
        cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert ended.returncode == 1, ended.stdout + ended.stderr
    assert "ended partially_failed" in ended.stdout or "ended aborted" in ended.stdout
    # The stack is gone when it returns: no URL, token or curl line to try against it.
    assert "curl" not in ended.stdout and "export ORCH_API_URL" not in ended.stdout
    assert "the stack stops now" in ended.stdout


def test_demo_runs_a_batch_and_ctrl_c_leaves_nothing_behind(tmp_path: Path) -> None:
    env = _env(tmp_path)
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "demo",
            "--servers",
            "12",
            "--job-seconds",
            "1",
            "--fail-ratio",
            "0",
            "--keep-running",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert demo.stdout is not None
    output: list[str] = []
    children: set[int] = set()
    deadline = time.monotonic() + 120
    for line in demo.stdout:
        output.append(line)
        children |= descendants(demo.pid)
        if "press Ctrl-C" in line:
            break
        assert time.monotonic() < deadline, "".join(output)
    text = "".join(output)
    assert "ended succeeded" in text, text
    assert len(children) >= 4  # simulator, api, worker (+ its pool), beat
    # What the demo printed, copied as is: the export line, then the status and submit commands.
    block = text[text.index("Drive it yourself") :]
    export = next(line.strip() for line in block.splitlines() if "export ORCH_API_URL=" in line)
    commands = [
        line.strip() for line in block.splitlines() if re.search(r" (status|submit) ", line)
    ]
    assert [re.findall(r" (status|submit) ", c) for c in commands] == [["status"], ["submit"]]
    submit_start = block.index(commands[1])
    submit = block[submit_start : block.index("--watch", submit_start) + len("--watch")]
    shell_env = {"PATH": env["PATH"], "HOME": str(tmp_path), "NO_PROXY": "127.0.0.1"}
    for command in (commands[0], submit):
        copied = subprocess.run(
            ["bash", "-c", f"{export}\n{command}"],
            cwd=tmp_path, env=shell_env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert copied.returncode == 0, (command, copied.stdout, copied.stderr)
    assert "ended succeeded" in copied.stdout, copied.stdout
    demo.send_signal(signal.SIGINT)
    demo.wait(timeout=60)
    assert demo.returncode == 130
    time.sleep(0.5)
    alive = [
        pid
        for pid in children
        if Path(f"/proc/{pid}").exists()
        and (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z")
    ]
    assert alive == [], f"left behind: {alive}"
