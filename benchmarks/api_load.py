"""Read-API load: a million history rows in PostgreSQL, N concurrent keep-alive clients.

Seeds a realistic fleet (benchmarks/fleet_data.py: 50 batches, one of 100,000 servers in
flight, ~1,000,000 history rows), starts the real API as a subprocess, and drives it with
closed-loop clients for S seconds, mixing GET of the big batch, pages of its servers (first
page, later pages by cursor, ?state=failed) and one server's history. Prints one table: per
route, requests, errors, req/s and p50/p95/p99 latency in ms.

    python benchmarks/api_load.py \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/reimage_load --create \
        [--history-rows 1000000] [--clients 50] [--seconds 20] [--seed-only | --no-seed] \
        [--json FILE] [--explain]

`--create` creates the database named in the URL (it must not exist) and migrates it;
`--no-seed` reuses a database seeded by an earlier run; `--explain` also prints EXPLAIN
ANALYZE of each statement the routes' services run, to tell a slow query from queueing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

from migrations import upgrade
from orchestrator.db.engine import make_session_factory, normalise_url
from orchestrator.services import batches as batch_service

try:
    from benchmarks.commands import shareable_url
    from benchmarks.fleet_data import seed_fleet, shape_for_history_rows
except ModuleNotFoundError:  # run as `python benchmarks/api_load.py`: this folder is on the path
    from commands import shareable_url  # type: ignore[no-redef,import-not-found]
    from fleet_data import seed_fleet, shape_for_history_rows  # type: ignore[no-redef,import-not-found]

REPO = Path(__file__).resolve().parents[1]
API = "/api/v1"
# Route kind -> share of the requests (a dashboard refreshing a batch, operators paging its
# servers and failures, and looking up single servers).
MIX = {
    "batch": 0.20,
    "servers first page": 0.15,
    "servers later page": 0.25,
    "servers state=failed": 0.15,
    "server history": 0.25,
}
TARGET_P99_MS = 50.0


@dataclass
class Targets:
    """What the clients ask for: the big batch, cursors into it, servers with history."""

    batch_id: str
    server_ids: list[str]
    cursors: list[str] = field(default_factory=list)
    failed_cursors: list[str] = field(default_factory=list)

    def path(self, kind: str, rng: random.Random) -> str:
        servers = f"{API}/batches/{self.batch_id}/servers?limit=100"
        if kind == "batch":
            return f"{API}/batches/{self.batch_id}"
        if kind == "servers first page":
            return servers
        if kind == "servers later page":
            # A small batch may have no later page: its first one is then all there is.
            cursor = rng.choice(self.cursors) if self.cursors else None
            return servers + (f"&cursor={cursor}" if cursor else "")
        if kind == "servers state=failed":
            # Half first pages, half later ones, as an operator working through failures.
            later = self.failed_cursors and rng.random() < 0.5
            cursor = rng.choice(self.failed_cursors) if later else None
            return f"{servers}&state=failed" + (f"&cursor={cursor}" if cursor else "")
        return f"{API}/servers/{rng.choice(self.server_ids)}/history"


@dataclass
class RouteStats:
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0

    def figures(self, elapsed_s: float) -> dict[str, Any]:
        ordered = sorted(self.latencies_s)

        def percentile(q: float) -> float | None:
            if not ordered:
                return None
            return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000, 1)

        requests = len(ordered) + self.errors
        return {
            "requests": requests,
            "errors": self.errors,
            "req_per_s": round(requests / elapsed_s, 1),
            "p50_ms": percentile(0.50),
            "p95_ms": percentile(0.95),
            "p99_ms": percentile(0.99),
        }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="postgresql+psycopg://...")
    parser.add_argument("--create", action="store_true", help="create and migrate the database")
    parser.add_argument("--history-rows", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    seeding = parser.add_mutually_exclusive_group()
    seeding.add_argument("--seed-only", action="store_true", help="seed, then stop")
    seeding.add_argument("--no-seed", action="store_true", help="use the data already there")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--port", type=int, default=0, help="API port (0: a free one)")
    parser.add_argument("--processes", type=int, default=1, help="reimage api --processes N")
    parser.add_argument(
        "--bare",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also drive a bare aiohttp handler (benchmarks/bare_api.py) the same way: the "
        "yardstick of throughput per process",
    )
    parser.add_argument("--random-seed", type=int, default=1, help="for the clients' choices")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE each route")
    args = parser.parse_args(argv)
    if not normalise_url(args.database_url).startswith("postgresql"):
        parser.error("--database-url must be a PostgreSQL URL")
    return args


def create_database(url: str) -> None:
    """CREATE DATABASE for the URL's name, through the server's `postgres` database."""
    target = make_url(normalise_url(url))
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            exists = connection.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"),
                {"name": target.database},
            ).first()
            if exists:
                raise SystemExit(
                    f"database {target.database} exists: drop it, or use --no-seed to reuse it"
                )
            connection.execute(text(f'CREATE DATABASE "{target.database}"'))
    finally:
        admin.dispose()
    upgrade(url)


def find_targets(engine: Engine) -> Targets:
    """The largest batch, and a sample of servers that have history (from any batch)."""
    with engine.connect() as connection:
        batch_id = connection.execute(
            text("SELECT id FROM batches ORDER BY total DESC, created_at DESC LIMIT 1")
        ).scalar()
        if batch_id is None:
            raise SystemExit("the database holds no batch: seed it first (drop --no-seed)")
        # Once, before the clock starts: a full scan here costs the measurement nothing.
        server_ids = list(
            connection.execute(
                text("SELECT server_id FROM batch_servers ORDER BY random() LIMIT 5000")
            ).scalars()
        )
    return Targets(batch_id=batch_id, server_ids=server_ids)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def api_server(args: argparse.Namespace, token: str) -> Iterator[tuple[str, int]]:
    """`python -m orchestrator api` in its own process, so that the clients' CPU is not the
    API's; yields its base URL and pid, stops it afterwards."""
    port = args.port or _free_port()
    env = {
        **os.environ,
        "ORCH_DATABASE_URL": args.database_url,
        "ORCH_API_TOKEN": token,
        "ORCH_REDIS_URL": args.redis_url,
    }
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [
                sys.executable,
                *("-m", "orchestrator", "api", "--port", str(port)),
                *("--processes", str(args.processes)),
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=log,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(f"{base}/healthz", process, log)
            yield base, process.pid
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Any) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise SystemExit("the API exited:\n" + log.read().decode(errors="replace")[-2000:])
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise SystemExit(f"the API did not answer {url} within 30 s")


