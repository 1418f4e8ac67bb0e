"""CPU seconds and peak memory of process trees, read from /proc (Linux), for the benchmark."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    return children


def tree(pid: int) -> list[int]:
    children = _children_map()
    found, frontier = [pid], [pid]
    while frontier:
        frontier = [c for p in frontier for c in children.get(p, [])]
        found.extend(frontier)
    return found


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime


def _peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass
class TreeSampler:
    """Follows one process and its descendants; keeps the last CPU time and peak RSS of each."""

    root: int
    cpu: dict[int, float] = field(default_factory=dict)
    rss: dict[int, float] = field(default_factory=dict)
    # CPU seconds already spent at `mark()` (start-up: imports, migrations, connecting).
    baseline_cpu: float = 0.0

    def sample(self) -> None:
        for pid in tree(self.root):
            cpu, rss = _cpu_seconds(pid), _peak_rss_mb(pid)
            if cpu is not None:
                self.cpu[pid] = max(cpu, self.cpu.get(pid, 0.0))
            if rss is not None:
                self.rss[pid] = max(rss, self.rss.get(pid, 0.0))

    def mark(self) -> None:
        """From now on: `cpu_since_mark` counts only what the tree spends after this call."""
        self.sample()
        self.baseline_cpu = self.cpu_seconds

    @property
    def cpu_seconds(self) -> float:
        return sum(self.cpu.values())

    @property
    def cpu_since_mark(self) -> float:
        return self.cpu_seconds - self.baseline_cpu

    @property
    def peak_rss_mb(self) -> float:
        """The largest single process of the tree (a worker's pool children included)."""
        return max(self.rss.values(), default=0.0)
