"""Maintenance windows, deterministic: the tick, submissions and polls run in-process against
the simulator over real HTTP, on one clock that only the test moves (SQLite and PostgreSQL).
No changeos before a window opens, servers in flight followed to their end after it closes,
the wave going on at the next opening, a cron window in a time zone, and the batch's events."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import aiohttp
from sqlalchemy import select

from orchestrator.db.models import BatchEvent
from tests.support.driver import Gate
from tests.support.service_world import SharedClock, WorldMaker, new_batch

JOB_S = 5.0


async def windowed(make_world: WorldMaker, count: int, windows: list[Any], **policy: Any) -> Gate:
    clock = SharedClock()
    world = await make_world(clock=clock, job_seconds=JOB_S)
    rt = world.make_runtime()
    batch_id, _ = new_batch(
        rt,
        count,
        max_in_flight=policy.pop("max_in_flight", 50),
        policy_extra={"windows": windows, **policy},
    )
    return Gate(world, clock, rt, batch_id)


def at(clock: SharedClock, seconds: float) -> str:
    return (clock.START + timedelta(seconds=seconds)).isoformat()


async def received(run: Gate) -> list[float]:
    """When each changeos reached the simulator (its own Unix time), oldest first."""
    url = f"{run.world.endpoint}/_sim/changeos"
    async with aiohttp.ClientSession() as http, http.get(url) as answer:
        calls = (await answer.json())["calls"]
    return sorted(float(c["at"]) for c in calls)


def events(run: Gate) -> list[str]:
    with run.rt.sessions() as session:
        return list(
            session.scalars(
                select(BatchEvent.reason)
                .where(BatchEvent.batch_id == run.batch_id)
                .order_by(BatchEvent.id)
            )
        )


async def test_nothing_is_sent_before_the_window_and_a_closing_window_holds_the_rest(
    make_world: WorldMaker,
) -> None:
    clock = SharedClock()
    windows = [
        {"start": at(clock, 20), "end": at(clock, 28)},
        {"start": at(clock, 60), "end": at(clock, 600)},
    ]
    run = await windowed(make_world, 6, windows, max_in_flight=2)
    await run.step()
    batch = run.batch()
    assert batch.window_opens_at == clock.START + timedelta(seconds=20)
    assert "waiting_for_window" in events(run)
    await run.advance(19)
    assert await received(run) == []  # nothing before the window opens
    await run.advance(10)  # t=29: opened at 20 (two sent), closed at 28 mid-wave
    sent = await received(run)
    opened = sent[0]  # the simulator's time of t=20
    # Two at the opening, two more as the first ended, none after the close at t=28.
    assert len(sent) == 4 and all(t - opened < 8 for t in sent)
    assert run.batch().window_opens_at == clock.START + timedelta(seconds=60)
    await run.advance(25)  # t=54: the ones in flight were followed to their end; no new send
    assert len(await received(run)) == 4 and run.states().count("pending") == 2
    await run.advance(6)  # t=60: the next window, the wave goes on
    sent = await received(run)
    assert len(sent) == 6 and all(t - opened >= 40 for t in sent[4:])  # at t=60
    await run.advance(JOB_S + 2)
    assert run.batch().state == "succeeded"
    assert events(run).count("window_opened") == 2


async def test_a_cron_window_in_a_time_zone(make_world: WorldMaker) -> None:
    # The clock starts 2026-12-01 08:00 UTC, 16:00 in Shanghai; the window is 17:00-17:30 there.
    run = await windowed(
        make_world,
        2,
        [{"cron": "0 17 * * *", "duration_s": 1800, "timezone": "Asia/Shanghai"}],
    )
    await run.step()
    assert run.batch().window_opens_at == run.clock.START + timedelta(hours=1)
    await run.advance(3599, by=3599)  # one jump: a second before 17:00 in Shanghai
    assert await received(run) == []
    await run.advance(1)
    assert len(await received(run)) == 2
