"""Webhooks on real parts: a real HTTP receiver, SQLite and PostgreSQL, deliver_due with a
controlled clock; and end to end with `reimage worker` and `reimage beat` processes."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from orchestrator.config import load_settings
from orchestrator.db.models import BatchServer, WebhookAttempt, WebhookDelivery
from orchestrator.db.transitions import record_server_transitions
from orchestrator.db.webhook_outbox import configure_global_url
from orchestrator.domain.states import ServerState
from orchestrator.runtime import Runtime
from orchestrator.services.batches import create_batch, get_batch
from orchestrator.services.dispatch import run_tick
from orchestrator.services.webhooks import deliver_due, list_deliveries
from tests.integration.stack import free_port, http, start_full_stack
from tests.integration.webhook_receiver import Receiver
from tests.support.service_world import as_new_batch

SECRET = "whsec-test-0123456789"
PROJECT = "0605767bd8b5d3f92f0ac0123456789a"
IMAGE = "e215580f-73ad-429d-b6f2-5433947433b0"
ADMINPASS = "Adm1n-P4ssw0rd-never-seen"
USER_DATA_MARK = "TOPSECRET-CLOUD-INIT"
USER_DATA = "#!/bin/sh\necho " + USER_DATA_MARK
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
PAYLOAD_KEYS = {
    "event",
    "delivery_id",
    "batch_id",
    "project_id",
    "region",
    "state",
    "previous_state",
    "wave",
    "counts",
    "total",
    "at",
    "reason",
}


def at_most(ceiling: float) -> float:
    return ceiling  # the longest wait full jitter allows, so the backoff can be asserted


@dataclass
class Spec:
    servers: tuple[str, ...]
    notify_url: str | None = None
    waves: list[int] | None = None
    project_id: str = PROJECT
    region: str = "cn-north-4"
    cloud_init: bool = True
    on_conflict: str = "reject"
    extra: dict[str, Any] = field(default_factory=dict)

    def selector_json(self) -> dict[str, Any] | None:
        return None

    def secrets(self) -> dict[str, str]:
        return {"adminpass": ADMINPASS, "user_data": USER_DATA}

    def public_os_change(self) -> dict[str, Any]:
        return {"imageid": IMAGE, "mode": "withStopServer"}

    def policy_json(self) -> dict[str, Any]:
        policy: dict[str, Any] = {"max_in_flight": 50}
        if self.waves:
            policy["waves"] = self.waves
        return policy

    def canonical_fingerprint(self) -> str:
        return uuid.uuid4().hex


class NoDispatch:
    def submit(self, batch_server_ids: list[int]) -> None:
        pass

    def poll(self, batch_server_ids: list[int]) -> None:
        pass

    def probe(self, batch_server_ids: list[int]) -> None:
        pass

    def sweep(self, project_id: str, region: str) -> None:
        pass


RuntimeMaker = Callable[..., Runtime]


@pytest.fixture
def make_rt(database_url: str) -> Iterator[RuntimeMaker]:
    made: list[Runtime] = []

    def make(**overrides: Any) -> Runtime:
        settings = load_settings(
            **{"database_url": database_url, "webhook_secret": SECRET, **overrides}
        )
        rt = Runtime.build(settings, with_rate_limit=False)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.dispose()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def new_batch(rt: Runtime, url: str | None, n: int = 2, **spec: Any) -> str:
    created = create_batch(
        rt.sessions,
        as_new_batch(Spec(tuple(str(uuid.uuid4()) for _ in range(n)), notify_url=url, **spec)),
        now=T0,
        secret_key="sealing-key-for-tests",
    )
    return str(created.batch["id"])


def deliveries(rt: Runtime, batch_id: str) -> list[WebhookDelivery]:
    with rt.sessions() as session:
        return list(
            session.scalars(
                select(WebhookDelivery)
                .where(WebhookDelivery.batch_id == batch_id)
                .order_by(WebhookDelivery.id)
            )
        )


def attempts(rt: Runtime, delivery_id: int) -> list[WebhookAttempt]:
    with rt.sessions() as session:
        return list(
            session.scalars(
                select(WebhookAttempt)
                .where(WebhookAttempt.delivery_id == delivery_id)
                .order_by(WebhookAttempt.id)
            )
        )


def test_a_delivery_is_signed_and_carries_the_event_without_secrets(
    make_rt: RuntimeMaker, receiver: Receiver
) -> None:
    rt = make_rt()
    batch_id = new_batch(rt, receiver.url())

    report = deliver_due(rt, now=T0)

    assert report.delivered == 1
    [got] = receiver.received()
    assert got.path == "/hook"
    assert got.signed_by(SECRET)
    assert not got.signed_by("another-secret")
    [row] = deliveries(rt, batch_id)
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["User-Agent"] == "reimage-webhooks/1"
    assert got.headers["X-Reimage-Event"] == "batch.state_changed"
    assert got.headers["X-Reimage-Delivery"] == str(row.id)
    assert got.headers["X-Reimage-Timestamp"] == str(int(T0.timestamp()))
    body = got.json
    assert set(body) == PAYLOAD_KEYS
    assert body["delivery_id"] == row.id and body["batch_id"] == batch_id
    assert (body["previous_state"], body["state"], body["reason"]) == (None, "pending", "accepted")
    assert body["counts"]["pending"] == 2 and body["total"] == 2
    # Canonical bytes: what was signed is exactly the sorted, compact JSON of the payload.
    assert got.body == json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    for secret in (ADMINPASS, USER_DATA_MARK, SECRET, "sealing-key-for-tests"):
        assert secret not in got.body.decode()
        assert secret not in json.dumps(row.payload)
    assert row.state == "delivered" and row.delivered_at == T0 and row.last_status == 200
    [attempt] = attempts(rt, row.id)
    assert (attempt.attempt, attempt.status_code, attempt.error) == (1, 200, None)
    assert get_batch(rt.sessions, batch_id)["webhooks"] == {
        "pending": 0,
        "delivered": 1,
        "failed": 0,
    }


def test_without_any_secret_deliveries_go_unsigned(
    make_rt: RuntimeMaker, receiver: Receiver
) -> None:
    rt = make_rt(webhook_secret=None, secret_key=None)
    new_batch(rt, receiver.url())
    assert deliver_due(rt, now=T0).delivered == 1
    [got] = receiver.received()
    assert "X-Reimage-Signature" not in got.headers


def test_the_secret_key_signs_when_no_webhook_secret_is_set(
    make_rt: RuntimeMaker, receiver: Receiver
) -> None:
    from orchestrator.services.webhooks import derived_webhook_secret

    rt = make_rt(webhook_secret=None, secret_key="operator-secret-key")
    new_batch(rt, receiver.url())
    deliver_due(rt, now=T0)
    [got] = receiver.received()
    derived = derived_webhook_secret("operator-secret-key")
    assert derived != "operator-secret-key" and len(derived) == 64
    assert got.signed_by(derived)


def test_a_429_waits_as_long_as_retry_after_says(make_rt: RuntimeMaker, receiver: Receiver) -> None:
    rt = make_rt()
    receiver.fail_first, receiver.fail_status, receiver.retry_after = 1, 429, "120"
    batch_id = new_batch(rt, receiver.url())

    deliver_due(rt, now=T0, jitter=at_most)
    [row] = deliveries(rt, batch_id)
    assert (row.state, row.last_status) == ("pending", 429)
    # Our own backoff would have come back after 5 s; the receiver asked for 120.
    assert row.next_attempt_at == T0 + timedelta(seconds=120)
    assert deliver_due(rt, now=T0 + timedelta(seconds=119), jitter=at_most).sent == 0
    deliver_due(rt, now=T0 + timedelta(seconds=120), jitter=at_most)
    [row] = deliveries(rt, batch_id)
    assert row.state == "delivered" and row.attempts == 2


def test_a_500_is_retried_with_growing_waits_until_delivered(
    make_rt: RuntimeMaker, receiver: Receiver
) -> None:
    rt = make_rt()
    receiver.fail_first = 2
    batch_id = new_batch(rt, receiver.url())

    deliver_due(rt, now=T0, jitter=at_most)
    [row] = deliveries(rt, batch_id)
    assert (row.state, row.attempts, row.last_status, row.last_error) == (
        "pending",
        1,
        500,
        "HTTP 500",
    )
    assert row.next_attempt_at == T0 + timedelta(seconds=5)

    # Not due yet: nothing is sent.
    assert deliver_due(rt, now=T0 + timedelta(seconds=4), jitter=at_most).sent == 0
    assert len(receiver.received()) == 1

    deliver_due(rt, now=T0 + timedelta(seconds=5), jitter=at_most)
    [row] = deliveries(rt, batch_id)
    assert row.state == "pending" and row.attempts == 2
    assert row.next_attempt_at == T0 + timedelta(seconds=5 + 10)

    deliver_due(rt, now=T0 + timedelta(seconds=15), jitter=at_most)
    [row] = deliveries(rt, batch_id)
    assert row.state == "delivered" and row.attempts == 3 and row.last_error is None
    assert [(a.attempt, a.status_code, a.error) for a in attempts(rt, row.id)] == [
        (1, 500, "HTTP 500"),
        (2, 500, "HTTP 500"),
        (3, 200, None),
    ]
    got = receiver.received()
    assert len(got) == 3 and all(r.signed_by(SECRET) for r in got)
    # The same delivery each time: same id, same body (signed anew with its timestamp).
    assert {r.headers["X-Reimage-Delivery"] for r in got} == {str(row.id)}
    assert {r.body for r in got} == {got[0].body}


def test_full_jitter_waits_no_longer_than_the_backoff(
    make_rt: RuntimeMaker, receiver: Receiver
) -> None:
    rt = make_rt()
    receiver.status = 503
    batch_id = new_batch(rt, receiver.url())
    deliver_due(rt, now=T0)
    [row] = deliveries(rt, batch_id)
    assert T0 <= row.next_attempt_at <= T0 + timedelta(seconds=5)


def test_a_404_gives_up_at_once(make_rt: RuntimeMaker, receiver: Receiver) -> None:
    rt = make_rt()
    receiver.status = 404
    batch_id = new_batch(rt, receiver.url())
    deliver_due(rt, now=T0)
    deliver_due(rt, now=T0 + timedelta(hours=1))
    [row] = deliveries(rt, batch_id)
    assert (row.state, row.attempts, row.last_status) == ("failed", 1, 404)
    assert len(receiver.received()) == 1
    assert [(a.status_code, a.error) for a in attempts(rt, row.id)] == [(404, "HTTP 404")]


def test_max_attempts_then_failed(make_rt: RuntimeMaker, receiver: Receiver) -> None:
    rt = make_rt(webhook_max_attempts=3)
    receiver.status = 503
    batch_id = new_batch(rt, receiver.url())
    now = T0
    for _ in range(6):
        deliver_due(rt, now=now, jitter=at_most)
        now += timedelta(minutes=11)  # past the longest backoff
    [row] = deliveries(rt, batch_id)
    assert (row.state, row.attempts, row.last_status) == ("failed", 3, 503)
    assert len(receiver.received()) == 3
    assert [a.attempt for a in attempts(rt, row.id)] == [1, 2, 3]


def test_no_answer_at_all_is_retried(make_rt: RuntimeMaker) -> None:
    rt = make_rt()
    batch_id = new_batch(rt, f"http://127.0.0.1:{free_port()}/closed")
    deliver_due(rt, now=T0)
    [row] = deliveries(rt, batch_id)
    assert (row.state, row.attempts, row.last_status) == ("pending", 1, None)
    assert row.last_error == "connection refused"
    [attempt] = attempts(rt, row.id)
    assert attempt.status_code is None and attempt.error == "connection refused"


def test_a_slow_receiver_does_not_hold_up_the_others(
    make_rt: RuntimeMaker, receiver: Receiver
) -> None:
    rt = make_rt()
    slow = Receiver(delay_s=2.0).start()
    try:
        slow_batches = [new_batch(rt, slow.url()) for _ in range(2)]
        fast_batches = [new_batch(rt, receiver.url()) for _ in range(6)]
        started = time.monotonic()
        report = deliver_due(rt, now=T0)
        took = time.monotonic() - started
        assert report.delivered == 8
        # Four senders: the two slow answers overlap each other and the six fast ones.
        assert took < 3.6  # one after the other would take 4 s or more
        for batch_id in slow_batches + fast_batches:
            assert [d.state for d in deliveries(rt, batch_id)] == ["delivered"]
    finally:
        slow.stop()


def test_global_and_batch_urls_both_get_events_equal_urls_once(
    make_rt: RuntimeMaker, receiver: Receiver
) -> None:
    rt = make_rt()
    everything = Receiver().start()
    try:
        configure_global_url(rt.sessions, everything.url("/all"))
        own = new_batch(rt, receiver.url("/own"))
        same = new_batch(rt, everything.url("/all"))
        silent = new_batch(rt, None)
        assert [d.url for d in deliveries(rt, own)] == [
            receiver.url("/own"),
            everything.url("/all"),
        ]
        assert [d.url for d in deliveries(rt, same)] == [everything.url("/all")]
        assert [d.url for d in deliveries(rt, silent)] == [everything.url("/all")]
        deliver_due(rt, now=T0)
        assert [r.json["batch_id"] for r in receiver.received()] == [own]
        assert sorted(r.json["batch_id"] for r in everything.received()) == sorted(
            [own, same, silent]
        )
    finally:
        everything.stop()


def test_the_allowlist_blocks_a_host(make_rt: RuntimeMaker, receiver: Receiver) -> None:
    rt = make_rt(notify_allowed_hosts=["hooks.example.com", "*.internal.example"])
    batch_id = new_batch(rt, receiver.url())
    deliver_due(rt, now=T0)
    assert receiver.received() == []
    [row] = deliveries(rt, batch_id)
    assert (row.state, row.last_error) == ("failed", "host not allowed")
    [attempt] = attempts(rt, row.id)
    assert attempt.status_code is None and attempt.error == "host not allowed"

    allowed = make_rt(notify_allowed_hosts=["127.0.0.1"])
    other = new_batch(allowed, receiver.url())
    deliver_due(allowed, now=T0)
    assert [d.state for d in deliveries(allowed, other)] == ["delivered"]


def settle_all(rt: Runtime, batch_id: str, wave: int, now: datetime) -> None:
    """The servers of one wave end succeeded, through the one transition function."""
    with rt.sessions() as session:
        ids = list(
            session.scalars(
                select(BatchServer.id).where(
                    BatchServer.batch_id == batch_id,
                    BatchServer.wave == wave,
                    BatchServer.state == ServerState.SUBMITTING.value,
                )
            )
        )
        assert ids
        for expected, to in (
            (ServerState.SUBMITTING, ServerState.RUNNING),
            (ServerState.RUNNING, ServerState.SUCCEEDED),
        ):
            record_server_transitions(
                session, ids, expected=expected, to=to, reason="test", now=now
            )
        session.commit()


def test_each_wave_and_state_change_is_told_in_order(
    make_rt: RuntimeMaker, receiver: Receiver
) -> None:
    rt = make_rt()
    receiver.fail_first = 1  # the first event is retried: the later ones wait their turn
    batch_id = new_batch(rt, receiver.url(), n=4, waves=[2, 2])
    now = T0

    def tick() -> None:
        run_tick(rt.sessions, NoDispatch(), now=now, lease_s=60, call_timeout_s=1)

    tick()  # pending -> running, wave 1 claimed
    deliver_due(rt, now=now, jitter=at_most)
    assert [r.json["state"] for r in receiver.received()] == ["pending"]  # and it failed
    settle_all(rt, batch_id, 1, now)
    now += timedelta(seconds=1)
    tick()  # wave 1 ended, wave 2 opened and claimed
    settle_all(rt, batch_id, 2, now)
    now += timedelta(seconds=1)
    tick()  # wave 2 ended with the batch
    now += timedelta(seconds=10)
    for _ in range(6):
        deliver_due(rt, now=now, jitter=at_most)

    events = [(r.json["event"], r.json["state"], r.json["wave"]) for r in receiver.received()]
    assert events == [
        ("batch.state_changed", "pending", 1),
        ("batch.state_changed", "pending", 1),
        ("batch.state_changed", "running", 1),
        ("wave.finished", "running", 1),
        ("wave.finished", "running", 2),
        ("batch.state_changed", "succeeded", 2),
    ]
    waves = [r.json for r in receiver.received() if r.json["event"] == "wave.finished"]
    assert [(w["total"], w["counts"]["succeeded"]) for w in waves] == [(2, 2), (2, 2)]
    final = receiver.received()[-1].json
    assert final["previous_state"] == "running" and final["counts"]["succeeded"] == 4
    assert all(r.signed_by(SECRET) for r in receiver.received())
    listed = list_deliveries(rt.sessions, batch_id, limit=100)
    assert [d["event"] for d in listed["items"]] == [e for e, _, _ in reversed(events[1:])]
    assert listed["items"][-1]["attempts"][0]["status_code"] == 500
    assert listed["counts"] == {"pending": 0, "delivered": 5, "failed": 0}


def test_two_senders_at_once_never_send_one_attempt_twice(
    make_rt: RuntimeMaker, receiver: Receiver
) -> None:
    rt = make_rt()
    others = make_rt()
    batch_ids = [new_batch(rt, receiver.url()) for _ in range(12)]
    reports = []

    def send(runtime: Runtime) -> None:
        reports.append(deliver_due(runtime, now=T0))

    threads = [threading.Thread(target=send, args=(r,)) for r in (rt, others, rt)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [r.headers["X-Reimage-Delivery"] for r in receiver.received()]
    assert len(ids) == len(set(ids)) == 12
    assert sum(r.delivered for r in reports) == 12
    for batch_id in batch_ids:
        [row] = deliveries(rt, batch_id)
        assert row.state == "delivered" and len(attempts(rt, row.id)) == 1


# ------------------------------------------------------------------ end to end

TOKEN = "webhook-e2e-token-abcdefghij"
AK, SK = "WHKACCESSKEY0000001", "whk-secret-key-000000000000000000000001"


@pytest.mark.e2e
def test_a_two_wave_batch_tells_its_receiver_everything_in_order(
    tmp_path: Path, database_url: str, redis_url: str, receiver: Receiver
) -> None:
    full = start_full_stack(
        tmp_path,
        database_url=database_url,
        redis_url=redis_url,
        token=TOKEN,
        ak=AK,
        sk=SK,
        project_id=PROJECT,
        simulator_args=["--job-seconds", "1", "--seed", "5"],
        extra_env={
            "ORCH_WEBHOOK_SECRET": SECRET,
            "ORCH_ECS_RATE": "200",
            "ORCH_ECS_BURST": "200",
        },
    )
    try:
        api = full.api_url
        servers = [str(uuid.uuid4()) for _ in range(6)]
        status, batch = http(
            "POST",
            f"{api}/api/v1/batches",
            token=TOKEN,
            body={
                "project_id": PROJECT,
                "region": "cn-north-4",
                "servers": servers,
                "os_change": {
                    "imageid": str(uuid.uuid4()),
                    "keyname": "KeyPair-e2e",
                    "userid": "7e25b1da389f4697a79df3a0e5bd494e",
                    "mode": "withStopServer",
                },
                "policy": {"waves": [3, 3], "poll_interval_s": 1},
                "notify_url": receiver.url("/e2e"),
            },
        )
        assert status == 202, batch
        batch_id = batch["id"]
        assert batch["notify_url"] == receiver.url("/e2e")

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            full.processes.assert_alive()
            got = receiver.received()
            if (
                got
                and got[-1].json["event"] == "batch.state_changed"
                and got[-1].json["state"] in ("succeeded", "partially_failed")
            ):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"no final event: {[r.json for r in receiver.received()]}")

        got = receiver.received()
        assert all(r.signed_by(SECRET) for r in got)
        assert {r.path for r in got} == {"/e2e"}
        changes = [
            (r.json["previous_state"], r.json["state"])
            for r in got
            if r.json["event"] == "batch.state_changed"
        ]
        _, page = http("GET", f"{api}/api/v1/batches/{batch_id}/servers", token=TOKEN)
        errors = [(s["state"], s["error_code"], s["error_message"]) for s in page["items"]]
        assert changes == [
            (None, "pending"),
            ("pending", "running"),
            ("running", "succeeded"),
        ], errors
        waves = [r.json["wave"] for r in got if r.json["event"] == "wave.finished"]
        assert waves == [1, 2]
        assert [r.json["event"] for r in got][-1] == "batch.state_changed"

        status, listed = http("GET", f"{api}/api/v1/batches/{batch_id}/webhooks", token=TOKEN)
        assert status == 200
        items = listed["items"]
        assert len(items) == len(got) == 5
        assert [i["id"] for i in items] == sorted((i["id"] for i in items), reverse=True)
        assert all(i["state"] == "delivered" for i in items)
        assert all(
            len(i["attempts"]) == 1 and i["attempts"][0]["status_code"] == 200 for i in items
        )
        status, limited = http(
            "GET", f"{api}/api/v1/batches/{batch_id}/webhooks?limit=2", token=TOKEN
        )
        assert status == 200 and [i["id"] for i in limited["items"]] == [i["id"] for i in items[:2]]
        status, view = http("GET", f"{api}/api/v1/batches/{batch_id}", token=TOKEN)
        assert view["webhooks"] == {"pending": 0, "delivered": 5, "failed": 0}
        missing = str(uuid.uuid4())
        status, error = http("GET", f"{api}/api/v1/batches/{missing}/webhooks", token=TOKEN)
        assert status == 404 and error["error"]["code"] == "not_found"
        status, error = http(
            "GET", f"{api}/api/v1/batches/{batch_id}/webhooks?limit=0", token=TOKEN
        )
        assert status == 400
    finally:
        full.processes.stop_all()