async def collect_cursors(http: aiohttp.ClientSession, base: str, targets: Targets) -> None:
    """Walk the big batch's servers (all, then the failed ones) to get cursors the API itself
    gave out; this also warms the caches, as a running system's would be."""
    walks = [
        (f"{base}{API}/batches/{targets.batch_id}/servers?limit=1000", targets.cursors),
        (f"{base}{API}/batches/{targets.batch_id}/servers?limit=100&state=failed", []),
    ]
    for url, found in walks:
        cursor: str | None = None
        while True:
            async with http.get(url + (f"&cursor={cursor}" if cursor else "")) as response:
                response.raise_for_status()
                cursor = (await response.json())["next_cursor"]
            if cursor is None:
                break
            found.append(cursor)
    targets.failed_cursors = walks[1][1]


async def client(
    http: aiohttp.ClientSession,
    base: str,
    targets: Targets,
    stats: dict[str, RouteStats],
    rng: random.Random,
    deadline: float,
) -> None:
    kinds, weights = list(MIX), list(MIX.values())
    while time.perf_counter() < deadline:
        kind = rng.choices(kinds, weights)[0]
        started = time.perf_counter()
        try:
            async with http.get(base + targets.path(kind, rng)) as response:
                # The whole body is read (the API serialised it); parsing it is the client's
                # business and would only compete with the API for the same two cores.
                await response.read()
                ok = response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        if ok:
            stats[kind].latencies_s.append(time.perf_counter() - started)
        else:
            stats[kind].errors += 1


@dataclass(frozen=True)
class Usage:
    """CPU counters read at the start and the end of the timed phase."""

    machine: tuple[int, int] | None  # busy and total jiffies of all CPUs
    api_cpu_s: float | None
    client_cpu_s: float

    @classmethod
    def now(cls, api_pid: int) -> Usage:
        return cls(_machine_jiffies(), _process_cpu_s(api_pid), time.process_time())

    def since(self, start: Usage) -> dict[str, Any]:
        """Where the CPU went: an API process near one core means Python is the bottleneck."""
        cpu: dict[str, Any] = {
            "load_client_cpu_s": round(self.client_cpu_s - start.client_cpu_s, 1)
        }
        if self.api_cpu_s is not None and start.api_cpu_s is not None:
            cpu["api_process_cpu_s"] = round(self.api_cpu_s - start.api_cpu_s, 1)
        if self.machine and start.machine:
            busy = (self.machine[0] - start.machine[0]) / max(1, self.machine[1] - start.machine[1])
            cpu["machine_busy"] = f"{busy:.0%} of {os.cpu_count()} cores"
        return cpu


