"""Failure domains, deterministic: the tick, submissions and polls run in-process against the
simulator over real HTTP, on one clock that only the test moves (SQLite and PostgreSQL). At
every step, no domain (zone, server group, tag) has more servers in flight than its limit,
under waves, failures and pauses; and waves made by domain finish one domain before the next
begins. (The domains are the facts frozen at submission, given here as pre-flight would.)"""

from __future__ import annotations

import dataclasses
import uuid
from collections import Counter
from typing import Any

from sqlalchemy import func, select

from orchestrator.db.models import BatchServer, ServerHistory
from orchestrator.domain.states import IN_FLIGHT_SERVER_STATES
from orchestrator.services.batches import ServerPlan, create_batch
from orchestrator.services.control import pause_batch, resume_batch
from tests.support.driver import Gate
from tests.support.service_world import SharedClock, Spec, WorldMaker, as_new_batch

JOB_S = 5.0
ZONES = ("az-a", "az-b", "az-c")


def fleet(n: int, groups: int) -> dict[str, dict[str, Any]]:
    """`n` servers round-robin over the three zones and `groups` server groups."""
    return {
        str(uuid.uuid4()): {
            "availability_zone": ZONES[i % 3],
            "server_group": f"g-{i % groups}",
            "tags": [f"app=svc-{i % 4}"],
        }
        for i in range(n)
    }


async def spread_batch(
    make_world: WorldMaker,
    facts: dict[str, dict[str, Any]],
    *,
    fail_ratio: float = 0.0,
    rate_limit: float | None = None,
    **policy: Any,
) -> Gate:
    clock = SharedClock()
    world = await make_world(
        clock=clock, job_seconds=JOB_S, fail_ratio=fail_ratio, rate_limit=rate_limit
    )
    rt = world.make_runtime()
    spec = Spec(tuple(facts), max_in_flight=policy.pop("max_in_flight", 50), policy_extra=policy)
    plans = {server_id: ServerPlan(None, f) for server_id, f in facts.items()}
    new = dataclasses.replace(as_new_batch(spec), plans=plans)
    created = create_batch(rt.sessions, new, now=clock.utc(), secret_key=None)
    return Gate(world, clock, rt, created.batch["id"])


def in_flight_by(run: Gate, kind: str) -> Counter[str]:
    with run.rt.sessions() as session:
        rows = session.scalars(
            select(BatchServer.domains).where(
                BatchServer.batch_id == run.batch_id,
                BatchServer.state.in_([s.value for s in IN_FLIGHT_SERVER_STATES]),
            )
        )
        return Counter((domains or {}).get(kind, "") for domains in rows)


async def run_to_the_end(run: Gate, limits: dict[str, int], *, max_steps: int = 400) -> int:
    """Step the clock a second at a time; at every step, hold every limit. Answers the most
    servers in flight at once."""
    peak = 0
    for _ in range(max_steps):
        await run.advance(1)
        for kind, limit in limits.items():
            counts = in_flight_by(run, kind)
            assert all(n <= limit for n in counts.values()), (kind, counts)
        peak = max(peak, run.batch().in_flight)
        if run.batch().state in ("succeeded", "partially_failed", "aborted", "cancelled"):
            return peak
    raise AssertionError(f"not finished: {run.states()}")


async def test_zone_and_group_limits_hold_at_every_step_and_fill_what_they_allow(
    make_world: WorldMaker,
) -> None:
    facts = fleet(30, groups=6)
    run = await spread_batch(
        make_world,
        facts,
        spread=[
            {"by": "availability_zone", "max_in_flight": 2},
            {"by": "server_group", "max_in_flight": 1},
        ],
    )
    peak = await run_to_the_end(run, {"availability_zone": 2, "server_group": 1})
    assert run.batch().state == "succeeded"
    assert peak == 6  # 3 zones x 2, and 6 groups x 1: the limits, not less
    stored = run.batch().domains or {}
    assert stored["sizes"]["availability_zone"] == {"az-a": 10, "az-b": 10, "az-c": 10}


async def test_limits_hold_under_waves_failures_retries_and_a_pause(
    make_world: WorldMaker,
) -> None:
    facts = fleet(24, groups=12)
    run = await spread_batch(
        make_world,
        facts,
        fail_ratio=0.3,
        rate_limit=3,  # throttled (429): servers wait to be sent again, holding their slots
        waves=[4, "100%"],
        spread=[
            {"by": "tag:app", "max_in_flight": "50%"},
            {"by": "server_group", "max_in_flight": 1},
        ],
    )
    limits = {"tag:app": 3, "server_group": 1}  # 50% of the 6 servers of each app
    for _ in range(8):
        await run.advance(1)
        for kind, limit in limits.items():
            assert all(n <= limit for n in in_flight_by(run, kind).values())
    pause_batch(run.rt.sessions, run.batch_id, actor="ops", reason="look", now=run.clock.utc())
    await run.advance(20)
    resume_batch(run.rt.sessions, run.batch_id, actor="ops", now=run.clock.utc())
    await run_to_the_end(run, limits)
    assert run.batch().state == "partially_failed"
    assert run.batch().n_failed > 0
    with run.rt.sessions() as session:
        retried = session.scalar(
            select(func.count())
            .select_from(ServerHistory)
            .where(
                ServerHistory.batch_id == run.batch_id, ServerHistory.reason == "retry_scheduled"
            )
        )
    assert retried  # the limits held through retries too


async def test_waves_by_zone_finish_one_zone_before_the_next_begins(
    make_world: WorldMaker,
) -> None:
    facts = fleet(12, groups=12)
    run = await spread_batch(
        make_world,
        facts,
        waves_by={"by": "availability_zone", "order": ["az-b"]},
        waves=[1, "100%"],
    )
    assert (run.batch().domains or {})["wave_labels"] == [
        "az-b", "az-b", "az-a", "az-a", "az-c", "az-c",
    ]  # fmt: skip
    await run_to_the_end(run, {})
    assert run.batch().state == "succeeded"
    with run.rt.sessions() as session:
        rows = list(
            session.execute(
                select(BatchServer.server_id, ServerHistory.reason, ServerHistory.at)
                .join(BatchServer, BatchServer.id == ServerHistory.batch_server_id)
                .where(BatchServer.batch_id == run.batch_id)
            )
        )
    sent = {s: at for s, why, at in rows if why == "changeos_sent"}
    done = {s: at for s, why, at in rows if why == "job_succeeded"}
    for earlier, later in (("az-b", "az-a"), ("az-a", "az-c")):
        last_end = max(done[s] for s, f in facts.items() if f["availability_zone"] == earlier)
        first_send = min(sent[s] for s, f in facts.items() if f["availability_zone"] == later)
        assert last_end < first_send, (earlier, later)
