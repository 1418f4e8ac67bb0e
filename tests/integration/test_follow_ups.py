"""A task's own follow-ups (issue 17 part 3), deterministic: submissions and polls run in-process
against the simulator over real HTTP on one clock the test moves (SQLite and PostgreSQL). The
next looks a task hands on are due when the rows said, leased so that no tick sends them too,
and found again by the tick once that lease is over (the message was lost)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import update

from orchestrator.cloud.facts import FactsCache
from orchestrator.db.bookkeeping import reschedule_poll
from orchestrator.db.models import BatchServer
from orchestrator.runtime import Runtime
from orchestrator.services.follow_ups import (
    FOLLOW_UP_HORIZON_S,
    ended_a_wave,
    take_awaiting_sweep,
    take_follow_ups,
)
from orchestrator.services.polling import poll_servers
from orchestrator.services.submission import submit_servers
from tests.support.service_world import (
    PROJECT,
    ListDispatcher,
    SharedClock,
    WorldMaker,
    new_batch,
    reasons,
    row,
    tick,
)

LEASE_S = 60.0  # what `tick` in service_world leases with


async def test_accepted_jobs_are_polled_when_due_and_the_tick_leaves_them_to_the_message(
    make_world: WorldMaker,
) -> None:
    clock = SharedClock()
    world = await make_world(clock=clock, job_seconds=5.0)
    rt = world.make_runtime()
    _, ids = new_batch(rt, 6, policy_extra={"poll_interval_s": 1})
    tick(rt, ListDispatcher())
    assert await submit_servers(rt, ids) == {"accepted": 6}
    due = {i: row(rt, i).next_poll_at for i in ids}
    assert all(at is not None and at > clock.utc() for at in due.values())

    follow_ups = take_follow_ups(rt.sessions, ids, now=clock.utc(), lease_s=LEASE_S)
    # Every accepted job is looked at once, for the time its row was due (all six within one
    # bucket of due times: one message).
    assert [(f.kind, sorted(f.ids)) for f in follow_ups] == [("poll", sorted(ids))]
    assert follow_ups[0].due == max(due.values())
    # Leased: a tick at the due time sends nothing, and neither does a second hand-on.
    clock.advance((follow_ups[0].due - clock.utc()).total_seconds())
    dispatcher = ListDispatcher()
    tick(rt, dispatcher)
    assert dispatcher.polls == []
    assert take_follow_ups(rt.sessions, ids, now=clock.utc(), lease_s=LEASE_S) == []

    # The message is delivered: the jobs still run, so the poll leaves them due again, and the
    # task hands them on again, one poll interval later.
    outcomes = await poll_servers(rt, ids)
    assert set(outcomes) <= {"job_progress", "job_pending"} and sum(outcomes.values()) == 6
    again = take_follow_ups(rt.sessions, ids, now=clock.utc(), lease_s=LEASE_S)
    assert sorted(i for f in again for i in f.ids) == sorted(ids)
    assert all(f.due > clock.utc() for f in again)

    # That message is lost (its worker died): the tick finds the rows once the lease is over,
    # and not before.
    clock.advance(FOLLOW_UP_HORIZON_S + LEASE_S - 1)
    dispatcher = ListDispatcher()
    tick(rt, dispatcher)
    assert dispatcher.polls == []
    clock.advance(2)
    tick(rt, dispatcher)
    assert sorted(i for chunk in dispatcher.polls for i in chunk) == sorted(ids)


async def test_only_looks_due_soon_are_handed_on(make_world: WorldMaker) -> None:
    clock = SharedClock()
    world = await make_world(clock=clock, job_seconds=5.0)
    rt = world.make_runtime()
    _, ids = new_batch(rt, 4)
    tick(rt, ListDispatcher())
    await submit_servers(rt, ids)
    now = clock.utc()
    soon, later = ids[:2], ids[2:]
    with rt.sessions() as session:
        session.execute(
            update(BatchServer)
            .where(BatchServer.id.in_(later))
            .values(next_poll_at=now + timedelta(seconds=FOLLOW_UP_HORIZON_S + 30))
        )
        session.commit()
    follow_ups = take_follow_ups(rt.sessions, ids, now=now, lease_s=LEASE_S)
    assert sorted(i for f in follow_ups for i in f.ids) == sorted(soon)
    # The later ones keep their due time: the tick sends them then.
    assert all(
        row(rt, i).next_poll_at == now + timedelta(seconds=FOLLOW_UP_HORIZON_S + 30) for i in later
    )


def jobs_seen_ended(rt: Runtime, ids: list[int], **values: Any) -> None:
    """What a poll leaves when it sees these jobs ended and their server checks must wait for
    a list sweep: the final job status on rows still running."""
    with rt.sessions() as session:
        session.execute(
            update(BatchServer)
            .where(BatchServer.id.in_(ids))
            .values(job_status="SUCCESS", **values)
        )
        session.commit()


async def test_a_sweep_hands_on_the_ended_jobs_of_its_project_and_region_only(
    make_world: WorldMaker,
) -> None:
    clock = SharedClock()
    world = await make_world(clock=clock, job_seconds=1.0)
    rt = world.make_runtime()
    _, ids = new_batch(rt, 4)
    _, elsewhere = new_batch(rt, 2, region="cn-north-9")
    tick(rt, ListDispatcher())
    await submit_servers(rt, ids)
    ended = ids[:3]
    # Three jobs seen ended (their server check waits), one still running; the other region's
    # servers too have ended jobs, which a sweep of this region does not serve.
    jobs_seen_ended(rt, ended)
    jobs_seen_ended(rt, elsewhere, state="running")
    chunks = take_awaiting_sweep(rt.sessions, PROJECT, "cn-north-4", now=clock.utc(), lease_s=5)
    assert chunks == [sorted(ended)]
    assert all(row(rt, i).next_poll_at == clock.utc() + timedelta(seconds=5) for i in ended)


async def test_a_sweep_hands_on_only_the_ended_jobs_polled_since_the_sweep_before_began(
    make_world: WorldMaker,
) -> None:
    clock = SharedClock()
    world = await make_world(clock=clock, job_seconds=1.0)
    rt = world.make_runtime()
    _, ids = new_batch(rt, 3)
    tick(rt, ListDispatcher())
    await submit_servers(rt, ids)
    jobs_seen_ended(rt, ids)  # all three; their server checks wait
    clock.advance(1.0)
    first_sweep_began = clock.utc()
    assert take_awaiting_sweep(
        rt.sessions, PROJECT, "cn-north-4", now=clock.utc(), lease_s=LEASE_S
    ) == [sorted(ids)]
    clock.advance(2.0)
    # One of the three polls that sweep handed on has run, and found no fresh facts yet: it
    # waits for the next sweep. The other two are still queued.
    with rt.sessions() as session:
        reschedule_poll(
            session,
            ids[0],
            polls=2,
            next_poll_at=clock.utc() + timedelta(seconds=1.5),
            now=clock.utc(),
        )
        session.commit()
    # The next sweep hands on that one only: the two queued polls will read its facts.
    assert take_awaiting_sweep(
        rt.sessions,
        PROJECT,
        "cn-north-4",
        now=clock.utc(),
        lease_s=LEASE_S,
        polled_since=first_sweep_began,
    ) == [[ids[0]]]
    # Not knowing of a sweep before it, a sweep hands on every ended job that waits.
    assert take_awaiting_sweep(
        rt.sessions, PROJECT, "cn-north-4", now=clock.utc(), lease_s=LEASE_S
    ) == [sorted(ids)]


async def test_a_batchs_tail_asks_about_its_last_jobs_sooner_and_checks_their_servers_at_once(
    make_world: WorldMaker,
) -> None:
    clock = SharedClock()
    world = await make_world(clock=clock, job_seconds=5.0)
    rt = world.make_runtime()
    # The list-sweep cache on the test's clock, so that finished jobs may wait for a sweep.
    assert rt.redis is not None
    rt.facts = FactsCache(
        rt.redis, prefix=f"test:facts:{uuid.uuid4().hex}", clock=lambda: clock.utc().timestamp()
    )
    # All of `tail` is submitted at once; `bulk` still has six servers waiting for a slot.
    _, tail = new_batch(rt, 8, policy_extra={"poll_interval_s": 1})
    _, bulk = new_batch(rt, 12, max_in_flight=6, policy_extra={"poll_interval_s": 1})
    dispatcher = ListDispatcher()
    tick(rt, dispatcher)
    sent = dispatcher.submits
    assert await submit_servers(rt, sent) == {"accepted": 14}
    running_bulk = [i for i in bulk if i in sent]

    clock.advance(1.0)
    await poll_servers(rt, sent)  # the jobs last 5 s: all still run
    now = clock.utc()
    # Nothing left to submit: asked again as soon as eight jobs fit in the rate (1000/s),
    # which is the tail's floor of a quarter second, not the configured second.
    assert {row(rt, i).next_poll_at for i in tail} == {now + timedelta(seconds=0.25)}
    # Servers still waiting: every poll takes a changeos's token, so the configured second.
    assert {row(rt, i).next_poll_at for i in running_bulk} == {now + timedelta(seconds=1)}

    clock.advance(5.0)
    outcomes = await poll_servers(rt, sent)
    # The tail's servers are asked about at once and end; the bulk's wait for a list sweep,
    # one call for all of them instead of one each.
    assert outcomes == {"succeeded": 8, "awaiting_sweep": 6}
    assert all(row(rt, i).state == "succeeded" for i in tail)
    assert all(reasons(rt, i)[-1] == "job_succeeded" for i in tail)
    assert all(row(rt, i).state == "running" for i in running_bulk)


async def test_a_wave_whose_last_server_ended_is_told_apart_from_one_still_running(
    make_world: WorldMaker,
) -> None:
    clock = SharedClock()
    world = await make_world(clock=clock, job_seconds=1.0)
    rt = world.make_runtime()
    # Wave 1 is one server, wave 2 the other two.
    _, ids = new_batch(rt, 3, policy_extra={"poll_interval_s": 1, "waves": [1, "100%"]})
    dispatcher = ListDispatcher()
    tick(rt, dispatcher)
    first = dispatcher.submits
    assert len(first) == 1
    await submit_servers(rt, first)
    assert not ended_a_wave(rt.sessions, first)  # its job runs

    clock.advance(2.0)
    assert await poll_servers(rt, first) == {"succeeded": 1}
    # Wave 1 has nothing active left: the task that ended it kicks the tick at once.
    assert ended_a_wave(rt.sessions, first)
    # The next wave's servers are pending, not ended.
    second = [i for i in ids if i not in first]
    tick(rt, dispatcher)
    assert sorted(dispatcher.submits[1:]) == sorted(second)
    assert not ended_a_wave(rt.sessions, first)
    await submit_servers(rt, second)
    clock.advance(2.0)
    await poll_servers(rt, second[:1])
    assert row(rt, second[0]).state == "succeeded"
    assert not ended_a_wave(rt.sessions, second[:1])  # its wave's other server still runs
    await poll_servers(rt, second[1:])
    assert ended_a_wave(rt.sessions, second[1:])  # the batch's end is the tick's work now
    tick(rt, dispatcher)
    assert not ended_a_wave(rt.sessions, second)  # the batch has ended
