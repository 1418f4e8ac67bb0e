"""A simulator over real HTTP and runtimes against it, for the service tests that drive
submission, reconcile, polling and the tick in-process (the test decides when each runs)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from sqlalchemy import select, update

from orchestrator.config import load_settings
from orchestrator.db.models import Batch, BatchServer, ServerHistory
from orchestrator.runtime import Runtime
from orchestrator.services.batches import NewBatch, create_batch
from orchestrator.services.dispatch import run_tick
from orchestrator.services.polling import poll_servers
from orchestrator.simulator.app import create_simulator_app
from orchestrator.simulator.cloud import SimulatorConfig

AK, SK = "SVCACCESSKEY00000001", "svc-secret-key-00000000000000000000001"
PROJECT = "0605767bd8b5d3f92f0ac0123456789a"
IMAGE = "e215580f-73ad-429d-b6f2-5433947433b0"


@dataclass
class Spec:
    servers: tuple[str, ...]
    max_in_flight: int = 50
    project_id: str = PROJECT
    region: str = "cn-north-4"
    cloud_init: bool = False
    on_conflict: str = "reject"
    policy_extra: dict[str, Any] = field(default_factory=dict)

    def selector_json(self) -> dict[str, Any] | None:
        return None

    def secrets(self) -> dict[str, str]:
        return {}

    def public_os_change(self) -> dict[str, Any]:
        return {"imageid": IMAGE, "keyname": "KeyPair-svc", "mode": "withStopServer"}

    def policy_json(self) -> dict[str, Any]:
        return {
            "max_in_flight": self.max_in_flight,
            "poll_interval_s": 0.2,
            "job_timeout_s": 600,
            **self.policy_extra,
        }

    def canonical_fingerprint(self) -> str:
        return uuid.uuid4().hex


def as_new_batch(spec: Any) -> NewBatch:
    """A test's spec (these methods, as a request would answer them) as the service takes it."""
    return NewBatch(
        project_id=spec.project_id,
        region=spec.region,
        servers=tuple(spec.servers),
        cloud_init=spec.cloud_init,
        os_change=spec.public_os_change(),
        policy=spec.policy_json(),
        on_conflict=spec.on_conflict,
        fingerprint=spec.canonical_fingerprint(),
        secrets=spec.secrets(),
        selector=spec.selector_json(),
        notify_url=getattr(spec, "notify_url", None),
    )


@dataclass
class ListDispatcher:
    submits: list[int] = field(default_factory=list)
    polls: list[list[int]] = field(default_factory=list)
    probes: list[list[int]] = field(default_factory=list)
    sweeps: list[tuple[str, str]] = field(default_factory=list)

    def submit(self, batch_server_ids: list[int]) -> None:
        self.submits.extend(batch_server_ids)

    def poll(self, batch_server_ids: list[int]) -> None:
        self.polls.append(batch_server_ids)

    def probe(self, batch_server_ids: list[int]) -> None:
        self.probes.append(batch_server_ids)

    def sweep(self, project_id: str, region: str) -> None:
        self.sweeps.append((project_id, region))


@dataclass
class World:
    endpoint: str
    make_runtime: Callable[..., Runtime]

    async def stats(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http, http.get(self.endpoint + "/_sim/stats") as r:
            result: dict[str, Any] = await r.json()
            return result


WorldMaker = Callable[..., Awaitable[World]]


class SharedClock:
    """One time for the simulator and the services, which moves only when the test says so:
    the simulator reads `monotonic` (seconds), runtimes read `utc` (a datetime)."""

    START = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)

    def __init__(self) -> None:
        self.elapsed = 0.0

    def monotonic(self) -> float:
        return 1000.0 + self.elapsed

    def utc(self) -> datetime:
        return self.START + timedelta(seconds=self.elapsed)

    def advance(self, seconds: float) -> None:
        self.elapsed += seconds


