"""`reimage bench`: the whole stack against a rate-limited simulator, measured against the
physical lower bound and against the peer (the official SDK in a thread pool).

Lower bound for N servers, burst B, rate R, in-flight cap C and job duration D: every server
needs at least two calls (its changeos and one job query that sees the end), so the batch
cannot end before max((2N - B) / R, N * D / C).

Both sides meet a realistic cloud by default: the simulator serves HTTPS (a CA of its own, which
our processes trust through ORCH_ECS_CA_BUNDLE and the peer through the SDK's
`HttpConfig.ssl_ca_cert`) and answers every call 30 ms late (`--latency-ms`), as a region across
a network would; `--no-tls --latency-ms 0` gives the old plain, instant simulator.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.procstats import TreeSampler
from orchestrator.devstack.stack import (
    Stack,
    StackError,
    free_port,
    http_json,
    private_redis,
    wait_http,
    wait_workers,
)

TERMINAL = {"succeeded", "partially_failed", "aborted", "cancelled"}
PROJECT = "0605767bd8b5d3f92f0ac0123456789a"
TOKEN = "bench-token"
PEER_SCRIPT = Path(__file__).resolve().parent / "sdk_peer.py"


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--servers", type=int, default=2000, help="N, servers in the batch")
    parser.add_argument("--rate", type=float, default=50.0, help="R, the cloud's calls/s")
    parser.add_argument("--burst", type=int, default=None, help="B, the cloud's burst (R)")
    parser.add_argument("--job-seconds", type=float, default=5.0, help="D, mean job duration")
    parser.add_argument("--spread", type=float, default=0.4, help="job durations D*(1+-spread)")
    parser.add_argument("--max-in-flight", type=int, default=None, help="C (default: N)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=4, help="pool size per worker")
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--peer", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--peer-threads", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="a ~10-second run for CI")
    parser.add_argument(
        "--tls",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the simulator serves HTTPS with a CA of its own, trusted by both sides (default)",
    )
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=30.0,
        help="network latency the simulator adds to every answer (default 30)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the logs and database")
    parser.add_argument(
        "--large",
        type=int,
        default=None,
        metavar="N",
        help="instead: POST one batch of N servers, run it for --large-seconds, report the POST "
        "time and peak memory, cancel",
    )
    parser.add_argument("--large-seconds", type=float, default=30.0)
    parser.add_argument(
        "--rate-discovery",
        action="store_true",
        help="instead: the same batch twice against a cloud limiting at --rate, once with "
        "ORCH_ECS_RATE set to it and once unset (the rate found from the cloud's answers); "
        "report both wall times and the 429s",
    )
    parser.add_argument(
        "--preflight",
        type=int,
        default=None,
        metavar="N",
        help="instead: a dry run of N servers (a mixed fleet: x86 and Kunpeng, small and large "
        "disks, locked and spot); report its cloud calls by kind and how long it took",
    )


@dataclass
class RunFigures:
    name: str
    wall_s: float
    calls: int
    throttled: int
    outcome: str
    post_s: float | None = None
    processes: dict[str, TreeSampler] = field(default_factory=dict)
    by_kind: dict[str, int] = field(default_factory=dict)
    connections: int = 0
    # Issue 17 part 3: seconds each server (or the batch) waited at each step, from our history.
    latencies: dict[str, list[float]] = field(default_factory=dict)


def lower_bound(n: int, burst: int, rate: float, in_flight: int, job_s: float) -> float:
    return max((2 * n - burst) / rate, n * job_s / in_flight)


@dataclass(frozen=True)
class Cloud:
    """Where a simulator is and how to trust it."""

    url: str
    ca_file: Path | None

    def context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else None

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(
            f"{self.url}/_sim/stats", timeout=120, context=self.context()
        ) as response:
            stats: dict[str, Any] = json.loads(response.read())
            return stats

    def wait(self, stack: Stack, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            stack.check_alive()
            try:
                with urllib.request.urlopen(
                    f"{self.url}/_sim/stats", timeout=2, context=self.context()
                ):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        raise StackError(f"{self.url} did not answer within {timeout_s:.0f} s")


def _network_args(args: argparse.Namespace, tls_dir: Path) -> list[str]:
    """The simulator's HTTPS and latency flags (`--tls`, `--latency-ms`)."""
    flags = ["--latency-ms", f"{args.latency_ms:g}"]
    if args.tls:
        flags += ["--tls-dir", str(tls_dir)]
    return flags


