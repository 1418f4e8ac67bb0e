"""Issue 11: the three ways a second changeos went out, each closed, proven in-process against the
simulator over real HTTP on SQLite and PostgreSQL. The test decides when each step runs: a rate
gate that the test opens stands in for a long wait for the fleet's rate budget, so "the wait
outlived the lease" and "a pause landed during the wait" are exact, not timing-dependent.

1. A lost answer to a job that FAILED: the server is in ERROR on a new disk, never sent again.
2. A rate wait longer than the lease: the token comes before the attempt is recorded, so a
   re-dispatched copy and the waiting task cannot both send.
3. A pause, cancel or spent budget during the wait: the compare-and-set that records the send
   reads the batch in the same statement, so nothing is sent after it committed.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import aiohttp
from sqlalchemy import select, update

from orchestrator.cloud.models import OsChange
from orchestrator.db.models import Batch, ServerHistory
from orchestrator.runtime import Runtime
from orchestrator.services.control import cancel_batch, pause_batch, resume_batch
from orchestrator.services.dispatch import run_tick
from orchestrator.services.submission import submit_server
from orchestrator.services.sweep import sweep_facts
from tests.support.service_world import (
    IMAGE,
    PROJECT,
    ListDispatcher,
    World,
    WorldMaker,
    mark_call_lost,
    new_batch,
    reasons,
    row,
    server_snapshot,
    tick,
)

LEASE_S = 60.0


class HeldGate:
    """The fleet's rate budget as the test hands it out: the first `hold` changeos tokens wait
    until `release` is set (then are granted, or refused when `grant` is False); reads and
    later tokens pass at once."""

    rate = 100.0

    def __init__(self, hold: int = 1, grant: bool = True) -> None:
        self.hold = hold
        self.grant = grant
        self.waiting = asyncio.Event()
        self.release = asyncio.Event()

    async def acquire(self, project_id: str, region: str) -> float:
        return 0.0

    async def acquire_within(self, project_id: str, region: str, deadline_s: float) -> bool:
        if self.hold <= 0:
            return True
        self.hold -= 1
        self.waiting.set()
        await self.release.wait()
        return self.grant

    def penalise(self, project_id: str, region: str) -> None:
        return None


def held_runtime(world: World, gate: HeldGate) -> Runtime:
    rt = world.make_runtime()
    rt.rate_gate = gate
    return rt


async def received(world: World) -> dict[str, int]:
    stats = await world.stats()
    counts: dict[str, int] = stats["changeos_received_by_server"]
    return counts


def history_details(rt: Runtime, row_id: int, reason: str) -> list[dict[str, Any]]:
    with rt.sessions() as session:
        return list(
            session.scalars(
                select(ServerHistory.details).where(
                    ServerHistory.batch_server_id == row_id, ServerHistory.reason == reason
                )
            )
        )


# --- 1. a lost answer, and a job that failed ----------------------------------------------------


async def test_a_lost_answer_to_a_failed_job_is_never_sent_again(make_world: WorldMaker) -> None:
    world = await make_world(job_seconds=0.2, fail_ratio=1.0)
    rt = world.make_runtime()
    batch_id, ids = new_batch(rt, 1)
    server_id = row(rt, ids[0]).server_id
    before = await server_snapshot(rt, server_id)
    # The call landed and its job failed, but its answer never reached us.
    async with aiohttp.ClientSession() as http:
        client = rt.ecs_client(http, project_id=PROJECT, region="cn-north-4")
        await client.change_os(
            server_id, OsChange(imageid=IMAGE, keyname="k", mode="withStopServer"), cloud_init=False
        )
    await asyncio.sleep(0.4)  # the simulator's job ends (it runs on its own clock)
    mark_call_lost(rt, ids[0], before=before)
    tick(rt, ListDispatcher())
    assert await submit_server(rt, ids[0]) == "reconciled_failed"
    failed = row(rt, ids[0])
    assert (failed.state, failed.error_code, failed.broken) == (
        "failed",
        "outcome_unknown_server_changed",
        True,
    )
    assert failed.error_message is not None and "retry" in failed.error_message
    (details,) = history_details(rt, ids[0], "outcome_unknown_server_changed")
    assert details["before_call"] == before
    assert details["server"]["status"] == "ERROR"
    assert set(details["changed"]) >= {"status", "system_disk_id"}
    # Nothing more is sent, however often the tick looks at it.
    tick(rt, ListDispatcher())
    assert await submit_server(rt, ids[0]) == "not_submitting"
    stats = await world.stats()
    assert stats["changeos_accepted"] == {server_id: 1}
    assert stats["duplicate_submissions"] == 0
    with rt.sessions() as session:
        batch = session.get_one(Batch, batch_id)
    assert (batch.n_failed, batch.n_broken) == (1, 1)


async def test_without_a_snapshot_from_before_the_call_nothing_is_sent_again(
    world: World,
) -> None:
    """A row left by an older version (no `before_call`): nothing proves the call did not land."""
    rt = world.make_runtime()
    _, ids = new_batch(rt, 1)
    mark_call_lost(rt, ids[0], before=None)
    tick(rt, ListDispatcher())
    assert await submit_server(rt, ids[0]) == "reconciled_failed"
    assert row(rt, ids[0]).error_code == "outcome_unknown_server_changed"
    assert await received(world) == {}


async def test_a_server_that_changed_in_any_way_is_settled_not_resent(world: World) -> None:
    """Idle, not in ERROR, still on its old image, but another `updated`: something happened."""
    rt = world.make_runtime()
    _, ids = new_batch(rt, 1)
    before = await server_snapshot(rt, row(rt, ids[0]).server_id)
    mark_call_lost(rt, ids[0], before={**before, "updated": "2020-01-01T00:00:00Z"})
    tick(rt, ListDispatcher())
    assert await submit_server(rt, ids[0]) == "reconciled_failed"
    (details,) = history_details(rt, ids[0], "outcome_unknown_server_changed")
    assert details["changed"] == ["updated"]
    assert row(rt, ids[0]).broken is False
    assert await received(world) == {}


async def test_a_server_error_answer_is_reconciled_then_sent_once_more(world: World) -> None:
    """A 500 to a POST does not prove the cloud did nothing: it is an unknown outcome, settled
    from the server, which here shows no change, so the call goes out once more."""
    rt = world.make_runtime()
    _, ids = new_batch(rt, 1)
    await server_snapshot(rt, row(rt, ids[0]).server_id)  # the simulator creates it on sight
    await sweep_facts(rt, PROJECT, "cn-north-4")  # so the pre-flight reads no ShowServer
    tick(rt, ListDispatcher())
    async with aiohttp.ClientSession() as http:  # the next answer is 500 Ecs.0615
        await http.post(world.endpoint + "/_sim/faults", json={"transient_error_ratio": 1.0})
        assert await submit_server(rt, ids[0]) == "outcome_unknown"
        await http.post(world.endpoint + "/_sim/faults", json={"transient_error_ratio": 0.0})
    unknown = row(rt, ids[0])
    assert (unknown.error_code, unknown.outcome_unknown) == ("Ecs.0615", True)
    assert await submit_server(rt, ids[0]) == "reconciled_resend"
    assert await submit_server(rt, ids[0]) == "accepted"
    assert row(rt, ids[0]).attempt == 2
    stats = await world.stats()
    assert sum(stats["changeos_received_by_server"].values()) == 2
    assert sum(stats["changeos_accepted"].values()) == 1
    assert stats["duplicate_submissions"] == 0


# --- 2. a rate wait longer than the lease ----------------------------------------------------


async def test_a_rate_wait_longer_than_the_lease_cannot_lead_to_a_second_send(
    world: World,
) -> None:
    gate = HeldGate(hold=1)
    rt = held_runtime(world, gate)
    _, ids = new_batch(rt, 1)
    dispatcher = ListDispatcher()
    tick(rt, dispatcher)
    waiting = asyncio.create_task(submit_server(rt, ids[0]))
    await gate.waiting.wait()
    # Nothing is recorded while the task waits for its token...
    assert (row(rt, ids[0]).attempt, row(rt, ids[0]).call_started_at) == (0, None)
    # ...so when its lease runs out, the tick hands the row to another worker, which sends.
    later = rt.clock() + timedelta(seconds=LEASE_S + 1)
    run_tick(rt.sessions, dispatcher, now=later, lease_s=LEASE_S, call_timeout_s=1)
    assert dispatcher.submits == ids + ids
    assert await submit_server(rt, ids[0]) == "accepted"
    # The first task gets its token at last: the attempt it read is gone, it sends nothing.
    gate.release.set()
    assert await waiting == "lost_race"
    server_id = row(rt, ids[0]).server_id
    assert await received(world) == {server_id: 1}
    assert reasons(rt, ids[0]).count("changeos_sent") == 1
    assert row(rt, ids[0]).attempt == 1


async def test_a_rate_wait_past_its_deadline_leaves_the_row_unsent(world: World) -> None:
    gate = HeldGate(hold=1, grant=False)
    rt = held_runtime(world, gate)
    _, ids = new_batch(rt, 1)
    tick(rt, ListDispatcher())
    gate.release.set()
    assert await submit_server(rt, ids[0]) == "rate_wait_expired"
    waited = row(rt, ids[0])
    assert (waited.state, waited.attempt, waited.dispatched_at) == ("submitting", 0, None)
    assert await received(world) == {}
    dispatcher = ListDispatcher()
    tick(rt, dispatcher)  # handed out again at once, and sent once the budget allows
    assert dispatcher.submits == ids
    assert await submit_server(rt, ids[0]) == "accepted"


# --- 3. pause, cancel and budget are read in the statement that records the send -------------


async def test_a_pause_during_the_rate_wait_stops_the_send(world: World) -> None:
    gate = HeldGate(hold=1)
    rt = held_runtime(world, gate)
    batch_id, ids = new_batch(rt, 1)
    tick(rt, ListDispatcher())
    waiting = asyncio.create_task(submit_server(rt, ids[0]))
    await gate.waiting.wait()
    pause_batch(rt.sessions, batch_id, actor="ops", reason="change freeze", now=rt.clock())
    gate.release.set()
    assert await waiting == "released"
    assert row(rt, ids[0]).state == "pending"
    assert reasons(rt, ids[0])[-1] == "released_paused"
    assert await received(world) == {}
    # Resumed, it goes out as any other server does.
    resume_batch(rt.sessions, batch_id, actor="ops", now=rt.clock())
    tick(rt, ListDispatcher())
    assert await submit_server(rt, ids[0]) == "accepted"
    assert sum((await received(world)).values()) == 1


async def test_a_cancel_during_the_rate_wait_stops_the_send(world: World) -> None:
    gate = HeldGate(hold=1)
    rt = held_runtime(world, gate)
    batch_id, ids = new_batch(rt, 1)
    tick(rt, ListDispatcher())
    waiting = asyncio.create_task(submit_server(rt, ids[0]))
    await gate.waiting.wait()
    cancel_batch(rt.sessions, batch_id, actor="ops", now=rt.clock())
    gate.release.set()
    assert await waiting == "cancelled"
    assert row(rt, ids[0]).state == "cancelled"
    assert await received(world) == {}


async def test_a_budget_spent_during_the_rate_wait_stops_the_send(world: World) -> None:
    gate = HeldGate(hold=1)
    rt = held_runtime(world, gate)
    batch_id, ids = new_batch(rt, 2, policy_extra={"max_failures": 0})
    tick(rt, ListDispatcher())
    waiting = asyncio.create_task(submit_server(rt, ids[0]))
    await gate.waiting.wait()
    with rt.sessions() as session:  # the other server failed meanwhile (max_failures 0)
        session.execute(update(Batch).where(Batch.id == batch_id).values(n_failed=1))
        session.commit()
    gate.release.set()
    assert await waiting == "error_budget"
    assert row(rt, ids[0]).state == "cancelled"
    assert await received(world) == {}