async def drive(
    base: str,
    token: str,
    targets: Targets,
    args: argparse.Namespace,
    api_pid: int,
    *,
    collect: bool = True,
) -> tuple[dict[str, RouteStats], float, dict[str, Any]]:
    connector = aiohttp.TCPConnector(limit=args.clients, limit_per_host=args.clients)
    async with aiohttp.ClientSession(
        connector=connector,
        headers={"Authorization": f"Bearer {token}"},
        timeout=aiohttp.ClientTimeout(total=30),
    ) as http:
        if collect:
            await collect_cursors(http, base, targets)
        stats = {kind: RouteStats() for kind in MIX}
        usage = Usage.now(api_pid)
        started = time.perf_counter()
        deadline = started + args.seconds
        await asyncio.gather(
            *(
                client(
                    http, base, targets, stats, random.Random(args.random_seed * 1000 + i), deadline
                )
                for i in range(args.clients)
            )
        )
        elapsed = time.perf_counter() - started
        return stats, elapsed, Usage.now(api_pid).since(usage)


def _machine_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot, or None off Linux."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _process_cpu_s(pid: int) -> float | None:
    """CPU seconds of the process and its live children (`--processes N`: the keeper's)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    total = int(fields[11]) + int(fields[12])
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            child = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(child[1]) == pid:
            total += int(child[11]) + int(child[12])
    return total / os.sysconf("SC_CLK_TCK")


def _statement_recorder(engine: Engine) -> tuple[list[tuple[str, Any]], Callable[[], None]]:
    """Every statement the engine runs from now on, until the returned function is called."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    return seen, lambda: event.remove(engine, "before_cursor_execute", record)


def explain_routes(engine: Engine, targets: Targets, rng: random.Random) -> dict[str, Any]:
    """Run each route's service once in this process and EXPLAIN ANALYZE what it ran."""
    sessions = make_session_factory(engine)
    calls: dict[str, Callable[[], Any]] = {
        "batch": lambda: batch_service.get_batch(sessions, targets.batch_id),
        "servers first page": lambda: batch_service.list_batch_servers(
            sessions, targets.batch_id, state=None, limit=100, cursor=None
        ),
        "servers later page": lambda: batch_service.list_batch_servers(
            sessions, targets.batch_id, state=None, limit=100, cursor=rng.choice(targets.cursors)
        ),
        "servers state=failed": lambda: batch_service.list_batch_servers(
            sessions, targets.batch_id, state="failed", limit=100, cursor=None
        ),
        "server history": lambda: batch_service.server_history(
            sessions, rng.choice(targets.server_ids), limit=1000, cursor=None
        ),
    }
    report: dict[str, Any] = {}
    for kind, call in calls.items():
        seen, stop = _statement_recorder(engine)
        try:
            call()
        finally:
            stop()
        report[kind] = []
        with engine.connect() as connection:
            for statement, parameters in seen:
                plan = connection.exec_driver_sql(
                    "EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters
                ).scalar_one()[0]
                report[kind].append(
                    {
                        "sql": " ".join(statement.split()),
                        "execution_ms": round(plan["Execution Time"], 2),
                        "plan": _plan_outline(plan["Plan"]),
                    }
                )
    return report


def _plan_outline(node: dict[str, Any]) -> str:
    """`Limit > Index Scan pk_batch_servers (rows removed by filter: 135436)`, say."""
    label: str = node["Node Type"]
    if "Index Name" in node:
        label += f" {node['Index Name']}"
    elif "Relation Name" in node:
        label += f" on {node['Relation Name']}"
    if node.get("Rows Removed by Filter"):
        label += f" (rows removed by filter: {node['Rows Removed by Filter']})"
    children = [_plan_outline(child) for child in node.get("Plans", [])]
    return label + (" > " + " + ".join(children) if children else "")


