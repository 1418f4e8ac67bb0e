"""The submit / reconcile / poll services against the simulator over real HTTP, on SQLite and
PostgreSQL and a real Redis rate budget: exactly-once submission under duplicated tasks and
unknown outcomes, bad credentials pausing the batch, the in-flight limit."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select, update

from orchestrator.config import load_settings
from orchestrator.db.models import Batch, BatchServer, ServerHistory
from orchestrator.ecs.models import OsChange
from orchestrator.ecs.simulator.app import create_simulator_app
from orchestrator.ecs.simulator.cloud import SimulatorConfig
from orchestrator.runtime import Runtime
from orchestrator.services.batches import create_batch
from orchestrator.services.dispatch import run_tick
from orchestrator.services.polling import poll_servers
from orchestrator.services.submission import submit_server
from orchestrator.services.sweep import sweep_facts

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


@dataclass
class ListDispatcher:
    submits: list[int] = field(default_factory=list)
    polls: list[list[int]] = field(default_factory=list)
    sweeps: list[tuple[str, str]] = field(default_factory=list)

    def submit(self, batch_server_ids: list[int]) -> None:
        self.submits.extend(batch_server_ids)

    def poll(self, batch_server_ids: list[int]) -> None:
        self.polls.append(batch_server_ids)

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


@pytest.fixture
async def make_world(
    aiohttp_server: Callable[..., Any], database_url: str, redis_url: str
) -> AsyncIterator[WorldMaker]:
    """A simulator over real HTTP (config overrides as keywords) and runtimes against it."""
    runtimes: list[Runtime] = []

    async def start(**simulator: Any) -> World:
        config = {"ak": AK, "sk": SK, "project_id": PROJECT, "job_seconds": 0.3, **simulator}
        server = await aiohttp_server(create_simulator_app(SimulatorConfig(**config)))
        endpoint = str(server.make_url("")).rstrip("/")

        def make_runtime(sk: str = SK, **overrides: Any) -> Runtime:
            settings = load_settings(
                **{
                    "database_url": database_url,
                    "redis_url": redis_url,
                    "ecs_endpoint": endpoint,
                    "cloud_ak": AK,
                    "cloud_sk": sk,
                    "reconcile_grace_s": 0,
                    "ecs_rate": 1000,
                    "ecs_burst": 1000,
                    **overrides,
                }
            )
            rt = Runtime.build(settings)
            runtimes.append(rt)
            return rt

        return World(endpoint, make_runtime)

    yield start
    for rt in runtimes:
        rt.dispose()


@pytest.fixture
async def world(make_world: WorldMaker) -> World:
    return await make_world()


def new_batch(rt: Runtime, count: int, **spec: Any) -> tuple[str, list[int]]:
    created = create_batch(
        rt.sessions,
        Spec(tuple(str(uuid.uuid4()) for _ in range(count)), **spec),
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


async def test_tick_respects_max_in_flight_and_tasks_submit_once(world: World) -> None:
    rt = world.make_runtime()
    _, ids = new_batch(rt, 5, max_in_flight=2)
    dispatcher = ListDispatcher()
    tick(rt, dispatcher)
    assert dispatcher.submits == ids[:2]
    tick(rt, dispatcher)  # nothing more: both slots taken, and their messages are leased
    assert dispatcher.submits == ids[:2]
    # Each message delivered three times at once (a redelivery storm): one call per server.
    outcomes = await asyncio.gather(*(submit_server(rt, i) for i in ids[:2] for _ in range(3)))
    assert sorted(outcomes).count("accepted") == 2
    stats = await world.stats()
    assert sum(stats["changeos_accepted"].values()) == 2
    assert all(row(rt, i).state == "running" and row(rt, i).attempt == 1 for i in ids[:2])
    await wait_settled(rt, ids[:2])
    assert [row(rt, i).state for i in ids[:2]] == ["succeeded", "succeeded"]
    assert reasons(rt, ids[0]) == [
        "accepted",
        "slot_claimed",
        "changeos_sent",
        "accepted",
        "job_succeeded",
    ] or reasons(rt, ids[0]) == [
        "accepted",
        "slot_claimed",
        "changeos_sent",
        "accepted",
        "job_status_changed",
        "job_succeeded",
    ]


def mark_call_lost(rt: Runtime, row_id: int) -> None:
    """What a worker that died mid-call (or a dropped answer) leaves behind."""
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
            )
        )
        session.execute(
            update(Batch).values(n_pending=Batch.n_pending - 1, n_submitting=Batch.n_submitting + 1)
        )
        session.commit()


async def test_unknown_outcome_that_was_applied_is_never_sent_again(world: World) -> None:
    rt = world.make_runtime()
    _, ids = new_batch(rt, 1)
    server_id = row(rt, ids[0]).server_id
    # The cloud accepted the change, but the answer never reached us.
    async with aiohttp.ClientSession() as http:
        client = rt.ecs_client(http, project_id=PROJECT, region="cn-north-4")
        await client.change_os(
            server_id, OsChange(imageid=IMAGE, keyname="k", mode="withStopServer"), cloud_init=False
        )
    mark_call_lost(rt, ids[0])
    dispatcher = ListDispatcher()
    tick(rt, dispatcher)
    assert dispatcher.submits == ids  # the tick found the stranded call
    assert await submit_server(rt, ids[0]) == "reconciled_running"
    assert row(rt, ids[0]).job_id is None
    await wait_settled(rt, ids)
    assert row(rt, ids[0]).state == "succeeded"
    assert "reconciled_in_progress" in reasons(rt, ids[0])
    assert (await world.stats())["changeos_accepted"] == {server_id: 1}


async def test_unknown_outcome_not_applied_is_sent_once_more(world: World) -> None:
    rt = world.make_runtime()
    _, ids = new_batch(rt, 1)
    mark_call_lost(rt, ids[0])
    assert await submit_server(rt, ids[0]) == "reconciled_resend"
    assert (await world.stats())["changeos_accepted"] == {}
    assert await submit_server(rt, ids[0]) == "accepted"
    assert row(rt, ids[0]).attempt == 2
    assert sum((await world.stats())["changeos_accepted"].values()) == 1


async def test_bad_credentials_pause_the_batch_after_the_first_refusal(world: World) -> None:
    rt = world.make_runtime(sk="not-the-right-secret-key-000000000000")
    batch_id, ids = new_batch(rt, 4, max_in_flight=1)
    dispatcher = ListDispatcher()
    tick(rt, dispatcher)
    assert await submit_server(rt, ids[0]) == "config_error"
    with rt.sessions() as session:
        batch = session.get_one(Batch, batch_id)
    assert batch.state == "paused"
    assert batch.pause_reason and "APIGW.0301" in batch.pause_reason
    assert row(rt, ids[0]).state == "pending"
    tick(rt, dispatcher)
    assert dispatcher.submits == ids[:1]  # a paused batch claims nothing more
    assert all(row(rt, i).state == "pending" for i in ids)


async def test_rejected_change_fails_the_server_with_the_cloud_code(world: World) -> None:
    rt = world.make_runtime()
    batch_id, ids = new_batch(rt, 1)
    with rt.sessions() as session:  # an image id the cloud refuses: not a UUID
        session.execute(
            update(Batch).values(
                os_change={"imageid": "nope", "keyname": "k", "mode": "withStopServer"}
            )
        )
        session.commit()
    tick(rt, ListDispatcher())
    assert await submit_server(rt, ids[0]) == "failed"
    failed = row(rt, ids[0])
    assert (failed.state, failed.error_code) == ("failed", "Ecs.0005")
    tick(rt, ListDispatcher())
    with rt.sessions() as session:
        assert session.get_one(Batch, batch_id).state == "partially_failed"


@dataclass
class SecretSpec(Spec):
    """A Cloud-Init batch whose password travels in user_data (so it must use the v2 API)."""

    def secrets(self) -> dict[str, str]:
        return {"user_data": "I2Nsb3VkLWNvbmZpZwpwYXNzd29yZDogUzNjcmV0IQo="}

    def public_os_change(self) -> dict[str, Any]:
        return {"imageid": IMAGE, "mode": "withStopServer"}


async def test_cloud_init_change_goes_to_v2_and_secrets_are_erased_after(world: World) -> None:
    rt = world.make_runtime(secret_key="svc-test-secret-key")
    created = create_batch(
        rt.sessions,
        SecretSpec((str(uuid.uuid4()),), cloud_init=True),
        now=rt.clock(),
        secret_key="svc-test-secret-key",
    )
    batch_id = created.batch["id"]
    with rt.sessions() as session:
        sealed = session.get_one(Batch, batch_id).sealed_secrets
        row_id = session.scalars(select(BatchServer.id)).one()
    assert sealed is not None and b"I2Nsb3Vk" not in sealed
    tick(rt, ListDispatcher())
    # The v1 API refuses user_data (Ecs.0005), so acceptance proves the v2 path was taken.
    assert await submit_server(rt, row_id) == "accepted"
    tick(rt, ListDispatcher())
    with rt.sessions() as session:
        assert session.get_one(Batch, batch_id).sealed_secrets is None
        details = session.scalars(select(ServerHistory.details)).all()
    assert "I2Nsb3Vk" not in repr(details)


async def test_iam_token_instead_of_ak_sk(make_world: WorldMaker) -> None:
    world = await make_world(auth_token="iam-token-123")
    rt = world.make_runtime(cloud_auth_token="iam-token-123")
    _, ids = new_batch(rt, 1)
    tick(rt, ListDispatcher())
    assert await submit_server(rt, ids[0]) == "accepted"


async def test_a_job_that_never_ends_times_out_but_a_late_poll_does_not(
    make_world: WorldMaker,
) -> None:
    world = await make_world(job_seconds=0.2, stuck_ratio=0.5, seed=4)
    rt = world.make_runtime()
    _, ids = new_batch(rt, 8)
    tick(rt, ListDispatcher())
    for row_id in ids:
        assert await submit_server(rt, row_id) == "accepted"
    await asyncio.sleep(0.5)
    with rt.sessions() as session:  # as if every poll came after job_timeout_s
        session.execute(
            update(BatchServer).values(
                submitted_at=rt.clock() - timedelta(seconds=601), next_poll_at=rt.clock()
            )
        )
        session.commit()
    await poll_servers(rt, ids)
    # Eight servers waiting on checks make a list sweep worth it: run it as the tick would.
    await sweep_facts(rt, PROJECT, "cn-north-4")
    with rt.sessions() as session:
        session.execute(update(BatchServer).values(next_poll_at=rt.clock()))
        session.commit()
    await poll_servers(rt, ids)
    truth = (await world.stats())["truth"]
    outcomes = {row(rt, i).server_id: row(rt, i) for i in ids}
    stuck = [s for s, t in truth.items() if t["job_status"] != "SUCCESS"]
    assert stuck and len(stuck) < len(ids)
    for server_id, ended in outcomes.items():
        if server_id in stuck:  # the cloud still runs it: timed out
            assert (ended.state, ended.error_code) == ("failed", "Timeout")
        else:  # it ended before we looked: its real outcome, not a timeout
            assert ended.state == "succeeded"


async def test_success_that_left_the_server_broken_is_a_failure(make_world: WorldMaker) -> None:
    world = await make_world(job_seconds=0.2, error_after_success_ratio=1.0)
    rt = world.make_runtime()
    batch_id, ids = new_batch(rt, 2)
    tick(rt, ListDispatcher())
    for row_id in ids:
        assert await submit_server(rt, row_id) == "accepted"
    await wait_settled(rt, ids)
    for row_id in ids:
        broken = row(rt, row_id)
        assert (broken.state, broken.broken, broken.error_code) == (
            "failed",
            True,
            "ServerError",
        )
        assert reasons(rt, row_id)[-1] == "broken_after_success"
    tick(rt, ListDispatcher())
    with rt.sessions() as session:
        batch = session.get_one(Batch, batch_id)
    assert (batch.n_failed, batch.n_broken, batch.state) == (2, 2, "partially_failed")
