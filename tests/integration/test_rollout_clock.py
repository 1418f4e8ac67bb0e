"""Rollout control, deterministic: the tick, submissions and polls run in-process against the
simulator over real HTTP, on one clock that only the test moves (SQLite and PostgreSQL). Waves,
bake time, the manual gate, pause, the error budget, the in-flight limit and cancel are each
proven by what the database and the simulator show at chosen instants, never by sleeping.
(`test_rollout.py` keeps one end-to-end run of each on real processes.)"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from orchestrator.db.models import BatchEvent
from orchestrator.services.control import cancel_batch, pause_batch, resume_batch
from orchestrator.services.dispatch import run_tick
from orchestrator.services.submission import submit_servers
from tests.support.driver import LEASE_S, Gate
from tests.support.service_world import (
    ListDispatcher,
    SharedClock,
    WorldMaker,
    new_batch,
    row,
)

JOB_S = 5.0  # every simulated job takes exactly this long


class Rollout(Gate):
    """One batch driven as the tick and the workers would; here the clock moves in one jump
    and one tick runs after it."""

    async def jump(self, seconds: float) -> ListDispatcher:
        self.clock.advance(seconds)
        return await self.step()

    def counts(self) -> dict[str, int]:
        batch = self.batch()
        names = ("pending", "submitting", "running", "succeeded", "failed", "cancelled")
        return {name: getattr(batch, f"n_{name}") for name in names if getattr(batch, f"n_{name}")}

    def events(self) -> list[tuple[str, Any]]:
        with self.rt.sessions() as session:
            rows = session.execute(
                select(BatchEvent.reason, BatchEvent.at)
                .where(BatchEvent.batch_id == self.batch_id)
                .order_by(BatchEvent.id)
            ).all()
        return [(reason, (at - self.clock.START).total_seconds()) for reason, at in rows]

    async def accepted(self) -> dict[str, int]:
        counts: dict[str, int] = (await self.world.stats())["changeos_accepted"]
        return counts


async def rollout(
    make_world: WorldMaker, count: int, *, fail_ratio: float = 0.0, **policy: Any
) -> Rollout:
    clock = SharedClock()
    world = await make_world(clock=clock, job_seconds=JOB_S, fail_ratio=fail_ratio)
    rt = world.make_runtime()
    batch_id, _ = new_batch(rt, count, max_in_flight=policy.pop("max_in_flight", 50),
                            policy_extra=policy)  # fmt: skip
    return Rollout(world, clock, rt, batch_id)


async def test_the_in_flight_limit_holds_until_jobs_end(make_world: WorldMaker) -> None:
    run = await rollout(make_world, 5, max_in_flight=2)
    assert (await run.step()).submits and run.counts() == {"pending": 3, "running": 2}
    await run.jump(JOB_S - 1)  # jobs still running: no slot is free
    assert run.counts() == {"pending": 3, "running": 2}
    assert len(await run.accepted()) == 2
    await run.jump(1.5)  # the jobs ended: polled and settled in this step...
    assert run.counts() == {"pending": 3, "succeeded": 2}
    await run.step()  # ...and the next tick fills the two slots
    assert run.counts() == {"pending": 1, "running": 2, "succeeded": 2}
    assert len(await run.accepted()) == 4


async def test_the_next_wave_waits_for_the_bake_time(make_world: WorldMaker) -> None:
    run = await rollout(make_world, 4, waves=[1, "100%"], wave_delay_s=60)
    await run.step()
    assert run.counts() == {"pending": 3, "running": 1}
    await run.jump(JOB_S + 0.5)
    assert run.counts() == {"pending": 3, "succeeded": 1}
    await run.step()  # wave 1 has ended: the bake time starts now
    ended_at = run.clock.elapsed
    await run.jump(59.0)
    assert run.counts() == {"pending": 3, "succeeded": 1}  # 59 s of 60: still baking
    assert len(await run.accepted()) == 1
    await run.jump(1.0)
    assert run.counts() == {"running": 3, "succeeded": 1}
    assert [e for e in run.events() if e[0].startswith("wave")] == [
        ("wave_ended", ended_at),
        ("wave_started", ended_at + 60.0),
    ]


async def test_a_manual_gate_pauses_the_batch_until_resumed(make_world: WorldMaker) -> None:
    run = await rollout(make_world, 3, waves=[1, "100%"], pause_after_waves=[1])
    await run.step()
    await run.jump(JOB_S + 0.5)
    await run.step()
    batch = run.batch()
    assert (batch.state, batch.paused_by, batch.current_wave) == ("paused", "policy", 2)
    await run.jump(3600)  # an hour later: nothing moved without a person
    assert run.counts() == {"pending": 2, "succeeded": 1}
    resume_batch(run.rt.sessions, run.batch_id, actor="ops", now=run.clock.utc())
    await run.step()
    assert run.counts() == {"running": 2, "succeeded": 1}


async def test_a_pause_releases_claimed_servers_and_claims_nothing(
    make_world: WorldMaker,
) -> None:
    run = await rollout(make_world, 6, max_in_flight=3)
    sent = ListDispatcher()
    run_tick(run.rt.sessions, sent, now=run.clock.utc(), lease_s=LEASE_S, call_timeout_s=1)
    assert len(sent.submits) == 3  # claimed, their tasks not run yet
    pause_batch(run.rt.sessions, run.batch_id, actor="ops", reason="freeze", now=run.clock.utc())
    outcomes = await submit_servers(run.rt, sent.submits)
    assert outcomes == {"released": 3}
    assert run.counts() == {"pending": 6}
    await run.jump(600)
    assert run.counts() == {"pending": 6} and await run.accepted() == {}
    resume_batch(run.rt.sessions, run.batch_id, actor="ops", now=run.clock.utc())
    await run.step()
    assert run.counts() == {"pending": 3, "running": 3}


async def test_the_error_budget_stops_the_batch_at_the_first_failure_too_many(
    make_world: WorldMaker,
) -> None:
    run = await rollout(make_world, 6, fail_ratio=1.0, max_in_flight=2, max_failures=1)
    await run.step()
    await run.jump(JOB_S + 0.5)  # both fail: one failure allowed, the second spends it
    assert run.counts() == {"pending": 4, "failed": 2}
    await run.step()
    await run.step()  # nothing claimed; the rest are cancelled and the batch ends
    batch = run.batch()
    assert (batch.state, batch.abort_reason) == ("aborted", "error_budget")
    assert run.counts() == {"failed": 2, "cancelled": 4}
    assert len(await run.accepted()) == 2
    assert "error_budget_spent" in [reason for reason, _ in run.events()]


async def test_cancel_follows_running_jobs_to_their_end_and_sends_nothing_new(
    make_world: WorldMaker,
) -> None:
    run = await rollout(make_world, 5, max_in_flight=2)
    await run.step()
    cancel_batch(run.rt.sessions, run.batch_id, actor="ops", now=run.clock.utc())
    await run.step()
    assert run.counts() == {"running": 2, "cancelled": 3}
    assert run.batch().state == "running"  # its two changes are still being followed
    await run.jump(JOB_S + 0.5)
    await run.step()
    assert (run.batch().state, run.counts()) == ("cancelled", {"succeeded": 2, "cancelled": 3})
    assert len(await run.accepted()) == 2


async def test_a_lost_submit_message_is_sent_again_after_its_lease(
    make_world: WorldMaker,
) -> None:
    run = await rollout(make_world, 1)
    first = ListDispatcher()
    run_tick(run.rt.sessions, first, now=run.clock.utc(), lease_s=LEASE_S, call_timeout_s=1)
    assert len(first.submits) == 1  # ...and the message is lost: its task never runs
    assert not (await run.jump(LEASE_S - 1)).submits  # leased: not handed out twice
    again = await run.jump(2)
    assert again.submits == first.submits
    assert row(run.rt, first.submits[0]).state == "running"
    assert len(await run.accepted()) == 1