def print_table(figures: dict[str, Any]) -> None:
    header = ("route", "requests", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms")
    rows = [
        (
            name,
            str(f["requests"]),
            str(f["errors"]),
            f"{f['req_per_s']:.1f}",
            *("-" if f[k] is None else f"{f[k]:.1f}" for k in ("p50_ms", "p95_ms", "p99_ms")),
        )
        for name, f in figures.items()
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for i, row in enumerate([header, *rows]):
        if i == len(rows):  # the overall line
            print("  ".join("-" * w for w in widths))
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells).rstrip())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.create:
        create_database(args.database_url)
    engine = create_engine(normalise_url(args.database_url))
    try:
        report: dict[str, Any] = {"clients": args.clients, "seconds": args.seconds}
        if not args.no_seed:
            report["seed"] = seed(engine, args.history_rows)
        if not args.seed_only:
            run_load(engine, args, report)
    finally:
        engine.dispose()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def seed(engine: Engine, history_rows: int) -> dict[str, Any]:
    shape = shape_for_history_rows(history_rows)
    print(f"seeding ~{history_rows:,} history rows ...", flush=True)
    seeded = seed_fleet(engine, shape)
    print(
        f"seeded {seeded.batches} batches, {seeded.batch_servers:,} servers, "
        f"{seeded.server_history:,} history rows in {seeded.seconds:.1f} s "
        f"(big batch {seeded.big_batch_id}: {shape.big_batch:,} servers)",
        flush=True,
    )
    return vars(seeded)


def run_load(engine: Engine, args: argparse.Namespace, report: dict[str, Any]) -> None:
    rng = random.Random(args.random_seed)
    targets = find_targets(engine)
    token = secrets.token_urlsafe(24)
    with api_server(args, token) as (base, pid):
        stats, elapsed, report["cpu"] = asyncio.run(drive(base, token, targets, args, pid))
    everything = RouteStats(
        [s for route in stats.values() for s in route.latencies_s],
        sum(route.errors for route in stats.values()),
    )
    figures = {kind: route.figures(elapsed) for kind, route in stats.items()}
    figures["overall"] = everything.figures(elapsed)
    report["routes"] = figures
    print(f"\n{args.clients} clients, {elapsed:.1f} s, big batch {targets.batch_id}\n")
    print_table(figures)
    print("\n" + ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in report["cpu"].items()))
    slow = [k for k, f in figures.items() if (f["p99_ms"] or math.inf) > TARGET_P99_MS]
    if slow:
        print(f"p99 above {TARGET_P99_MS:.0f} ms: {', '.join(slow)}")
    if args.bare:
        report["bare"] = run_bare(args, targets, token, figures["overall"])
    if args.explain:
        report["explain"] = explain_routes(engine, targets, rng)
        for kind, statements in report["explain"].items():
            for statement in statements:
                print(f"\n[{kind}] {statement['execution_ms']} ms  {statement['plan']}")
                print(f"    {statement['sql'][:300]}")


def run_bare(
    args: argparse.Namespace, targets: Targets, token: str, ours: dict[str, Any]
) -> dict[str, Any]:
    """The same clients against a bare aiohttp handler (one process): the yardstick."""
    port = _free_port()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bare_api", "--port", str(port)],
            cwd=REPO,
            stdout=log,
            stderr=log,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(f"{base}/healthz", process, log)
            stats, elapsed, _ = asyncio.run(
                drive(base, token, targets, args, process.pid, collect=False)
            )
        finally:
            process.terminate()
            process.wait(timeout=10)
    everything = RouteStats(
        [s for route in stats.values() for s in route.latencies_s],
        sum(route.errors for route in stats.values()),
    )
    bare = everything.figures(elapsed)
    per_process = ours["req_per_s"] / args.processes
    share = per_process / bare["req_per_s"] if bare["req_per_s"] else 0.0
    print(
        f"\nbare aiohttp handler, 1 process, same clients: {bare['req_per_s']:.0f} req/s, "
        f"p99 {bare['p99_ms']:.1f} ms"
    )
    print(
        f"ours: {ours['req_per_s']:.0f} req/s over {args.processes} process(es) = "
        f"{per_process:.0f} per process = {share:.0%} of the bare handler (target >= 40%); "
        f"p99 {ours['p99_ms']:.1f} ms (target < {TARGET_P99_MS:.0f} ms with --processes 2)"
    )
    print(f"reproduce: {reproduce_command(args)}")
    return {"figures": bare, "per_process_share": round(share, 3)}


def reproduce_command(args: argparse.Namespace) -> str:
    """This run's command line, on the data it seeded (the database's password hidden)."""
    return (
        f"python benchmarks/api_load.py --database-url {shareable_url(args.database_url)} "
        "--no-seed "
        f"--clients {args.clients} --seconds {args.seconds:g} --processes {args.processes}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