def _cloud(args: argparse.Namespace, port: int, tls_dir: Path) -> Cloud:
    scheme = "https" if args.tls else "http"
    return Cloud(f"{scheme}://127.0.0.1:{port}", tls_dir / "ca.pem" if args.tls else None)


def _simulator_args(args: argparse.Namespace, port: int, ak: str, sk: str) -> list[str]:
    return [
        *("simulate", "--port", str(port), "--ak", ak, "--sk", sk, "--project-id", PROJECT),
        *("--job-seconds", str(args.job_seconds), "--job-seconds-spread", str(args.spread)),
        *("--seed", str(args.seed), "--rate-limit", str(args.rate), "--burst", str(args.burst)),
        # The project holds exactly the servers to reimage, as a real fleet's project would.
        *("--inventory-size", str(args.servers), "--inventory-tags", "bench=1"),
    ]


def _inventory(cloud: Cloud, ak: str, sk: str) -> tuple[list[str], dict[str, Any]]:
    """The simulated project's server ids, read through the list API, and the simulator's
    counters right after (the figures count only what comes next)."""
    import asyncio

    from orchestrator.cloud.client import Credentials, EcsClient
    from orchestrator.cloud.errors import Retryable
    from orchestrator.cloud.http_session import HttpSessions

    async def list_ids() -> list[str]:
        sessions = HttpSessions(str(cloud.ca_file) if cloud.ca_file else None)
        async with sessions.cloud() as http:
            client = EcsClient(
                http,
                endpoint=cloud.url,
                project_id=PROJECT,
                region="cn-north-4",
                credentials=Credentials(access_key=ak, secret_key=sk),
            )
            while True:
                try:
                    return [s.id async for s in client.list_servers({"tags": "bench=1"})]
                except Retryable:  # the simulator's own rate limit: try again
                    await asyncio.sleep(1)

    ids = asyncio.run(list_ids())
    return ids, cloud.stats()


def _since(stats: dict[str, Any], baseline: dict[str, Any]) -> dict[str, int]:
    before: dict[str, int] = baseline["requests"]
    return {kind: int(n) - before.get(kind, 0) for kind, n in stats["requests"].items()}


def _connections(stats: dict[str, Any], baseline: dict[str, Any]) -> int:
    """Connections (over HTTPS: TLS handshakes) the simulator accepted since `baseline`."""
    return int(stats.get("connections", 0)) - int(baseline.get("connections", 0))


@dataclass
class Launched:
    """Our stack, up and answering."""

    api: str
    sim: Cloud
    ak: str
    sk: str
    samplers: dict[str, TreeSampler]


