"""Approvals, deterministic: the tick, submissions and polls run in-process against the
simulator over real HTTP, on one clock that only the test moves (SQLite and PostgreSQL). A
batch needing approvals does nothing until enough distinct people other than its submitter
approve; a resume cannot skip the gate; a refusal cancels the batch; every decision is an
approval row and a batch event."""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from orchestrator.db.models import Approval, BatchEvent
from orchestrator.errors import Conflict, Forbidden
from orchestrator.services import approvals
from orchestrator.services.batches import create_batch
from orchestrator.services.control import resume_batch
from tests.support.driver import Gate
from tests.support.service_world import SharedClock, Spec, WorldMaker, as_new_batch

JOB_S = 3.0


async def gated(make_world: WorldMaker, count: int, **policy: Any) -> Gate:
    clock = SharedClock()
    world = await make_world(clock=clock, job_seconds=JOB_S)
    rt = world.make_runtime()
    spec = Spec(tuple(str(uuid.uuid4()) for _ in range(count)), policy_extra=policy)
    created = create_batch(
        rt.sessions, as_new_batch(spec), now=clock.utc(), secret_key=None, actor="alice"
    )
    return Gate(world, clock, rt, created.batch["id"])


async def sent(run: Gate) -> int:
    url = f"{run.world.endpoint}/_sim/changeos"
    async with aiohttp.ClientSession() as http, http.get(url) as answer:
        return len((await answer.json())["calls"])


def approve(run: Gate, who: str) -> dict[str, Any]:
    return approvals.approve(
        run.rt.sessions, run.batch_id, principal=who, comment=f"ok by {who}", now=run.clock.utc()
    )


def reasons(run: Gate) -> list[str]:
    with run.rt.sessions() as session:
        return list(
            session.scalars(
                select(BatchEvent.reason)
                .where(BatchEvent.batch_id == run.batch_id)
                .order_by(BatchEvent.id)
            )
        )


async def test_two_distinct_approvers_other_than_the_submitter_start_the_batch(
    make_world: WorldMaker,
) -> None:
    run = await gated(make_world, 3, approvals={"before_start": 2})
    await run.advance(5)
    batch = run.batch()
    assert batch.state == "paused" and batch.approval_gate == 0 and await sent(run) == 0
    with pytest.raises(Forbidden, match="submitter"):
        approve(run, "alice")
    with pytest.raises(Conflict, match="awaiting approval"):
        resume_batch(run.rt.sessions, run.batch_id, actor="ops", now=run.clock.utc())
    view = approve(run, "bob")
    assert view["state"] == "paused" and "1 of 2" in view["pause_reason"]
    with pytest.raises(Conflict, match="already approved"):
        approve(run, "bob")
    await run.advance(60)
    assert await sent(run) == 0  # an hour of ticks, one approval: nothing
    assert approve(run, "carol")["state"] == "running"
    await run.step()
    assert await sent(run) == 3
    await run.advance(JOB_S + 2)
    assert run.batch().state == "succeeded"
    with run.rt.sessions() as session:
        decided = session.execute(
            select(Approval.principal, Approval.gate, Approval.decision).where(
                Approval.batch_id == run.batch_id
            )
        ).all()
    assert sorted(decided) == [("bob", 0, "approved"), ("carol", 0, "approved")]
    assert reasons(run) == ["accepted", "awaiting_approval", "approval", "approved", "all_settled"]


async def test_a_gate_after_a_wave_and_a_refusal_cancels_the_rest(make_world: WorldMaker) -> None:
    run = await gated(
        make_world, 4, waves=[1, "100%"], approvals={"after_waves": [1], "required": 1}
    )
    await run.advance(JOB_S + 3)
    batch = run.batch()
    assert batch.state == "paused" and batch.approval_gate == 1 and await sent(run) == 1
    view = approvals.reject(
        run.rt.sessions, run.batch_id, principal="dave", comment="wave 1 looks bad",
        now=run.clock.utc(),
    )  # fmt: skip
    assert view["cancel_requested"] is True
    await run.advance(2)
    assert run.batch().state == "cancelled" and await sent(run) == 1
    assert "rejected" in reasons(run)