async def make_world_fixture(
    aiohttp_server: Callable[..., Any], database_url: str, redis_url: str
) -> AsyncIterator[WorldMaker]:
    """A simulator over real HTTP (config overrides as keywords) and runtimes against it."""
    runtimes: list[Runtime] = []

    async def start(clock: SharedClock | None = None, **simulator: Any) -> World:
        """`clock`: the simulator and every runtime run on it (and without the list-sweep
        cache, whose freshness is wall time), so the test decides when anything is due."""
        config = {"ak": AK, "sk": SK, "project_id": PROJECT, "job_seconds": 0.3, **simulator}
        sim_clock = clock.monotonic if clock is not None else time.monotonic
        server = await aiohttp_server(create_simulator_app(SimulatorConfig(**config), sim_clock))
        endpoint = str(server.make_url("")).rstrip("/")

        def make_runtime(sk: str = SK, **overrides: Any) -> Runtime:
            settings = load_settings(
                **{
                    "database_url": database_url,
                    "redis_url": redis_url,
                    "ecs_endpoint": endpoint,
                    "ims_endpoint": endpoint,
                    "evs_endpoint": endpoint,
                    "cloud_ak": AK,
                    "cloud_sk": sk,
                    "reconcile_grace_s": 0,
                    "ecs_rate": 1000,
                    "ecs_burst": 1000,
                    **overrides,
                }
            )
            rt = Runtime.build(settings)
            if clock is not None:
                rt.clock, rt.facts = clock.utc, None
            runtimes.append(rt)
            return rt

        return World(endpoint, make_runtime)

    yield start
    for rt in runtimes:
        rt.dispose()


def new_batch(
    rt: Runtime, count: int, *, server_ids: Sequence[str] | None = None, **spec: Any
) -> tuple[str, list[int]]:
    """A batch of `count` new servers (`server_ids`: these, for a test whose faults must
    fall on known servers: the simulator draws them from the id)."""
    ids_to_use = tuple(server_ids or (str(uuid.uuid4()) for _ in range(count)))
    created = create_batch(
        rt.sessions,
        as_new_batch(Spec(ids_to_use, **spec)),
        now=rt.clock(),
        secret_key=None,
    )
    with rt.sessions() as session:
        ids = list(
            session.scalars(
                select(BatchServer.id)
                .where(BatchServer.batch_id == created.batch["id"])
                .order_by(BatchServer.position)
            )
        )
    return created.batch["id"], ids


def tick(rt: Runtime, dispatcher: ListDispatcher) -> None:
    run_tick(rt.sessions, dispatcher, now=rt.clock(), lease_s=60, call_timeout_s=1)


def row(rt: Runtime, row_id: int) -> BatchServer:
    with rt.sessions() as session:
        return session.get_one(BatchServer, row_id)


def reasons(rt: Runtime, row_id: int) -> list[str]:
    with rt.sessions() as session:
        return list(
            session.scalars(
                select(ServerHistory.reason)
                .where(ServerHistory.batch_server_id == row_id)
                .order_by(ServerHistory.id)
            )
        )


async def wait_settled(rt: Runtime, ids: list[int]) -> None:
    for _ in range(100):
        await asyncio.sleep(0.1)
        with rt.sessions() as session:
            session.execute(
                update(BatchServer).where(BatchServer.id.in_(ids)).values(next_poll_at=rt.clock())
            )
            session.commit()
        await poll_servers(rt, ids)
        if all(row(rt, i).state in ("succeeded", "failed") for i in ids):
            return
    raise AssertionError("jobs never ended")


def mark_call_lost(rt: Runtime, row_id: int, before: dict[str, Any] | None = None) -> None:
    """What a worker that died mid-call (or a dropped answer) leaves behind: attempt 1 started
    long ago, with `before` as the server looked before the call (None: an older version's row,
    which kept no snapshot)."""
    long_ago = rt.clock() - timedelta(seconds=100)  # past the in-flight window, not the timeout
    with rt.sessions() as session:
        session.execute(
            update(BatchServer)
            .where(BatchServer.id == row_id)
            .values(
                state="submitting",
                attempt=1,
                call_started_at=long_ago,
                next_attempt_at=long_ago,
                outcome_unknown=False,
                dispatched_at=None,
                before_call=before,
            )
        )
        session.execute(
            update(Batch).values(n_pending=Batch.n_pending - 1, n_submitting=Batch.n_submitting + 1)
        )
        session.commit()


async def server_snapshot(rt: Runtime, server_id: str) -> dict[str, Any]:
    """The server as the client sees it now, in the form `before_call` keeps."""
    async with aiohttp.ClientSession() as http:
        client = rt.ecs_client(http, project_id=PROJECT, region="cn-north-4")
        return (await client.show_server(server_id)).snapshot().as_dict()
