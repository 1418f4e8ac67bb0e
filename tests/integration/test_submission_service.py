"""The submit / reconcile / poll services against the simulator over real HTTP, on SQLite and
PostgreSQL and a real Redis rate budget: exactly-once submission under duplicated tasks and
unknown outcomes, bad credentials pausing the batch, the in-flight limit."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiohttp
from sqlalchemy import select, update

from orchestrator.cloud.models import OsChange
from orchestrator.db.models import Batch, BatchServer, ServerHistory
from orchestrator.services.batches import create_batch
from orchestrator.services.polling import poll_servers
from orchestrator.services.submission import submit_server, submit_servers
from orchestrator.services.sweep import sweep_facts
from tests.support.service_world import (
    IMAGE,
    PROJECT,
    ListDispatcher,
    Spec,
    World,
    WorldMaker,
    as_new_batch,
    mark_call_lost,
    new_batch,
    reasons,
    row,
    server_snapshot,
    tick,
    wait_settled,
)


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


async def test_unknown_outcome_that_was_applied_is_never_sent_again(
    make_world: WorldMaker,
) -> None:
    # Long enough that the job still runs when the stranded call is reconciled, however slow
    # the first statements of a fresh process are (0.3 s was not, once, on a first run).
    world = await make_world(job_seconds=1.5)
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
    mark_call_lost(rt, ids[0], before=await server_snapshot(rt, row(rt, ids[0]).server_id))
    tick(rt, ListDispatcher())
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
    with rt.sessions() as session:  # a body the cloud refuses and pre-flight has no rule for
        session.execute(
            update(Batch).values(
                os_change={
                    "imageid": IMAGE,
                    "keyname": "k",
                    "mode": "withStopServer",
                    "metadata": {"BYOL": "false"},
                }
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


async def test_an_incompatible_server_fails_at_send_without_a_changeos(world: World) -> None:
    rt = world.make_runtime()
    _, ids = new_batch(rt, 1)
    with rt.sessions() as session:  # the image was deleted after submission
        session.execute(
            update(Batch).values(
                os_change={"imageid": "nope", "keyname": "k", "mode": "withStopServer"}
            )
        )
        session.commit()
    tick(rt, ListDispatcher())
    assert await submit_server(rt, ids[0]) == "preflight_failed"
    failed = row(rt, ids[0])
    assert (failed.state, failed.error_code) == ("failed", "image_not_found")
    assert (await world.stats())["requests"]["changeos"] == 0
    with rt.sessions() as session:
        last = session.scalars(
            select(ServerHistory)
            .where(ServerHistory.batch_server_id == ids[0])
            .order_by(ServerHistory.id.desc())
        ).first()
    assert last is not None and last.reason == "preflight_failed"
    assert last.details["changeos_sent"] is False
    assert last.details["reasons"][0]["code"] == "image_not_found"


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
        as_new_batch(SecretSpec((str(uuid.uuid4()),), cloud_init=True)),
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
    # Fixed ids, four of whose jobs the simulator makes stuck with seed 4: with random ids, no
    # job (or every job) was stuck in 1 run of 128.
    fixed = [f"5e1f0000-0000-4000-8000-{n:012d}" for n in range(10, 18)]
    _, ids = new_batch(rt, 8, server_ids=fixed)
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
    assert len(stuck) == 4
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


async def test_a_cold_catalog_costs_one_call_per_fact_however_many_servers_send_at_once(
    world: World,
) -> None:
    rt = world.make_runtime()
    _, ids = new_batch(rt, 25, max_in_flight=25)
    tick(rt, ListDispatcher())
    outcomes = await submit_servers(rt, ids)  # one task, 25 servers, nothing cached yet
    assert outcomes == {"accepted": 25}
    requests = (await world.stats())["requests"]
    # The flavor list, the target image and the servers' present image: once each.
    assert (requests["list_flavors"], requests["list_images"]) == (1, 2)
    assert all(row(rt, i).target_image == IMAGE for i in ids)
    # Another process (another runtime on the same Redis) finds them in the shared cache.
    other = world.make_runtime()
    _, more = new_batch(other, 5)
    tick(other, ListDispatcher())
    assert await submit_servers(other, more) == {"accepted": 5}
    requests = (await world.stats())["requests"]
    assert (requests["list_flavors"], requests["list_images"]) == (1, 2)
