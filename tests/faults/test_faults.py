"""Fault tests (issue 4): a full stack of real processes meets a misbehaving cloud and crashes.

Every test runs three seeds at once: three simulators (seeds 1, 2, 3), one per region, and one
batch of 300 servers per region, on the test's own Redis and PostgreSQL (so both can be killed).
At the end, for every seed: every server is terminal, in the state its cloud job says
(SUCCESS -> succeeded, FAIL -> failed), no changeos was sent twice, no server is missing from its
batch and each one has its whole history (None -> pending first, its final state last, every
row starting where the one before it ended). A server the cloud never saw a job for must be
`cancelled` (the bad-credentials scenario ends that way).

Each test prints one `[faults] ...` line (run with -s). Logs of a failed test are kept in
/tmp/reimage-faults-*/ and named in the failure; REIMAGE_FAULTS_KEEP=1 keeps them always, and
REIMAGE_FAULTS_TRACE=1 prints every batch's state counts every 5 s while it runs.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.faults.services import OwnPostgres, OwnRedis
from tests.integration.stack import ProcessStack, free_port

TOKEN = "faults-token-abcdefghijklmnop"
AK, SK = "FAULTSACCESSKEY00001", "faults-secret-key-000000000000000000000001"
WRONG_SK = "faults-secret-key-999999999999999999999999"
PROJECT = "0605767bd8b5d3f92f0ac0123456789a"
IMAGE = "e215580f-73ad-429d-b6f2-5433947433b0"
# One simulator (one seed) per region; the three batches run at once.
SEEDS = {"cn-north-4": 1, "cn-north-9": 2, "ap-southeast-1": 3}
SERVERS_PER_BATCH = 300
WORKERS = ("worker-1", "worker-2")
TERMINAL_BATCH = {"succeeded", "partially_failed", "aborted", "cancelled"}
FINISHED_BATCH = frozenset({"succeeded", "partially_failed"})
TERMINAL_SERVER = {"succeeded", "failed", "cancelled", "skipped"}
TRUTH_TO_STATE = {"SUCCESS": "succeeded", "FAIL": "failed"}
# Scenarios end in 10-80 s on this 2-core machine; a batch still open after this long is stuck,
# not slow. (SIGKILLs every 3 s once took 120-220 s: each restart costs ~3 s of CPU importing,
# so kills that did not wait for the last victim to be up starved both cores; see WorkerKiller.
# REIMAGE_FAULTS_TRACE=1 prints the state counts every 5 s and shows such plateaus.)
BATCH_DEADLINE_S = 300.0
# pytest's own timeout (300 s in pyproject) must fire after a scenario's deadline, never before:
# the stuck report (what every unfinished server shows) is what tells a failed CI run's story.
pytestmark = [pytest.mark.faults, pytest.mark.timeout(BATCH_DEADLINE_S + 150)]
CHAOS_FLAGS = (
    "--transient-error-ratio",
    "0.1",
    "--drop-ratio",
    "0.05",
    # Answers to changes whose job will FAIL are dropped much more often: the server then ends
    # in ERROR on its old image, the case a blind resend would change a second time.
    "--drop-failing-ratio",
    "0.5",
    "--rate-limit",
    "40",
    "--burst",
    "20",
)
BUSY_PER_BATCH = 20
DROP_FLAGS = ("--drop-ratio", "0.05", "--drop-failing-ratio", "0.5")
# The Redis lock the tick task holds while it runs (workers/tasks.py).
TICK_LOCK = "reimage:tick-lock"

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call(method: str, url: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    """One HTTP request: (status, JSON or text), or (0, what went wrong) when no answer came."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {TOKEN}")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return response.status, _decode(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _decode(exc.read())
    except (urllib.error.URLError, OSError) as exc:  # refused, reset, TimeoutError
        return 0, f"{type(exc).__name__}: {exc}"


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError:
        return raw.decode(errors="replace")[:300]


def new_servers(scenario: str, region: str, n: int = SERVERS_PER_BATCH) -> list[str]:
    """Server ids derived from the scenario and the seed, so a run can be repeated: the
    simulator decides failures and faults from its seed and the server id."""
    rng = random.Random(f"{scenario}:{SEEDS[region]}")
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)]


@dataclass
class Submitted:
    region: str
    batch_id: str
    servers: list[str]