def _launch(
    args: argparse.Namespace,
    stack: Stack,
    *,
    rate: float | None,
    burst: int,
    simulator: Callable[[int, str, str], list[str]],
) -> Launched:
    """Redis, a migrated database, the simulator, the API, the beat and the workers."""
    directory = stack.directory
    ak, sk = "BENCH" + secrets.token_hex(6).upper(), secrets.token_hex(20)
    sim_port, api_port = free_port(), free_port()
    tls_dir = directory / "sim-tls"
    cloud = _cloud(args, sim_port, tls_dir)
    env = {
        **os.environ,
        "ORCH_DATABASE_URL": args.database_url or f"sqlite:///{directory / 'bench.db'}",
        "ORCH_REDIS_URL": private_redis(stack),
        "ORCH_ECS_ENDPOINT": cloud.url,
        # The simulator serves IMS and EVS beside ECS, on the same port.
        "ORCH_IMS_ENDPOINT": cloud.url,
        "ORCH_EVS_ENDPOINT": cloud.url,
        "ORCH_ECS_CA_BUNDLE": str(cloud.ca_file) if cloud.ca_file else "",
        "HUAWEICLOUD_SDK_AK": ak,
        "HUAWEICLOUD_SDK_SK": sk,
        "ORCH_API_TOKEN": TOKEN,
        "ORCH_TICK_SECONDS": "0.5",
        # None: unset (an empty variable counts as unset), the rate found from the answers.
        "ORCH_ECS_RATE": "" if rate is None else str(rate),
        "ORCH_ECS_BURST": str(burst),
        "NO_PROXY": "127.0.0.1,localhost",
    }
    loglevel = "INFO" if args.keep else "WARNING"
    sim_args = [*simulator(sim_port, ak, sk), *_network_args(args, tls_dir)]
    roles = {"simulator": stack.start("simulator", sim_args, env)}
    cloud.wait(stack)  # its CA file exists now: every command checks it at start
    migrate = subprocess.run(
        [sys.executable, "-m", "orchestrator", "migrate"], env=env, capture_output=True, text=True
    )
    if migrate.returncode != 0:
        raise StackError("migration failed: " + migrate.stderr.strip()[-300:])
    roles["api"] = stack.start("api", ["api", "--port", str(api_port)], env)
    roles["beat"] = stack.start("beat", ["beat", "--loglevel", "WARNING"], env)
    for i in range(args.workers):
        roles[f"worker{i + 1}"] = stack.start(
            f"worker{i + 1}",
            ["worker", "--concurrency", str(args.concurrency), "--loglevel", loglevel],
            env,
        )
    if "redis" in stack.processes:
        roles["redis"] = stack.processes["redis"]
    launched = Launched(
        api=f"http://127.0.0.1:{api_port}",
        sim=cloud,
        ak=ak,
        sk=sk,
        samplers={name: TreeSampler(p.pid) for name, p in roles.items()},
    )
    wait_http(f"{launched.api}/healthz", stack)
    # The clock starts with the fleet up (as for the peer, whose threads start at once): a
    # worker still importing would be counted as batch time.
    wait_workers(env["ORCH_REDIS_URL"], 2 * args.workers, stack)
    return launched


def _ended_at(batch: dict[str, Any], started_wall: float) -> float | None:
    """Seconds from `started_wall` (Unix time) to the batch's `finished_at`, if it has one."""
    finished = batch.get("finished_at")
    if not finished:
        return None
    return datetime.fromisoformat(finished.replace("Z", "+00:00")).timestamp() - started_wall


def _latencies(database_url: str, batch_id: str) -> dict[str, list[float]]:
    """The waits between the steps of the batch, read from its history (seconds): from the
    POST to the first changeos, from each claim to its send, from each job's end (the cloud's
    own `end_time`) to the server's end, from the last server's end to the batch's."""
    from sqlalchemy import create_engine, func, select
    from sqlalchemy.orm import Session

    from orchestrator.db.models import Batch, BatchServer, ServerHistory

    engine = create_engine(database_url)
    try:
        with Session(engine) as session:
            batch = session.get_one(Batch, batch_id)
            rows = session.execute(
                select(
                    ServerHistory.batch_server_id,
                    ServerHistory.reason,
                    ServerHistory.at,
                    ServerHistory.details,
                )
                .where(ServerHistory.batch_id == batch_id)
                .order_by(ServerHistory.id)
            ).all()
            last_end = session.scalar(
                select(func.max(BatchServer.finished_at)).where(BatchServer.batch_id == batch_id)
            )
    finally:
        engine.dispose()
    claimed: dict[int, datetime] = {}
    sent: dict[int, datetime] = {}
    job_end_seen: list[float] = []
    for server, reason, at, details in rows:
        if reason == "slot_claimed":
            claimed.setdefault(server, at)
        elif reason == "changeos_sent":
            sent.setdefault(server, at)
        elif reason in ("job_succeeded", "job_failed"):
            ended = ((details or {}).get("job") or {}).get("end_time")
            if ended:
                cloud_end = datetime.fromisoformat(ended.replace("Z", "+00:00"))
                job_end_seen.append((at - cloud_end).total_seconds())
    figures = {
        "POST -> first changeos": [(min(sent.values()) - batch.created_at).total_seconds()]
        if sent
        else [],
        "claim -> changeos sent": [
            (at - claimed[server]).total_seconds()
            for server, at in sent.items()
            if server in claimed
        ],
        "job end -> server ended": job_end_seen,
    }
    if batch.finished_at is not None and last_end is not None:
        figures["last server -> batch ended"] = [(batch.finished_at - last_end).total_seconds()]
    return figures


