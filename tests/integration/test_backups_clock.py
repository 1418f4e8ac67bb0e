"""Backups before the change, deterministic: the tick, submissions, polls and probes run
in-process against the simulator over real HTTP (IMS CreateImage, its jobs, the quota, the
delete), on one clock that only the test moves (SQLite and PostgreSQL). That no changeos
precedes its backup, that a rollback uses the backup, the retention sweep and the quota
refusal are each proven by what the database and the simulator show."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from orchestrator.db.models import Batch
from orchestrator.services import intake
from orchestrator.services.backups import BackupQuota, sweep_expired_backups
from orchestrator.services.batches import create_batch
from tests.support.driver import Gate
from tests.support.service_world import (
    IMAGE,
    SharedClock,
    Spec,
    WorldMaker,
    as_new_batch,
    new_batch,
)

JOB_S = 5.0
BACKUP_S = 10.0
RETENTION_S = 300


async def backed_up(
    make_world: WorldMaker,
    count: int,
    *,
    broken: bool = False,
    quota: int = 20,
    **policy: Any,
) -> Gate:
    clock = SharedClock()
    world = await make_world(
        clock=clock,
        job_seconds=JOB_S,
        backup_seconds=BACKUP_S,
        boot_seconds=1.0,
        image_quota=quota,
        broken_images=frozenset({IMAGE}) if broken else frozenset(),
    )
    rt = world.make_runtime(health_allowed_hosts=["127.0.0.1"])
    batch_id, _ = new_batch(
        rt,
        count,
        policy_extra={"backup": {"mode": "image", "retention_s": RETENTION_S}, **policy},
    )
    return Gate(world, clock, rt, batch_id)


async def image_log(run: Gate) -> list[dict[str, Any]]:
    url = f"{run.world.endpoint}/_sim/images/log"
    async with aiohttp.ClientSession() as http, http.get(url) as answer:
        body: dict[str, Any] = await answer.json()
    return list(body["calls"])


async def changeos_log(run: Gate) -> list[dict[str, Any]]:
    url = f"{run.world.endpoint}/_sim/changeos"
    async with aiohttp.ClientSession() as http, http.get(url) as answer:
        body: dict[str, Any] = await answer.json()
    return list(body["calls"])


async def test_no_changeos_goes_before_its_backup_image_is_active(make_world: WorldMaker) -> None:
    run = await backed_up(make_world, 2)
    await run.step()
    assert run.states() == ["backing_up", "backing_up"]
    assert run.batch().n_backing_up == 2 and await changeos_log(run) == []
    await run.advance(BACKUP_S - 1)
    assert run.states() == ["backing_up", "backing_up"] and await changeos_log(run) == []
    await run.advance(3)  # the images are active: the changeos go
    await run.advance(JOB_S + 2)
    await run.step()
    assert run.states() == ["succeeded", "succeeded"] and run.batch().state == "succeeded"
    created = {c["server_id"]: c for c in await image_log(run) if c["kind"] == "create"}
    sent = {c["server_id"]: c for c in await changeos_log(run)}
    for server in run.rows():
        backup = server.backup or {}
        assert backup["status"] == "active" and backup["image_id"]
        assert created[server.server_id]["image_id"] == backup["image_id"]
        # The simulator's own timestamps: the image was active before the changeos arrived.
        assert created[server.server_id]["active_at"] <= sent[server.server_id]["at"]
        reasons = [why for _, why, _ in run.history(server.id)]
        assert reasons.index("backup_requested") < reasons.index("backup_ready")
        assert reasons.index("backup_ready") < reasons.index("changeos_sent")
        ready = next(d for _, why, d in run.history(server.id) if why == "backup_ready")
        assert ready["backup"]["image_id"] == backup["image_id"]


async def test_a_rollback_prefers_the_backup_image(make_world: WorldMaker) -> None:
    check = {"initial_delay_s": 2, "interval_s": 2, "timeout_s": 2, "deadline_s": 10}
    run = await backed_up(make_world, 1, broken=True, on_unhealthy="rollback")
    # The check's URL needs the simulator's address: set it on the stored policy.
    with run.rt.sessions() as session:
        batch = session.get_one(Batch, run.batch_id)
        url = run.world.endpoint + "/_sim/health/{server_id}"
        batch.policy = {**batch.policy, "health_check": {"http": url, **check}}
        session.commit()
    await run.step()
    await run.advance(BACKUP_S + 2)
    await run.advance(JOB_S + 2)
    await run.advance(12)  # unhealthy at the deadline: rolled back at once
    await run.advance(JOB_S + 2)
    (server,) = run.rows()
    assert server.state == "failed" and server.error_code == "health_check_failed"
    backup_image = (server.backup or {})["image_id"]
    images = [c["image_id"] for c in await changeos_log(run)]
    assert images == [IMAGE, backup_image]  # the change, then back onto the backup
    assert (await run.server(server.server_id))["image_id"] == backup_image


async def test_backup_images_are_deleted_after_their_retention_and_not_before(
    make_world: WorldMaker,
) -> None:
    run = await backed_up(make_world, 2)
    await run.step()
    await run.advance(BACKUP_S + 2)
    await run.advance(JOB_S + 2)
    assert run.states() == ["succeeded", "succeeded"]
    assert await sweep_expired_backups(run.rt, now=run.clock.utc()) == 0
    run.clock.advance(RETENTION_S)
    assert await sweep_expired_backups(run.rt, now=run.clock.utc()) == 2
    deletes = {c["image_id"] for c in await image_log(run) if c["kind"] == "delete"}
    for server in run.rows():
        backup = server.backup or {}
        assert backup["status"] == "deleted" and backup["image_id"] in deletes
        assert server.backup_expires_at is None
        note = run.history(server.id)[-1]
        assert note[1] == "backup_deleted" and note[0] == "succeeded"
    assert await sweep_expired_backups(run.rt, now=run.clock.utc()) == 0  # once only


async def test_a_backup_needed_by_a_server_in_flight_is_kept(make_world: WorldMaker) -> None:
    run = await backed_up(make_world, 1)
    await run.step()
    await run.advance(BACKUP_S + 2)
    await run.advance(JOB_S + 2)
    (server,) = run.rows()
    # The same server now in flight in a new batch (a rollback of it would need the image).
    other = as_new_batch(Spec((server.server_id,)))
    create_batch(run.rt.sessions, other, now=run.clock.utc(), secret_key=None)
    run.clock.advance(RETENTION_S + 1)
    assert await sweep_expired_backups(run.rt, now=run.clock.utc()) == 0
    assert (run.rows()[0].backup or {})["status"] == "active"


async def test_a_batch_needing_more_backups_than_the_quota_leaves_is_refused(
    make_world: WorldMaker,
) -> None:
    clock = SharedClock()
    world = await make_world(clock=clock, job_seconds=JOB_S, image_quota=3)
    rt = world.make_runtime()
    spec = Spec(
        tuple(f"00000000-0000-4000-8000-00000000000{i}" for i in range(5)),
        policy_extra={"backup": {"mode": "image"}},
    )

    async def inline(fn: Any, *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    with pytest.raises(BackupQuota) as refused:
        await intake.take_in(
            rt,
            as_new_batch(spec),
            selector=None,
            dry_run=False,
            idempotency_key=None,
            parent_id=None,
            actor="test",
            run_blocking=inline,
        )
    assert refused.value.details["backup_quota"] == {"needed": 5, "left": 3, "quota": 3, "used": 0}
    with rt.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Batch)) == 0  # nothing stored
    dry = await intake.take_in(
        rt,
        as_new_batch(spec),
        selector=None,
        dry_run=True,
        idempotency_key=None,
        parent_id=None,
        actor="test",
        run_blocking=inline,
    )
    assert dry.body["backup_quota"]["enough"] is False
