"""The health gate and the rollback after it, deterministic: the tick, submissions, polls and
probes run in-process against the simulator over real HTTP (its `/_sim/health/{id}` is the
probe target), on one clock that only the test moves (SQLite and PostgreSQL). Warm-up, the
probe interval, the deadline, the rollback's single changeos and the error budget are each
proven by what the database and the simulator show at chosen instants, never by sleeping."""

from __future__ import annotations

from typing import Any

from orchestrator.services.dispatch import run_tick
from tests.support.driver import LEASE_S, Gate
from tests.support.service_world import (
    IMAGE,
    ListDispatcher,
    SharedClock,
    WorldMaker,
    new_batch,
)

JOB_S = 5.0
BOOT_S = 12.0  # a healthy server answers its health endpoint this long after its job ended


async def gate(
    make_world: WorldMaker,
    count: int,
    *,
    broken: bool = False,
    check: dict[str, Any] | None = None,
    **policy: Any,
) -> Gate:
    clock = SharedClock()
    world = await make_world(
        clock=clock,
        job_seconds=JOB_S,
        boot_seconds=BOOT_S,
        broken_images=frozenset({IMAGE}) if broken else frozenset(),
    )
    rt = world.make_runtime(health_allowed_hosts=["127.0.0.1"])
    health_check = {
        "http": world.endpoint + "/_sim/health/{server_id}",
        "initial_delay_s": 20,
        "interval_s": 5,
        "timeout_s": 2,
        "successes": 1,
        "deadline_s": 60,
        **(check or {}),
    }
    batch_id, _ = new_batch(
        rt,
        count,
        max_in_flight=policy.pop("max_in_flight", 50),
        policy_extra={"health_check": health_check, **policy},
    )
    return Gate(world, clock, rt, batch_id)


async def test_a_healthy_server_succeeds_at_its_first_healthy_probe_never_before_the_delay(
    make_world: WorldMaker,
) -> None:
    run = await gate(make_world, 3, check={"successes": 2})
    await run.step()
    await run.advance(JOB_S + 1)
    assert run.states() == ["verifying"] * 3  # the jobs ended; the gate holds them
    assert run.batch().n_verifying == 3 and (await run.stats()).get("health_probes", 0) == 0
    await run.advance(18)  # t=24, 19 s after the jobs ended: warming up, not one probe
    assert run.states() == ["verifying"] * 3
    assert (await run.stats()).get("health_probes", 0) == 0
    await run.advance(1)  # 20 s: the first probe (healthy: boot took 12 s); two are needed
    assert run.states() == ["verifying"] * 3
    await run.advance(5)  # the second healthy probe in a row
    assert run.states() == ["succeeded"] * 3
    stats = await run.stats()
    first_healthy = stats["first_healthy_probe_by_server"]
    for server in run.rows():
        steps = [h for h in run.history(server.id) if h[1] != "job_status_changed"]
        assert [(to, why) for to, why, _ in steps] == [
            ("pending", "accepted"),
            ("submitting", "slot_claimed"),
            ("submitting", "changeos_sent"),
            ("running", "accepted"),
            ("verifying", "job_succeeded"),
            ("succeeded", "healthy"),
        ]
        summary = steps[-1][2]
        assert summary["probes"] == 2 and summary["last"]["detail"] == "HTTP 200"
        assert summary["healthy_after_s"] >= 20  # never before initial_delay_s
        assert server.id and server.server_id in first_healthy  # the simulator saw it healthy
        verifying_at = next(h for h in steps if h[0] == "verifying")
        assert verifying_at[2]["health_check"]["target"].endswith(server.server_id)
    batch = run.batch()
    assert batch.state == "running" or batch.state == "succeeded"
    await run.step()
    assert run.batch().state == "succeeded"


async def test_a_broken_image_fails_its_canaries_rolls_them_back_and_aborts_the_batch(
    make_world: WorldMaker,
) -> None:
    run = await gate(
        make_world,
        6,
        broken=True,
        waves=[2, "100%"],
        max_failures=0,
        on_unhealthy="rollback",
    )
    await run.step()
    await run.advance(JOB_S + 1)
    canaries = run.rows()[:2]
    assert [r.state for r in canaries] == ["verifying", "verifying"]
    previous = {r.server_id: r.previous_image for r in canaries}
    assert all(image and image != IMAGE for image in previous.values())
    await run.advance(60)  # the deadline: unhealthy; each is sent back at once
    batch = run.batch()
    assert batch.abort_reason == "error_budget"  # counted from the failed gate, not its end
    await run.advance(JOB_S + 2)
    await run.step()
    assert run.states() == ["failed", "failed", "cancelled", "cancelled", "cancelled", "cancelled"]
    assert run.batch().state == "aborted"
    accepted = (await run.stats())["changeos_accepted"]
    assert accepted == {r.server_id: 2 for r in canaries}  # the change and its rollback only
    for server in run.rows()[:2]:
        assert server.error_code == "health_check_failed"
        assert "rolled back to image" in (server.error_message or "")
        assert (await run.server(server.server_id))["image_id"] == previous[server.server_id]
        reasons = [why for _, why, _ in run.history(server.id) if why != "job_status_changed"]
        assert reasons[-5:] == [
            "job_succeeded",
            "rollback_started",
            "changeos_sent",
            "accepted",
            "rolled_back",
        ]
        started = next(d for _, why, d in run.history(server.id) if why == "rollback_started")
        assert started["probes"] >= 8 and started["rollback_to"] == previous[server.server_id]
    await run.advance(BOOT_S + 1)
    assert all([await run.healthy(r.server_id) for r in canaries])  # back, and healthy


async def test_keep_leaves_an_unhealthy_server_failed_where_it_is(make_world: WorldMaker) -> None:
    run = await gate(make_world, 1, broken=True, check={"deadline_s": 30})
    await run.step()
    await run.advance(JOB_S + 1 + 30)
    (server,) = run.rows()
    assert server.state == "failed" and server.error_code == "health_check_failed"
    assert "HTTP 503" in (server.error_message or "")
    assert (await run.stats())["changeos_accepted"] == {server.server_id: 1}
    assert (await run.server(server.server_id))["image_id"] == IMAGE


async def test_probes_survive_a_lost_probe_task(make_world: WorldMaker) -> None:
    """A probe task that never ran (a worker killed with it) is handed out again after its
    lease: the due time is in the database, not in a message."""
    run = await gate(make_world, 1)
    await run.step()
    await run.advance(JOB_S + 1)
    await run.advance(18)
    run.clock.advance(1)
    lost = ListDispatcher()
    run_tick(run.rt.sessions, lost, now=run.clock.utc(), lease_s=LEASE_S, call_timeout_s=1)
    assert lost.probes  # handed out, and dropped on the floor
    await run.advance(LEASE_S - 2)
    assert run.states() == ["verifying"]
    await run.advance(3)
    assert run.states() == ["succeeded"]