@dataclass
class Fleet:
    """Redis, PostgreSQL, one simulator per region, the API, two workers and one beat."""

    directory: Path
    regions: tuple[str, ...]
    sim_flags: tuple[str, ...] = ()
    worker_env: dict[str, str] = field(default_factory=dict)
    # Settings every process gets on top of the defaults below (lease, rate budget...).
    env_overrides: dict[str, str] = field(default_factory=dict)
    workers: tuple[str, ...] = WORKERS
    worker_concurrency: int = 3
    sims: dict[str, str] = field(default_factory=dict)
    api: str = ""
    redis: OwnRedis | None = None
    postgres: OwnPostgres | None = None
    processes: ProcessStack | None = None
    submitted: list[Submitted] = field(default_factory=list)

    # --- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        self.redis = OwnRedis(self.directory)
        self.redis.start()
        self.postgres = OwnPostgres()
        self.postgres.init()
        sim_ports = {region: free_port() for region in self.regions}
        api_port = free_port()
        self.sims = {region: f"http://127.0.0.1:{port}" for region, port in sim_ports.items()}
        self.api = f"http://127.0.0.1:{api_port}"
        env = {
            "PATH": "/usr/bin:/bin:/usr/local/bin",
            "HOME": str(self.directory),
            "ORCH_DATABASE_URL": self.postgres.url,
            "ORCH_REDIS_URL": self.redis.url,
            "ORCH_ECS_ENDPOINT": "http://127.0.0.1:9/{region}",  # every region is mapped below
            "ORCH_ECS_ENDPOINTS": json.dumps(self.sims),
            "ORCH_IMS_ENDPOINT": "http://127.0.0.1:9/{region}",
            "ORCH_IMS_ENDPOINTS": json.dumps(self.sims),
            "ORCH_EVS_ENDPOINT": "http://127.0.0.1:9/{region}",
            "ORCH_EVS_ENDPOINTS": json.dumps(self.sims),
            "HUAWEICLOUD_SDK_AK": AK,
            "HUAWEICLOUD_SDK_SK": SK,
            "ORCH_API_TOKEN": TOKEN,
            "ORCH_TICK_SECONDS": "0.5",
            "ORCH_ECS_RATE": "60",
            "ORCH_ECS_BURST": "30",
            "ORCH_ECS_CONNECT_TIMEOUT": "1",
            "ORCH_ECS_READ_TIMEOUT": "3",
            "ORCH_RECONCILE_GRACE_S": "2",
            "ORCH_TASK_LEASE_S": "5",
            "NO_PROXY": "127.0.0.1,localhost",
            **self.env_overrides,
        }
        migrated = subprocess.run(
            [sys.executable, "-m", "orchestrator", "migrate"],
            env=env,
            capture_output=True,
            timeout=120,
        )
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        self.processes = ProcessStack(self.directory, env)
        for region, port in sim_ports.items():
            self.processes.start(
                f"sim-{region}",
                "simulate",
                "--port",
                str(port),
                "--ak",
                AK,
                "--sk",
                SK,
                "--project-id",
                PROJECT,
                "--job-seconds",
                "2",
                "--job-seconds-spread",
                "0.5",
                "--fail-ratio",
                "0.05",
                "--seed",
                str(SEEDS[region]),
                *self.sim_flags,
            )
        self.processes.start("api", "api", "--port", str(api_port))
        for name in self.workers:
            self.start_worker(name)
        self.start_beat()
        self._wait_http([*(u + "/_sim/stats" for u in self.sims.values()), self.api + "/readyz"])

    def stop(self) -> None:
        if self.processes is not None:
            self.processes.stop_all()
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.destroy()

    def start_worker(self, name: str) -> None:
        assert self.processes is not None
        self.processes.start(
            name,
            "worker",
            "--concurrency",
            str(self.worker_concurrency),
            "--loglevel",
            "INFO",
            extra_env=self.worker_env,
        )

    def start_beat(self) -> None:
        assert self.processes is not None
        self.processes.start("beat", "beat", "--loglevel", "WARNING")

    def restart(self, name: str) -> None:
        """SIGKILL the process (its whole group: Celery's pool children too), start it again."""
        assert self.processes is not None
        self.processes.kill(name, signal.SIGKILL)
        if name in self.workers:
            self.start_worker(name)
        else:
            self.start_beat()

    def _wait_http(self, urls: list[str], timeout_s: float = 60) -> None:
        assert self.processes is not None
        deadline = time.monotonic() + timeout_s
        for url in urls:
            while call("GET", url, timeout=2)[0] != 200:
                self.processes.assert_alive()
                assert time.monotonic() < deadline, f"{url} did not answer 200"
                time.sleep(0.2)

    # --- the API and the simulators -----------------------------------------------------

    def submit(self, region: str, servers: list[str], **policy: Any) -> Submitted:
        body = {
            "project_id": PROJECT,
            "region": region,
            "servers": servers,
            "os_change": {"imageid": IMAGE, "keyname": "KeyPair-faults", "mode": "withStopServer"},
            "policy": {
                "max_in_flight": 100,
                "poll_interval_s": 1,
                "job_timeout_s": 120,
                **policy,
            },
        }
        status, batch = call("POST", f"{self.api}/api/v1/batches", body, timeout=30)
        assert status == 202, batch
        self.submitted.append(Submitted(region, batch["id"], servers))
        return self.submitted[-1]

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        status, view = call("GET", f"{self.api}/api/v1/batches/{batch_id}")
        return view if status == 200 else None

    def servers(self, batch_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = ""
        while True:
            url = f"{self.api}/api/v1/batches/{batch_id}/servers?limit=1000{cursor}"
            status, page = call("GET", url, timeout=30)
            assert status == 200, page
            items += page["items"]
            if not page["next_cursor"]:
                return items
            cursor = f"&cursor={page['next_cursor']}"

    def history(self, server_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = ""
        while True:
            url = f"{self.api}/api/v1/servers/{server_id}/history?limit=1000{cursor}"
            status, page = call("GET", url, timeout=30)
            assert status == 200, page
            items += page["items"]
            if not page["next_cursor"]:
                return items
            cursor = f"&cursor={page['next_cursor']}"

    def changeos_calls(self, region: str, since: float = 0.0) -> list[dict[str, Any]]:
        """Every changeos the region's simulator received since Unix time `since`."""
        status, body = call("GET", f"{self.sims[region]}/_sim/changeos?since={since}", timeout=30)
        assert status == 200, body
        return body["calls"]  # type: ignore[no-any-return]

    def stats(self, region: str) -> dict[str, Any]:
        status, stats = call("GET", self.sims[region] + "/_sim/stats", timeout=30)
        assert status == 200, stats
        return stats  # type: ignore[no-any-return]

    def log_tails(self, lines: int = 30) -> str:
        assert self.processes is not None
        parts = []
        for name in (*self.workers, "beat", "api"):
            if (self.directory / f"{name}.log").exists():
                parts.append(f"--- {name} ---\n{self.processes.log_tail(name, lines)}")
        return "\n".join(parts)

    # --- running and checking -----------------------------------------------------------

    def run(
        self,
        batches: list[Submitted],
        disrupt: Callable[[Fleet, float, float], None] | None = None,
        timeout_s: float = BATCH_DEADLINE_S,
    ) -> float:
        """Wait until every batch has ended, calling `disrupt(fleet, elapsed, progress)` on
        the way (progress: the share of servers already terminal); answer the seconds taken."""
        assert self.processes is not None
        started = time.monotonic()
        total = sum(len(b.servers) for b in batches)
        traced_at = 0.0
        while True:
            elapsed = time.monotonic() - started
            views = [self.batch(b.batch_id) for b in batches]
            if all(v is not None and v["state"] in TERMINAL_BATCH for v in views):
                return elapsed
            settled = sum(
                sum(v["counts"].get(s, 0) for s in TERMINAL_SERVER) for v in views if v is not None
            )
            if os.environ.get("REIMAGE_FAULTS_TRACE") and elapsed >= traced_at:
                traced_at += 5.0
                merged = sum((Counter(v["counts"]) for v in views if v is not None), Counter())
                print(f"[trace] {elapsed:6.1f} {dict(merged)}", flush=True)
            if disrupt is not None:
                disrupt(self, elapsed, settled / total)
            self.processes.assert_alive()
            if elapsed > timeout_s:
                raise AssertionError(self.stuck_report(batches, elapsed))
            time.sleep(0.5)

    def stuck_report(self, batches: list[Submitted], elapsed: float) -> str:
        lines = [f"batches not finished after {elapsed:.0f} s (logs in {self.directory})"]
        for submitted in batches:
            view = self.batch(submitted.batch_id) or {}
            lines.append(
                f"{submitted.region}: {view.get('state')} {view.get('counts')} "
                f"pause_reason={view.get('pause_reason')!r}"
            )
            open_rows = [
                r for r in self.servers(submitted.batch_id) if r["state"] not in TERMINAL_SERVER
            ]
            for row in open_rows[:3]:
                lines.append(f"  open {row}")
                lines += [f"    {h}" for h in _compact(self.history(row["server_id"]))]
        lines.append(f"redis: {self.redis_locks()}")
        lines.append(self.log_tails())
        return "\n".join(lines)

    def redis_locks(self) -> dict[str, float]:
        """Lock-like keys in Redis and their seconds to live (for a stuck report)."""
        assert self.redis is not None
        try:
            client = redis.Redis.from_url(self.redis.url, socket_timeout=2)
            keys = [k.decode() for k in client.scan_iter(match="*lock*")]
            keys += [k.decode() for k in client.scan_iter(match="*leader*")]
            return {k: client.pttl(k) / 1000 for k in keys}
        except redis.RedisError as exc:
            return {f"unreachable: {exc}": 0.0}

    def verify(
        self, batches: list[Submitted], batch_states: frozenset[str] = FINISHED_BATCH
    ) -> tuple[list[str], str, int]:
        """Check every server of every batch against its simulator's truth; answer the
        problems found, a summary of the counts per seed and the duplicate submissions."""
        problems: list[str] = []
        summaries: list[str] = []
        duplicates = 0
        for submitted in batches:
            found, summary, dups = self._verify_one(submitted, batch_states)
            problems += found
            summaries.append(summary)
            duplicates += dups
        return problems, "; ".join(summaries), duplicates

    def _verify_one(
        self, submitted: Submitted, batch_states: frozenset[str]
    ) -> tuple[list[str], str, int]:
        region, seed = submitted.region, SEEDS[submitted.region]
        where = f"{region}/seed {seed}"
        problems: list[str] = []
        view = self.batch(submitted.batch_id)
        assert view is not None
        if view["state"] not in batch_states:
            problems.append(f"{where}: batch ended {view['state']}: {view}")
        rows = self.servers(submitted.batch_id)
        listed = [r["server_id"] for r in rows]
        if listed != submitted.servers:
            missing = sorted(set(submitted.servers) - set(listed))
            extra = sorted(set(listed) - set(submitted.servers))
            problems.append(f"{where}: server list differs: missing {missing} extra {extra}")
        stats = self.stats(region)
        truth = stats["truth"]
        dups = int(stats["duplicate_submissions"])
        if dups:
            twice = {s: n for s, n in stats["changeos_accepted"].items() if n > 1}
            problems.append(f"{where}: duplicate_submissions={dups}; accepted twice: {twice}")
        bad: list[str] = []
        for row in rows:
            fact = truth.get(row["server_id"])
            # No job in the cloud: the server was never sent, so only `cancelled` is right.
            expected = TRUTH_TO_STATE.get(fact["job_status"]) if fact else "cancelled"
            if row["state"] != expected:
                bad.append(row["server_id"])
                problems.append(
                    f"{where}: server {row['server_id']} is {row['state']} "
                    f"(error {row['error_code']}: {row['error_message']}), "
                    f"the cloud says {fact}"
                )
            elif fact and row["job_id"] and row["job_id"] != fact["job_id"]:
                bad.append(row["server_id"])
                problems.append(
                    f"{where}: server {row['server_id']} follows job {row['job_id']}, "
                    f"the cloud's last job is {fact['job_id']}"
                )
        tally = Counter(r["state"] for r in rows)
        if any(view["counts"].get(state, 0) != n for state, n in tally.items()):
            problems.append(f"{where}: batch counts {view['counts']} but rows say {dict(tally)}")
        with ThreadPoolExecutor(max_workers=8) as pool:
            histories = dict(zip(listed, pool.map(self.history, listed), strict=True))
        for row in rows:
            trouble = _history_trouble(histories[row["server_id"]], row["state"])
            if trouble:
                bad.append(row["server_id"])
                problems.append(f"{where}: server {row['server_id']} history: {trouble}")
        for server_id in list(dict.fromkeys(bad))[:5]:
            problems.append(f"{where}: history of {server_id}:")
            problems += [f"    {h}" for h in _compact(histories.get(server_id, []))]
        faults = stats["faults"]
        summary = (
            f"{where}: {view['state']} succeeded={tally['succeeded']} failed={tally['failed']} "
            f"other={len(rows) - tally['succeeded'] - tally['failed']} "
            f"truth_fail={sum(1 for f in truth.values() if f['job_status'] == 'FAIL')} "
            f"accepted={sum(stats['changeos_accepted'].values())} "
            f"429={stats['requests'].get('rejected_429', 0)} transient={faults['transient']} "
            f"dropped={faults['dropped']} (failing {faults['dropped_failing']}) "
            f"0603={stats['errors_by_code'].get('Ecs.0603', 0)} "
            f"dup={dups}"
        )
        return problems, summary, dups


def _history_trouble(history: list[dict[str, Any]], state: str) -> str | None:
    if not history:
        return "no history"
    path = [(h["from_state"], h["to_state"]) for h in history]
    if path[0] != (None, "pending"):
        return f"first row is {path[0]}, not (None, 'pending')"
    if path[-1][1] != state:
        return f"last row ends in {path[-1][1]}, the server is {state}"
    for before, after in itertools.pairwise(path):
        if after[0] != before[1]:
            return f"a row starts in {after[0]} after one that ended in {before[1]}: {path}"
    return None


def _compact(history: list[dict[str, Any]]) -> list[str]:
    return [
        f"{h['at']} {h['from_state']}->{h['to_state']} {h['reason']} attempt={h['attempt']} "
        f"job={h['job_id']} {json.dumps(h['details'])[:200]}"
        for h in history
    ]


@pytest.fixture
def make_fleet(request: pytest.FixtureRequest) -> Iterator[Callable[..., Fleet]]:
    """Fleets for one test. Their logs live outside pytest's rotating tmp directories: removed
    when the test passes, kept (and named) when it does not or REIMAGE_FAULTS_KEEP is set."""
    fleets: list[Fleet] = []
    name = request.node.name.removeprefix("test_")[:40]

    def make(
        *,
        regions: tuple[str, ...] = tuple(SEEDS),
        sim_flags: tuple[str, ...] = (),
        worker_env: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
        workers: tuple[str, ...] = WORKERS,
        worker_concurrency: int = 3,
    ) -> Fleet:
        directory = Path(tempfile.mkdtemp(prefix=f"reimage-faults-{name}-"))
        fleet = Fleet(
            directory,
            regions,
            sim_flags,
            dict(worker_env or {}),
            dict(env or {}),
            workers,
            worker_concurrency,
        )
        fleets.append(fleet)
        fleet.start()
        return fleet

    yield make
    report = getattr(request.node, "rep_call", None)
    passed = report is not None and report.passed and not os.environ.get("REIMAGE_FAULTS_KEEP")
    for fleet in fleets:
        fleet.stop()
        if passed:
            shutil.rmtree(fleet.directory, ignore_errors=True)
        else:
            print(f"\n[faults] logs kept in {fleet.directory}")


def run_scenario(
    fleet: Fleet,
    scenario: str,
    disrupt: Callable[[Fleet, float, float], None] | None = None,
    prepare: Callable[[Fleet, str, list[str]], None] | None = None,
    note: Callable[[], str] = lambda: "",
    servers_per_batch: int = SERVERS_PER_BATCH,
    timeout_s: float = BATCH_DEADLINE_S,
    **policy: Any,
) -> list[str]:
    """Submit one batch of 300 (by default) per region, disrupt while they run, check
    everything; print one summary line and answer the problems found."""
    started = time.monotonic()
    batches = []
    for region in fleet.regions:
        servers = new_servers(scenario, region, servers_per_batch)
        # The project holds the servers, as a real one does: pre-flight finds them in a sweep.
        status, answer = call(
            "POST", fleet.sims[region] + "/_sim/servers", {"servers": [{"id": s} for s in servers]}
        )
        assert status == 200, answer
        if prepare is not None:
            prepare(fleet, region, servers)
        batches.append(fleet.submit(region, servers, **policy))
    try:
        ran = fleet.run(batches, disrupt, timeout_s=timeout_s)
    except AssertionError:
        print(
            f"\n[faults] {scenario}: NOT FINISHED after {time.monotonic() - started:.1f} s; "
            f"{note()}"
        )
        raise
    problems, summary, duplicates = fleet.verify(batches)
    extra = note()
    print(
        f"\n[faults] {scenario}: {time.monotonic() - started:.1f} s (batches {ran:.1f} s); "
        f"{summary}; duplicate_submissions={duplicates}" + (f"; {extra}" if extra else "")
    )
    return problems


def assert_no_problems(fleet: Fleet, problems: list[str]) -> None:
    assert not problems, f"{len(problems)} problems (logs in {fleet.directory}):\n" + "\n".join(
        problems[:60]
    )


# --- the scenarios ---------------------------------------------------------------------------


def test_chaos_transient_errors_dropped_answers_busy_servers_tight_rate_limit(
    make_fleet: Callable[..., Fleet],
) -> None:
    fleet = make_fleet(sim_flags=CHAOS_FLAGS)

    def make_busy(fleet: Fleet, region: str, servers: list[str]) -> None:
        """About 20 servers of the batch busy for 3-8 s when it starts (Ecs.0603 meanwhile)."""
        rng = random.Random(SEEDS[region])
        busy = [
            {"id": server, "busy_for_s": round(rng.uniform(3, 8), 1)}
            for server in rng.sample(servers, BUSY_PER_BATCH)
        ]
        status, answer = call("POST", fleet.sims[region] + "/_sim/servers", {"servers": busy})
        assert status == 200, answer

    problems = run_scenario(fleet, "chaos", prepare=make_busy)
    # The case that used to be sent twice did happen: answers lost for jobs that then failed.
    assert sum(fleet.stats(r)["faults"]["dropped_failing"] for r in fleet.regions) > 0
    assert_no_problems(fleet, problems)


class WorkerKiller:
    """SIGKILL one worker (in turn) every few seconds and start it again.

    Each kill waits up to `aim_s` for a scheduler tick to be running (the tick task holds
    TICK_LOCK in Redis meanwhile), so some kills land in the middle of a tick, as they do when
    a machine dies: the tick must not be a single point of failure either.

    The few seconds count from when the last worker killed is up again (both of its Celery
    workers said "ready"): a `reimage worker` spends about 3 s of CPU importing on the way up,
    and kills faster than that would only starve this 2-core machine (the scenario took
    120-220 s so, most of it spent importing), while a kill of a worker still importing tests
    nothing that the kill of a running one does not."""

    def __init__(self, every_s: float = 3.0, aim_s: float = 0.6) -> None:
        self.every_s = every_s
        self.aim_s = aim_s
        self.next_at: float | None = every_s
        self.kills = 0
        self.mid_tick = 0
        self._restarting: _Restart | None = None

    def __call__(self, fleet: Fleet, elapsed: float, progress: float) -> None:
        if self._restarting is not None:
            if not self._restarting.up():
                return
            self._restarting = None
            self.next_at = elapsed + self.every_s
        if self.next_at is None or elapsed < self.next_at:
            return
        assert fleet.redis is not None
        client = redis.Redis.from_url(fleet.redis.url, socket_timeout=1)
        aim_until = time.monotonic() + self.aim_s
        while not client.exists(TICK_LOCK) and time.monotonic() < aim_until:
            time.sleep(0.01)
        self.mid_tick += bool(client.exists(TICK_LOCK))
        client.close()
        name = fleet.workers[self.kills % len(fleet.workers)]
        restart = _Restart(fleet.directory / f"{name}.log")
        fleet.restart(name)
        self._restarting = restart
        self.kills += 1
        self.next_at = None

    def note(self) -> str:
        return f"{self.kills} worker SIGKILLs ({self.mid_tick} while a tick was running)"


CELERY_READY = re.compile(rb'"msg": "[^"]+@[^"]+ ready\."')


class _Restart:
    """A worker started again: up once its log (appended to) says "ready." twice more."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.offset = log.stat().st_size if log.exists() else 0
        self.ready = 0

    def up(self) -> bool:
        with self.log.open("rb") as file:
            file.seek(self.offset)
            new = file.read()
        # Count only whole lines: a line half written now is read whole next time.
        whole = new[: new.rfind(b"\n") + 1]
        self.offset += len(whole)
        self.ready += len(CELERY_READY.findall(whole))
        return self.ready >= 2


# The workers' own speed must not decide how many kills a run sees: at 60 calls/s a region the
# batches once ended in 24 s, after only 4 kills (a fresh-clone CI run failed so), and another
# time in 39 s after 5. At 15 calls/s the ~600 calls a region cannot take less than about 40 s
# whatever the machine: time for six or more kill-and-restart cycles of 4.5-6 s.
KILL_RATE_ENV = {"ORCH_ECS_RATE": "15"}


def test_workers_killed_every_few_seconds(make_fleet: Callable[..., Fleet]) -> None:
    fleet = make_fleet(env=KILL_RATE_ENV)
    killer = WorkerKiller()
    problems = run_scenario(fleet, "worker-sigkill", disrupt=killer, note=killer.note)
    assert killer.kills >= 5
    assert_no_problems(fleet, problems)


class BeatKiller:
    """SIGKILL the beat at the given times (seconds into the run) and start it again."""

    def __init__(self, at_s: tuple[float, ...] = (4.0, 15.0, 26.0)) -> None:
        self.at_s = list(at_s)
        self.kills = 0

    def __call__(self, fleet: Fleet, elapsed: float, progress: float) -> None:
        if self.at_s and elapsed >= self.at_s[0] and progress < 1.0:
            self.at_s.pop(0)
            fleet.restart("beat")
            self.kills += 1


def test_beat_killed_and_restarted(make_fleet: Callable[..., Fleet]) -> None:
    fleet = make_fleet()
    killer = BeatKiller()
    problems = run_scenario(
        fleet, "beat-sigkill", disrupt=killer, note=lambda: f"{killer.kills} beat SIGKILLs"
    )
    assert killer.kills >= 2
    assert_no_problems(fleet, problems)


class RedisRestarter:
    """Kill Redis once mid-batch; start it again, empty, ~2 s later. Workers, beat and API
    keep running: they must reconnect by themselves."""

    def __init__(
        self, when_progress: float = 0.2, down_s: float = 2.0, kill_worker: bool = False
    ) -> None:
        self.when_progress = when_progress
        self.down_s = down_s
        self.kill_worker = kill_worker
        self.done_at: float | None = None

    def __call__(self, fleet: Fleet, elapsed: float, progress: float) -> None:
        if self.done_at is not None or progress < self.when_progress:
            return
        assert fleet.redis is not None
        assert fleet.processes is not None
        if self.kill_worker:  # killed with its tasks mid-call, started again with Redis
            fleet.processes.kill(fleet.workers[0], signal.SIGKILL)
        fleet.redis.stop()
        time.sleep(self.down_s)
        fleet.redis.start()
        if self.kill_worker:
            fleet.start_worker(fleet.workers[0])
        self.done_at = round(elapsed, 1)

    def note(self) -> str:
        worker = ", a worker SIGKILLed with it" if self.kill_worker else ""
        return f"redis killed at {self.done_at} s, back empty {self.down_s:.0f} s later{worker}"


def test_redis_restarted_empty_mid_batch_while_answers_are_dropped(
    make_fleet: Callable[..., Fleet],
) -> None:
    """On PostgreSQL, the broker's Redis killed and started empty (rate budget, facts, queued
    messages all gone) and a worker killed with it, while changeos answers are being dropped,
    half of those of failing jobs among them."""
    fleet = make_fleet(sim_flags=DROP_FLAGS)
    restarter = RedisRestarter(kill_worker=True)
    problems = run_scenario(fleet, "redis-restart", disrupt=restarter, note=restarter.note)
    assert restarter.done_at is not None, "the batches ended before Redis was restarted"
    assert sum(fleet.stats(r)["faults"]["dropped"] for r in fleet.regions) > 0
    assert_no_problems(fleet, problems)


@dataclass
class PostgresOutage:
    """Stop PostgreSQL once mid-batch for `down_s`, asking /readyz (and a batch) meanwhile."""

    when_progress: float = 0.2
    down_s: float = 10.0
    stopped_at: float | None = None
    readyz_down: list[tuple[int, float, Any]] = field(default_factory=list)
    batch_down: list[tuple[int, float]] = field(default_factory=list)
    ready_again_s: float | None = None

    def __call__(self, fleet: Fleet, elapsed: float, progress: float) -> None:
        if self.stopped_at is not None or progress < self.when_progress:
            return
        assert fleet.postgres is not None
        batch_url = f"{fleet.api}/api/v1/batches/{fleet.submitted[0].batch_id}"
        fleet.postgres.stop()
        self.stopped_at = round(elapsed, 1)
        down_since = time.monotonic()
        while time.monotonic() - down_since < self.down_s:
            asked = time.monotonic()
            status, body = call("GET", fleet.api + "/readyz", timeout=10)
            self.readyz_down.append((status, round(time.monotonic() - asked, 2), body))
            asked_batch = time.monotonic()
            status, _ = call("GET", batch_url, timeout=10)
            self.batch_down.append((status, round(time.monotonic() - asked_batch, 2)))
            time.sleep(max(0.0, 1.0 - (time.monotonic() - asked)))
        fleet.postgres.start()
        back = time.monotonic()
        while call("GET", fleet.api + "/readyz", timeout=10)[0] != 200:
            assert time.monotonic() - back < 60, "readyz not 200 a minute after PostgreSQL is back"
            time.sleep(0.5)
        self.ready_again_s = round(time.monotonic() - back, 2)

    def note(self) -> str:
        return (
            f"postgres stopped at {self.stopped_at} s for {self.down_s:.0f} s; "
            f"readyz while down (status, s): {[(s, t) for s, t, _ in self.readyz_down]}; "
            f"GET batch while down: {self.batch_down}; readyz 200 again "
            f"{self.ready_again_s} s after the restart"
        )


def test_postgres_stopped_ten_seconds_mid_batch(make_fleet: Callable[..., Fleet]) -> None:
    fleet = make_fleet()
    outage = PostgresOutage()
    problems = run_scenario(fleet, "postgres-stop", disrupt=outage, note=outage.note)
    assert outage.stopped_at is not None, "the batches ended before the outage"
    assert len(outage.readyz_down) >= 3
    for status, seconds, body in outage.readyz_down:  # 503 in time: not 500, not a hang
        assert status == 503, (status, seconds, body)
        assert body["checks"]["database"] != "ok", body
    assert outage.ready_again_s is not None
    assert_no_problems(fleet, problems)


def test_bad_credentials_pause_the_batch_after_the_first_401(
    make_fleet: Callable[..., Fleet],
) -> None:
    """Workers sign with a wrong secret key: the batch pauses with the cloud's reason before
    it burns through the fleet; nothing is failed; cancelling then ends every server
    `cancelled`, none of them ever changed."""
    region = "cn-north-4"
    fleet = make_fleet(regions=(region,), worker_env={"HUAWEICLOUD_SDK_SK": WRONG_SK})
    started = time.monotonic()
    submitted = fleet.submit(region, new_servers("bad-credentials", region), max_in_flight=50)
    view: dict[str, Any] | None = None
    while True:
        view = fleet.batch(submitted.batch_id)
        if view is not None and view["state"] == "paused":
            break
        assert view is None or view["state"] not in TERMINAL_BATCH, view
        assert time.monotonic() - started < 30, f"not paused: {view}\n{fleet.log_tails()}"
        time.sleep(0.2)
    paused_after = time.monotonic() - started
    time.sleep(2.0)  # tasks already past their check settle
    stats = fleet.stats(region)
    received = stats["changeos_received_by_server"]
    rows = fleet.servers(submitted.batch_id)
    states = Counter(r["state"] for r in rows)

    status, cancelling = call("POST", f"{fleet.api}/api/v1/batches/{submitted.batch_id}/cancel")
    assert status == 200, cancelling
    fleet.run([submitted])
    problems, summary, duplicates = fleet.verify([submitted], frozenset({"cancelled"}))
    reason = view["pause_reason"] or ""
    print(
        f"\n[faults] bad-credentials: {time.monotonic() - started:.1f} s; paused after "
        f"{paused_after:.1f} s, pause_reason={reason!r}; while paused: changeos received for "
        f"{len(received)} servers ({sum(received.values())} calls), "
        f"accepted {sum(stats['changeos_accepted'].values())}, "
        f"401s {stats['errors_by_code'].get('APIGW.0301', 0)}, states {dict(states)}; "
        f"after cancel: {summary}; duplicate_submissions={duplicates}"
    )
    assert "APIGW.0301" in reason or "401" in reason, reason
    assert paused_after < 20
    assert len(received) <= 50, received
    assert not stats["changeos_accepted"]
    assert states["failed"] == 0, [r for r in rows if r["state"] == "failed"][:5]
    assert set(states) <= {"pending", "submitting"}, states
    assert_no_problems(fleet, problems)


# --- issue 11: scale-out on a slow budget, and a pause while servers wait for tokens ------------

FOUR_WORKERS = ("worker-1", "worker-2", "worker-3", "worker-4")
# A fleet rate of 2 calls/s per region shared by 4 worker processes (25 servers a message),
# with a lease shorter than most waits for a token: the setting that used to re-dispatch a
# server still waiting to send, and send it twice.
SLOW_BUDGET_ENV = {
    "ORCH_ECS_RATE": "2",
    "ORCH_ECS_BURST": "1",
    "ORCH_TASK_LEASE_S": "4",
    "ORCH_ECS_READ_TIMEOUT": "5",
    "ORCH_ECS_CONNECT_TIMEOUT": "2",
}


def rate_wait_seconds(fleet: Fleet) -> float:
    """The seconds every process together spent waiting for tokens, from the API's /metrics."""
    request = urllib.request.Request(fleet.api + "/metrics")
    request.add_header("Authorization", f"Bearer {TOKEN}")
    with _OPENER.open(request, timeout=10) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith("reimage_rate_limiter_wait_seconds_total"):
            return float(line.split()[-1])
    return 0.0


def test_four_workers_share_a_slow_rate_budget_with_a_short_lease(
    make_fleet: Callable[..., Fleet],
) -> None:
    fleet = make_fleet(
        sim_flags=DROP_FLAGS, env=SLOW_BUDGET_ENV, workers=FOUR_WORKERS, worker_concurrency=2
    )
    waited: list[float] = []
    problems = run_scenario(
        fleet,
        "scale-out",
        servers_per_batch=40,
        timeout_s=300,
        max_in_flight=40,
        note=lambda: f"{waited[0] if waited else rate_wait_seconds(fleet):.0f} s of rate waits",
    )
    waited.append(rate_wait_seconds(fleet))
    # Each message's servers waited far longer than the lease in all.
    assert waited[0] > 3 * float(SLOW_BUDGET_ENV["ORCH_TASK_LEASE_S"])
    assert_no_problems(fleet, problems)


def _sent_before(history: list[dict[str, Any]], moment: float) -> int:
    """How many of a server's sends were recorded (committed compare-and-set) before `moment`."""
    return sum(
        1
        for h in history
        if h["reason"] == "changeos_sent" and datetime.fromisoformat(h["at"]).timestamp() < moment
    )


def test_a_pause_while_servers_wait_for_tokens_stops_every_send(
    make_fleet: Callable[..., Fleet],
) -> None:
    fleet = make_fleet(
        env={"ORCH_ECS_RATE": "2", "ORCH_ECS_BURST": "1"},
        workers=FOUR_WORKERS,
        worker_concurrency=2,
    )
    started = time.monotonic()
    batches = []
    for region in fleet.regions:
        servers = new_servers("pause-waiting", region, 150)
        # Servers that exist before the batch, so list sweeps see them and the budget goes
        # to changeos calls rather than to one server read each.
        status, answer = call(
            "POST", fleet.sims[region] + "/_sim/servers", {"servers": [{"id": s} for s in servers]}
        )
        assert status == 200, answer
        batches.append(fleet.submit(region, servers, max_in_flight=100))

    def flowing(submitted: Submitted) -> bool:
        """Sends are going out and most of the claimed servers wait for their token."""
        view = fleet.batch(submitted.batch_id)
        sent = fleet.stats(submitted.region)["changeos_received_by_server"]
        return view is not None and view["counts"].get("submitting", 0) >= 50 and len(sent) >= 3

    while not all(flowing(b) for b in batches):
        assert time.monotonic() - started < 90, [fleet.batch(b.batch_id) for b in batches]
        time.sleep(0.2)
    paused_at: dict[str, float] = {}
    waiting: dict[str, int] = {}
    sent_before: dict[str, int] = {}
    for submitted in batches:
        status, view = call("POST", f"{fleet.api}/api/v1/batches/{submitted.batch_id}/pause")
        assert status == 200, view
        paused_at[submitted.region] = time.time()  # the pause has answered
        waiting[submitted.region] = view["counts"].get("submitting", 0)
        sent_before[submitted.region] = len(
            [c for c in fleet.changeos_calls(submitted.region) if c["at"] < time.time()]
        )
    time.sleep(8.0)  # 16 tokens' worth of time per region: any send still coming would come
    late: list[tuple[str, float]] = []
    problems: list[str] = []
    for submitted in batches:
        moment = paused_at[submitted.region]
        calls = fleet.changeos_calls(submitted.region, since=moment)
        late += [(c["server_id"], c["at"] - moment) for c in calls]
        for server_id, n in Counter(c["server_id"] for c in calls).items():
            history = fleet.history(server_id)
            if _sent_before(history, moment) < n:
                problems.append(
                    f"{submitted.region}: {server_id} was sent after the pause answered: "
                    f"{_compact(history)}"
                )
    for submitted in batches:
        status, view = call("POST", f"{fleet.api}/api/v1/batches/{submitted.batch_id}/cancel")
        assert status == 200, view
    fleet.run(batches)
    found, summary, duplicates = fleet.verify(batches, frozenset({"cancelled"}))
    problems += found
    lags = sorted(lag for _, lag in late)
    print(
        f"\n[faults] pause-waiting: {time.monotonic() - started:.1f} s; changeos received "
        f"before the pause {sent_before}; waiting for tokens when paused {waiting}; after "
        f"the pause answered: {len(late)} (latest {lags[-1] if lags else 0:.3f} s after it); "
        f"{summary}; duplicate_submissions={duplicates}"
    )
    assert min(waiting.values()) >= 50, waiting
    assert min(sent_before.values()) >= 3, sent_before
    # At most the calls whose send was recorded before the pause, and those within one call.
    assert all(lag < 2.0 for lag in lags), lags
    assert_no_problems(fleet, problems)


def test_workers_killed_during_backups_and_health_gates(make_fleet: Callable[..., Fleet]) -> None:
    """Backup first, health gate after: workers SIGKILLed every few seconds land in the middle
    of CreateImage calls, image follows, changeos and probes. Nothing is lost, no changeos and
    no backup is sent twice, and no changeos precedes its server's active backup image."""
    region = "cn-north-4"
    fleet = make_fleet(
        regions=(region,),
        sim_flags=("--backup-seconds", "2", "--boot-seconds", "1", "--image-quota", "1000"),
        env={"ORCH_HEALTH_ALLOWED_HOSTS": json.dumps(["127.0.0.1"])},
    )
    killer = WorkerKiller()
    check = {
        "http": fleet.sims[region] + "/_sim/health/{server_id}",
        "initial_delay_s": 1,
        "interval_s": 1,
        "timeout_s": 2,
        "deadline_s": 90,
    }
    problems = run_scenario(
        fleet,
        "backup-verify-sigkill",
        disrupt=killer,
        note=killer.note,
        servers_per_batch=120,
        backup={"mode": "image"},
        health_check=check,
    )
    assert killer.kills >= 3
    status, log = call("GET", fleet.sims[region] + "/_sim/images/log")
    assert status == 200, log
    created: dict[str, list[dict[str, Any]]] = {}
    for entry in log["calls"]:
        if entry["kind"] == "create" and entry["answer"] == "accepted":
            created.setdefault(entry["server_id"], []).append(entry)
    sent = {c["server_id"]: c["at"] for c in fleet.changeos_calls(region)}
    for server_id, at in sent.items():
        images = created.get(server_id, [])
        if len(images) != 1:
            problems.append(f"{server_id}: {len(images)} backup images made, not one")
        elif images[0]["active_at"] is None or images[0]["active_at"] > at:
            problems.append(f"{server_id}: changeos at {at} before its backup was active")
    (submitted,) = fleet.submitted
    for row in fleet.servers(submitted.batch_id):
        if row["state"] == "succeeded" and not (row["health"] or {}).get("log", {}).get("count"):
            problems.append(f"{row['server_id']}: succeeded without a probe")
    assert_no_problems(fleet, problems)