def _latency_table(run: RunFigures) -> Table:
    table = Table(title=f"{run.name}: waits between steps, s (issue 17 part 3)")
    for column in ("step", "n", "median", "p90", "max"):
        table.add_column(column)
    for step, values in run.latencies.items():
        if not values:
            continue
        ordered = sorted(values)
        table.add_row(
            step,
            str(len(ordered)),
            f"{ordered[len(ordered) // 2]:.2f}",
            f"{ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]:.2f}",
            f"{ordered[-1]:.2f}",
        )
    return table


def run_ours(
    args: argparse.Namespace, directory: Path, console: Console, *, configured: bool = True
) -> RunFigures:
    """Our whole stack on one batch; `configured` False leaves ORCH_ECS_RATE unset."""
    stack = Stack(directory)
    try:
        up = _launch(
            args,
            stack,
            rate=args.rate if configured else None,
            burst=args.burst,
            simulator=lambda port, ak, sk: _simulator_args(args, port, ak, sk),
        )
        samplers, api, token = up.samplers, up.api, TOKEN
        servers, baseline = _inventory(up.sim, up.ak, up.sk)
        body = {
            "project_id": PROJECT,
            "region": "cn-north-4",
            "servers": servers,
            "os_change": {
                "imageid": str(uuid.uuid4()),
                "keyname": "KeyPair-bench",
                "mode": "withStopServer",
            },
            "policy": {
                "max_in_flight": args.max_in_flight,
                "poll_interval_s": max(1.0, args.job_seconds / 2),
                "job_timeout_s": 3600,
            },
        }
        for sampler in samplers.values():
            sampler.mark()  # CPU per server counts the batch, not the processes' start-up
        started = time.monotonic()
        started_wall = time.time()
        batch = http_json("POST", f"{api}/api/v1/batches", token, body)
        post_s = time.monotonic() - started
        console.print(f"ours: batch of {args.servers} accepted in {post_s:.2f} s")
        while batch["state"] not in TERMINAL:
            time.sleep(0.5)
            for sampler in samplers.values():
                sampler.sample()
            stack.check_alive()
            batch = http_json("GET", f"{api}/api/v1/batches/{batch['id']}", token)
        # Until the batch ended by its own record, not until this loop saw it (up to half a
        # second later): the peer's wall ends when its last server does, too.
        wall = _ended_at(batch, started_wall) or time.monotonic() - started
        for sampler in samplers.values():
            sampler.sample()
        stats = up.sim.stats()
        counts = ", ".join(f"{k} {v}" for k, v in batch["counts"].items() if v)
        return RunFigures(
            "reimage",
            wall,
            sum(_since(stats, baseline).values()),
            _since(stats, baseline)["rejected_429"],
            f"{batch['state']}: {counts}",
            post_s,
            samplers,
            _since(stats, baseline),
            _connections(stats, baseline),
            _latencies(args.database_url or f"sqlite:///{directory / 'bench.db'}", batch["id"]),
        )
    finally:
        stack.stop()


