"""`reimage demo` end to end: it runs a batch, then Ctrl-C stops it and every process it started."""

from __future__ import annotations

import os
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


def test_demo_runs_a_batch_and_ctrl_c_leaves_nothing_behind(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "HUAWEICLOUD_"))}
    env["ORCH_DATABASE_URL"] = f"sqlite:///{tmp_path / 'demo.db'}"
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
    assert "ended" in text and "API: http://127.0.0.1:" in text, text
    assert len(children) >= 4  # simulator, api, worker (+ its pool), beat
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