def run_peer(args: argparse.Namespace, directory: Path, console: Console) -> RunFigures:
    stack = Stack(directory)
    try:
        ak, sk, sim_port = "PEER" + secrets.token_hex(6).upper(), secrets.token_hex(20), free_port()
        tls_dir = directory / "peer-sim-tls"
        cloud = _cloud(args, sim_port, tls_dir)
        simulator = stack.start(
            "peer-simulator",
            [*_simulator_args(args, sim_port, ak, sk), *_network_args(args, tls_dir)],
            dict(os.environ),
        )
        cloud.wait(stack)
        servers_file = directory / "peer-servers.txt"
        peer_servers, baseline = _inventory(cloud, ak, sk)
        servers_file.write_text("\n".join(peer_servers))
        simulator_sampler = TreeSampler(simulator.pid)
        simulator_sampler.mark()
        env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "HOME": str(directory)}
        peer = subprocess.Popen(
            [
                sys.executable,
                str(PEER_SCRIPT),
                "--endpoint",
                cloud.url,
                *(("--ca-file", str(cloud.ca_file)) if cloud.ca_file else ()),
                "--ak",
                ak,
                "--sk",
                sk,
                "--project-id",
                PROJECT,
                "--image",
                str(uuid.uuid4()),
                "--servers-file",
                str(servers_file),
                "--threads",
                str(args.peer_threads),
                "--poll-s",
                str(args.job_seconds / 10),
            ],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        sampler = TreeSampler(peer.pid)
        console.print(
            f"peer: {args.peer_threads} SDK threads, polls every {args.job_seconds / 10:.2f} s"
        )
        while peer.poll() is None:
            sampler.sample()
            simulator_sampler.sample()
            time.sleep(0.5)
        simulator_sampler.sample()
        output = peer.stdout.read() if peer.stdout else ""
        result = json.loads(output.strip().splitlines()[-1])
        stats = cloud.stats()
        outcome = (
            f"succeeded {result['succeeded']}, failed {result['failed']}, errors {result['errors']}"
        )
        return RunFigures(
            "sdk thread pool (peer)",
            result["wall_s"],
            sum(_since(stats, baseline).values()),
            _since(stats, baseline)["rejected_429"],
            outcome,
            None,
            {"peer": sampler, "simulator": simulator_sampler},
            _since(stats, baseline),
            _connections(stats, baseline),
        )
    finally:
        stack.stop()


def _table(args: argparse.Namespace, runs: list[RunFigures], bound: float) -> Table:
    table = Table(
        title=f"N={args.servers} R={args.rate:g}/s B={args.burst} D={args.job_seconds:g}s"
        f" +-{args.spread:.0%} C={args.max_in_flight} workers={args.workers}"
    )
    for column in (
        "run",
        "wall s",
        "lower bound s",
        "wall/bound",
        "calls/server",
        "429s",
        "429 share",
        "POST s",
        "outcome",
    ):
        table.add_column(column)
    for run in runs:
        table.add_row(
            run.name,
            f"{run.wall_s:.1f}",
            f"{bound:.1f}",
            f"{run.wall_s / bound:.2f}",
            f"{run.calls / args.servers:.2f}",
            str(run.throttled),
            f"{run.throttled / max(1, run.calls):.2%}",
            "-" if run.post_s is None else f"{run.post_s:.2f}",
            run.outcome,
        )
    return table


# Our processes (the simulator and Redis stand for the cloud and the broker, not for us).
OURS = ("api", "beat", "worker")


def _ours_cpu_s(run: RunFigures) -> float:
    return sum(s.cpu_since_mark for n, s in run.processes.items() if n.startswith(OURS))


def _processes_table(args: argparse.Namespace, runs: list[RunFigures]) -> Table:
    table = Table(
        title="processes: CPU during the batch (start-up excluded), per server, and in all "
        "(start-up included); peak RSS of the largest process"
    )
    for column in ("run", "process", "CPU s (batch)", "CPU ms / server", "CPU s (all)", "RSS MB"):
        table.add_column(column)
    for run in runs:
        for name, sampler in run.processes.items():
            table.add_row(
                run.name,
                name,
                f"{sampler.cpu_since_mark:.2f}",
                f"{1000 * sampler.cpu_since_mark / args.servers:.2f}",
                f"{sampler.cpu_seconds:.1f}",
                f"{sampler.peak_rss_mb:.0f}",
            )
        if run.name == "reimage":
            ours = _ours_cpu_s(run)
            table.add_row(
                run.name,
                "ours (api + beat + workers)",
                f"{ours:.2f}",
                f"{1000 * ours / args.servers:.2f}",
                "",
                "",
            )
    return table


def _targets_table(args: argparse.Namespace, runs: list[RunFigures], bound: float) -> Table:
    """Issue 17's targets that this run measures, each with its figure."""
    table = Table(title="targets (issue 17)")
    for column in ("target", "measured", "met"):
        table.add_column(column)
    ours = runs[0]

    def row(target: str, value: float, limit: float, unit: str = "") -> None:
        table.add_row(target, f"{value:.2f}{unit}", "yes" if value <= limit else "NO")

    row("our CPU per server <= 5 ms", 1000 * _ours_cpu_s(ours) / args.servers, 5.0, " ms")
    if args.smoke:
        row("wall <= 2.5 x bound", ours.wall_s / bound, 2.5, " x")
        if len(runs) == 2:
            row("wall <= the peer's", ours.wall_s / runs[1].wall_s, 1.0, " x")
    else:
        row("wall <= 1.10 x bound", ours.wall_s / bound, 1.10, " x")
        if len(runs) == 2:
            row("wall <= 0.3 x the peer's", ours.wall_s / runs[1].wall_s, 0.3, " x")
        row("calls per server <= 2.1", ours.calls / args.servers, 2.1)
    network = f"{'https' if args.tls else 'http'}, {args.latency_ms:g} ms latency"
    table.caption = f"over {network}; reproduce: reimage bench{' --smoke' if args.smoke else ''}"
    return table


def run_large(args: argparse.Namespace, directory: Path, console: Console) -> int:
    """A very large batch through the real API: how long the POST takes, and how much memory
    the API and the workers need while it runs."""
    stack = Stack(directory)
    try:
        up = _launch(
            args,
            stack,
            rate=2000,
            burst=2000,
            simulator=lambda port, ak, sk: [
                "simulate",
                "--port",
                str(port),
                "--ak",
                ak,
                "--sk",
                sk,
                "--project-id",
                PROJECT,
                "--job-seconds",
                str(args.job_seconds),
                # A project that holds the batch's servers: pre-flight reads them in sweeps.
                *("--inventory-size", str(args.large), "--inventory-tags", "bench=1"),
            ],
        )
        samplers, api, token = up.samplers, up.api, TOKEN
        servers, _ = _inventory(up.sim, up.ak, up.sk)
        body = {
            "project_id": PROJECT,
            "region": "cn-north-4",
            "servers": servers,
            "os_change": {
                "imageid": str(uuid.uuid4()),
                "keyname": "KeyPair-bench",
                "mode": "withStopServer",
            },
            "policy": {"max_in_flight": 1000, "poll_interval_s": 2, "skip_matching": False},
        }
        started = time.monotonic()
        batch = http_json("POST", f"{api}/api/v1/batches", token, body)
        post_s = time.monotonic() - started
        until = time.monotonic() + args.large_seconds
        while time.monotonic() < until:
            for sampler in samplers.values():
                sampler.sample()
            stack.check_alive()
            time.sleep(0.5)
        batch = http_json("GET", f"{api}/api/v1/batches/{batch['id']}", token)
        http_json("POST", f"{api}/api/v1/batches/{batch['id']}/cancel", token, {})
        table = Table(title=f"one batch of {args.large} servers, {args.large_seconds:g} s of work")
        for column in ("figure", "value"):
            table.add_column(column)
        table.add_row("POST /api/v1/batches answered in", f"{post_s:.2f} s")
        counts = ", ".join(f"{k} {v}" for k, v in batch["counts"].items() if v)
        table.add_row("state after the run", f"{batch['state']}: {counts}")
        for name, sampler in samplers.items():
            table.add_row(
                f"{name}: peak RSS / CPU",
                f"{sampler.peak_rss_mb:.0f} MB / {sampler.cpu_seconds:.1f} s",
            )
        console.print(table)
        return 0
    finally:
        stack.stop()


def run_rate_discovery(args: argparse.Namespace, directory: Path, console: Console) -> int:
    """Issue 17 part 6: the cloud limits at --rate; ORCH_ECS_RATE set to it, then unset."""
    runs = []
    for configured in (True, False):
        place = directory / ("configured" if configured else "found")
        place.mkdir()
        runs.append(run_ours(args, place, console, configured=configured))
    told, found = runs
    ratio = told.wall_s / found.wall_s
    share = found.throttled / max(1, found.calls)
    table = Table(
        title=f"rate discovery: {args.servers} servers, the cloud limiting at {args.rate:g}/s"
    )
    for column in ("ORCH_ECS_RATE", "wall s", "cloud calls", "429s", "429 share", "outcome"):
        table.add_column(column)
    for name, run in ((f"{args.rate:g}", told), ("unset", found)):
        table.add_row(
            name,
            f"{run.wall_s:.1f}",
            str(run.calls),
            str(run.throttled),
            f"{run.throttled / max(1, run.calls):.2%}",
            run.outcome,
        )
    console.print(table)
    console.print(
        f"target: configured / unconfigured wall time >= 0.85: {ratio:.2f} "
        f"({'met' if ratio >= 0.85 else 'missed'}); 429 share < 2%: {share:.2%} "
        f"({'met' if share < 0.02 else 'missed'})"
    )
    console.print(
        f"reproduce: reimage bench --rate-discovery --servers {args.servers} --rate {args.rate:g}"
    )
    return 0


def _mixed_fleet(n: int) -> dict[str, Any]:
    """An inventory of n servers in the proportions of a real mixed fleet: most compatible,
    a fifth Kunpeng, some on small yearly/monthly disks, a few locked or spot."""
    kinds: list[dict[str, Any]] = [
        {"system_disk_size": 100},
        {"system_disk_size": 100},
        {"system_disk_size": 100},
        {"flavor_id": "kc1.large.2", "system_disk_size": 100},
        {"system_disk_size": 40, "charging_mode": "1"},
    ]
    servers = []
    for number in range(n):
        entry = {"id": str(uuid.UUID(int=(1 << 96) | number)), **kinds[number % len(kinds)]}
        if number % 97 == 0:
            entry["locked"] = True
        elif number % 89 == 0:
            entry["charging_mode"] = "2"
        servers.append(entry)
    return {"servers": servers}


def run_preflight(args: argparse.Namespace, directory: Path, console: Console) -> int:
    """A dry run of a large mixed fleet through the real API: what pre-flight costs."""
    x86, arm = str(uuid.uuid4()), str(uuid.uuid4())
    images = directory / "images.json"
    images.write_text(
        json.dumps(
            {
                "images": [
                    {"id": x86, "min_disk": 50},
                    {"id": arm, "min_disk": 50, "architecture": "arm"},
                ]
            }
        )
    )
    inventory = directory / "inventory.json"
    fleet = _mixed_fleet(args.preflight)
    inventory.write_text(json.dumps(fleet))
    stack = Stack(directory)
    try:
        up = _launch(
            args,
            stack,
            rate=args.rate,
            burst=args.burst,
            simulator=lambda port, ak, sk: [
                *("simulate", "--port", str(port), "--ak", ak, "--sk", sk),
                *("--project-id", PROJECT, "--rate-limit", str(args.rate)),
                *("--burst", str(args.burst), "--images-file", str(images)),
                *("--inventory", str(inventory), "--strict-inventory"),
            ],
        )
        before = up.sim.stats()["requests"]
        body = {
            "project_id": PROJECT,
            "region": "cn-north-4",
            "servers": [entry["id"] for entry in fleet["servers"]],
            "os_change": {
                "images": {"x86_64": x86, "aarch64": arm},
                "keyname": "KeyPair-bench",
                "mode": "withStopServer",
            },
        }
        started = time.monotonic()
        report = http_json("POST", f"{up.api}/api/v1/batches?dry_run=true", TOKEN, body)
        took = time.monotonic() - started
        after = up.sim.stats()["requests"]
        spent = {kind: after[kind] - before.get(kind, 0) for kind in after}
        table = Table(title=f"pre-flight (dry run) of {args.preflight} servers")
        for column in ("figure", "value"):
            table.add_column(column)
        table.add_row("answered in", f"{took:.2f} s (cloud rate {args.rate:g}/s)")
        table.add_row("cloud calls (simulator)", str(sum(spent.values())))
        table.add_row("by kind", ", ".join(f"{k} {v}" for k, v in spent.items() if v))
        table.add_row("verdicts", ", ".join(f"{k} {v}" for k, v in report["verdicts"].items()))
        table.add_row("codes", ", ".join(f"{k} {v}" for k, v in report["codes"].items()))
        console.print(table)
        return 0
    finally:
        stack.stop()


def run_bench(args: argparse.Namespace) -> int:
    if args.smoke:
        args.servers, args.job_seconds, args.rate = min(args.servers, 60), 1.0, 100.0
        args.peer_threads = min(args.peer_threads, 20)
    args.burst = args.burst or int(args.rate)
    args.max_in_flight = args.max_in_flight or args.servers
    console = Console(width=150)
    directory = Path(tempfile.mkdtemp(prefix="reimage-bench-"))
    if args.large or args.preflight or args.rate_discovery:
        try:
            only = (
                run_large if args.large else run_preflight if args.preflight else run_rate_discovery
            )
            return only(args, directory, console)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    runs = [run_ours(args, directory, console)]
    if args.peer:
        runs.append(run_peer(args, directory, console))
    bound = lower_bound(args.servers, args.burst, args.rate, args.max_in_flight, args.job_seconds)
    console.print(_table(args, runs, bound))
    console.print(_processes_table(args, runs))
    for run in runs:
        kinds = ", ".join(
            f"{kind} {count / args.servers:.2f}" for kind, count in run.by_kind.items() if count
        )
        console.print(f"{run.name}: calls per server by kind: {kinds}")
        console.print(
            f"{run.name}: connections accepted by the simulator"
            f"{' (TLS handshakes)' if args.tls else ''}: {run.connections}"
            f" ({run.connections / args.servers:.3f} per server)"
        )
    if runs[0].latencies:
        console.print(_latency_table(runs[0]))
    if len(runs) == 2:
        console.print(f"ours / peer wall time: {runs[0].wall_s / runs[1].wall_s:.2f}")
    console.print(_targets_table(args, runs, bound))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "bound_s": bound,
                    "runs": [
                        {
                            "name": r.name,
                            "wall_s": r.wall_s,
                            "calls": r.calls,
                            "throttled": r.throttled,
                            "post_s": r.post_s,
                            "outcome": r.outcome,
                            "connections": r.connections,
                            "processes": {
                                n: {
                                    "cpu_s": s.cpu_seconds,
                                    "cpu_s_during_batch": s.cpu_since_mark,
                                    "cpu_ms_per_server": 1000 * s.cpu_since_mark / args.servers,
                                    "peak_rss_mb": s.peak_rss_mb,
                                }
                                for n, s in r.processes.items()
                            },
                        }
                        for r in runs
                    ],
                },
                indent=2,
            )
        )
    if args.keep:
        console.print(f"logs and database kept in {directory}")
    else:
        shutil.rmtree(directory, ignore_errors=True)
    return 0
