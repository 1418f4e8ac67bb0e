"""Injected faults on the model with an explicit `now`: what each does, that it happens before or
after the side effect as the cloud would, that a seed replays the same faults, and that the
settings change at run time."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from orchestrator.simulator.cloud import Answer, ApiError, Cloud, SimulatorConfig
from tests.unit.test_simulator_cloud import (
    IMAGE,
    OTHER_IMAGE,
    PROJECT,
    SERVER,
    accepted_job_id,
    error_of,
    job,
    make_cloud,
    os_change,
    server,
    submit,
)

SERVERS = [f"00000000-0000-4000-8000-{n:012d}" for n in range(200)]


def answer(cloud: Cloud, server_id: str = SERVER, now: float = 0.0, **fields: Any) -> Answer:
    return cloud.answer_change_os(
        PROJECT, server_id, os_change(**fields), cloud_init=False, now=now
    )


def faults(cloud: Cloud, now: float = 0.0) -> dict[str, int]:
    counts = cloud.stats(now)["faults"]
    assert isinstance(counts, dict)
    return counts


def outcome(reply_or_answer: ApiError | dict[str, Any] | Answer) -> str:
    """What a client sees: an error code, `dropped`, `late`, or `ok`."""
    if isinstance(reply_or_answer, Answer):
        if reply_or_answer.drop:
            return "dropped"
        if reply_or_answer.delay_s:
            return "late"
        reply_or_answer = reply_or_answer.reply
    return reply_or_answer.code if isinstance(reply_or_answer, ApiError) else "ok"


# --- transient errors ------------------------------------------------------------------------


def test_transient_errors_alternate_500_and_503_and_change_nothing() -> None:
    cloud = make_cloud(transient_error_ratio=1.0)
    first = cloud.change_os(PROJECT, SERVER, os_change(), cloud_init=False, now=0.0)
    assert error_of(first) == (500, "Ecs.0615")
    assert isinstance(first, ApiError)
    assert first.body("r")["error"]["code"] == "Ecs.0615"
    assert error_of(cloud.show_server(PROJECT, SERVER, now=0.0)) == (503, "Common.1503")
    assert error_of(cloud.show_job(PROJECT, "0" * 32, now=0.0)) == (500, "Ecs.0615")
    stats = cloud.stats(0.0)
    assert stats["changeos_accepted"] == {}
    assert stats["errors_by_code"] == {"Ecs.0615": 2, "Common.1503": 1}
    assert stats["faults"]["transient"] == 3
    # Listing never meets one, and shows the show_server above created no server either.
    assert cloud.list_servers(PROJECT, {}, now=0.0) == {"count": 0, "servers": []}


def test_transient_share_follows_the_ratio_and_a_retry_can_pass() -> None:
    cloud = make_cloud(transient_error_ratio=0.3)
    outcomes = [outcome(submit(cloud, server=sid)) for sid in SERVERS]
    errors = [code for code in outcomes if code != "ok"]
    assert 0.2 < len(errors) / len(outcomes) < 0.4
    assert errors == ["Ecs.0615", "Common.1503"] * (len(errors) // 2) + ["Ecs.0615"] * (
        len(errors) % 2
    )
    # Attempt numbers are part of the draw: retrying the same server eventually gets through.
    unlucky = SERVERS[outcomes.index("Ecs.0615")]
    retries = [outcome(submit(cloud, server=unlucky)) for _ in range(20)]
    assert "ok" in retries


def test_show_job_meets_transient_errors_too() -> None:
    cloud = make_cloud()
    job_id = accepted_job_id(submit(cloud))
    cloud.set_faults({"transient_error_ratio": 1.0})
    assert error_of(cloud.show_job(PROJECT, job_id, now=1.0)) == (500, "Ecs.0615")
    cloud.set_faults({"transient_error_ratio": 0.0})
    assert job(cloud, job_id, 1.0)["status"] == "RUNNING"


# --- flow control ----------------------------------------------------------------------------


def test_flow_control_is_a_202_without_a_job() -> None:
    cloud = make_cloud(flow_control_ratio=1.0)
    reply = submit(cloud)
    assert error_of(reply) == (202, "Common.0024")
    assert isinstance(reply, ApiError)
    assert reply.body("r") == {
        "error": {"code": "Common.0024", "message": "exceeds flow over limit"}
    }
    stats = cloud.stats(1.0)
    assert stats["changeos_accepted"] == {}
    assert stats["faults"]["flow_control"] == 1
    assert stats["changeos_received_by_server"] == {SERVER: 1}
    assert server(cloud, 1.0)["status"] == "ACTIVE"


def test_flow_control_only_touches_changeos() -> None:
    cloud = make_cloud(flow_control_ratio=1.0)
    assert server(cloud, 0.0)["id"] == SERVER
    assert error_of(cloud.show_job(PROJECT, "0" * 32, now=0.0)) == (400, "Common.0011")


# --- dropped answers -------------------------------------------------------------------------


def test_dropped_changeos_still_creates_its_job() -> None:
    cloud = make_cloud(drop_ratio=1.0)
    dropped = answer(cloud)
    assert dropped.drop
    job_id = accepted_job_id(dropped.reply)
    assert job(cloud, job_id, 1.0)["status"] == "RUNNING"
    assert server(cloud, 1.0)["status"] == "REBUILD"
    # The client never saw the job id, so it submits again once the job is over.
    assert answer(cloud, now=10.0).drop
    stats = cloud.stats(20.0)
    assert stats["changeos_accepted"] == {SERVER: 2}
    assert stats["duplicate_submissions"] == 1  # dropped ones are accepted ones
    assert stats["faults"]["dropped"] == 2


def test_answers_of_failing_changes_can_be_dropped_more_often() -> None:
    """`drop_failing_ratio` targets the hardest case: the job fails, the answer is lost, and the
    server ends in ERROR on its old image."""
    servers = [f"{i:08d}-0000-4000-8000-000000000000" for i in range(200)]
    cloud = make_cloud(fail_ratio=0.5, drop_failing_ratio=1.0, seed=7)
    drops = {sid: answer(cloud, sid).drop for sid in servers}
    truth = cloud.stats(20.0)["truth"]
    failing = {sid for sid in servers if truth[sid]["job_status"] == "FAIL"}
    assert 50 < len(failing) < 150
    assert {sid for sid, dropped in drops.items() if dropped} == failing
    assert all(truth[sid]["status"] == "ERROR" for sid in failing)
    assert faults(cloud, 20.0)["dropped_failing"] == faults(cloud, 20.0)["dropped"] == len(failing)


def test_only_accepted_changeos_are_dropped() -> None:
    cloud = make_cloud(drop_ratio=1.0)
    cloud.add_server(now=0.0, server_id=SERVER, locked=True)
    rejected = answer(cloud)
    assert not rejected.drop
    assert error_of(rejected.reply) == (400, "Ecs.0605")
    assert not cloud.answer_show_server(PROJECT, SERVER, now=0.0).drop
    assert faults(cloud)["dropped"] == 0


# --- slow answers ----------------------------------------------------------------------------


def test_slow_answers_come_late_after_the_side_effect() -> None:
    cloud = make_cloud(slow_ratio=1.0, slow_seconds=7.0)
    late = answer(cloud)
    assert late.delay_s == 7.0
    assert not late.drop
    job_id = accepted_job_id(late.reply)
    assert cloud.stats(0.0)["changeos_accepted"] == {SERVER: 1}
    assert cloud.answer_show_job(PROJECT, job_id, now=0.0).delay_s == 7.0
    assert cloud.answer_show_server(PROJECT, SERVER, now=0.0).delay_s == 7.0
    assert cloud.answer_list_servers(PROJECT, {}, now=0.0).delay_s == 7.0
    assert faults(cloud)["slow"] == 4


def test_without_slow_ratio_nothing_is_late() -> None:
    cloud = make_cloud(slow_seconds=7.0)
    assert answer(cloud).delay_s == 0.0
    assert faults(cloud)["slow"] == 0


# --- stuck jobs ------------------------------------------------------------------------------


def test_stuck_job_runs_forever_and_keeps_the_server_busy() -> None:
    cloud = make_cloud(stuck_ratio=1.0, job_ttl=0.0)
    job_id = accepted_job_id(submit(cloud))
    late = 1e9
    shown = job(cloud, job_id, late)  # never purged either: it never ends
    assert (shown["status"], shown["end_time"]) == ("RUNNING", "")
    seen = server(cloud, late)
    assert (seen["status"], seen["OS-EXT-STS:task_state"]) == ("REBUILD", "rebuilding")
    assert error_of(submit(cloud, os_change(imageid=OTHER_IMAGE), now=late)) == (501, "Ecs.0603")
    stats = cloud.stats(late)
    assert stats["faults"]["stuck"] == 1
    assert stats["concurrent_jobs_now"] == 1
    assert stats["truth"][SERVER]["job_status"] == "RUNNING"


# --- purged jobs -----------------------------------------------------------------------------


def test_jobs_are_purged_job_ttl_after_they_end() -> None:
    cloud = make_cloud(job_ttl=60.0)
    job_id = accepted_job_id(submit(cloud))
    assert job(cloud, job_id, 69.9)["status"] == "SUCCESS"
    assert error_of(cloud.show_job(PROJECT, job_id, now=70.0)) == (400, "Common.0011")
    stats = cloud.stats(70.0)
    assert stats["faults"]["purged"] == 1
    assert stats["truth"][SERVER]["job_id"] == job_id  # the ground truth remembers
    assert server(cloud, 70.0)["image"]["id"] == IMAGE


def test_jobs_are_kept_without_job_ttl_until_one_is_set() -> None:
    cloud = make_cloud()
    job_id = accepted_job_id(submit(cloud))
    assert job(cloud, job_id, 1e6)["status"] == "SUCCESS"
    cloud.set_faults({"job_ttl": 5.0})
    assert error_of(cloud.show_job(PROJECT, job_id, now=1e6)) == (400, "Common.0011")
    cloud.set_faults({"job_ttl": None})  # purged stays purged
    assert error_of(cloud.show_job(PROJECT, job_id, now=1e6)) == (400, "Common.0011")


# --- success that is a lie -------------------------------------------------------------------


def test_error_after_success_leaves_the_server_broken_on_its_old_image() -> None:
    cloud = make_cloud(error_after_success_ratio=1.0)
    old_image = server(cloud, 0.0)["image"]["id"]
    job_id = accepted_job_id(submit(cloud))
    assert faults(cloud, 5.0)["broken"] == 0  # not before the job ends
    assert job(cloud, job_id, 10.0)["status"] == "SUCCESS"
    broken = server(cloud, 10.0)
    assert (broken["status"], broken["OS-EXT-STS:vm_state"]) == ("ERROR", "error")
    assert broken["OS-EXT-STS:task_state"] == ""
    assert broken["image"]["id"] == old_image
    stats = cloud.stats(10.0)
    assert stats["faults"]["broken"] == 1
    assert stats["truth"][SERVER] == {
        "job_id": job_id,
        "job_status": "SUCCESS",
        "image_id": old_image,
        "status": "ERROR",
    }


def test_a_failed_job_is_never_counted_broken() -> None:
    cloud = make_cloud(error_after_success_ratio=1.0, fail_ratio=1.0)
    accepted_job_id(submit(cloud))
    assert server(cloud, 10.0)["status"] == "ERROR"  # as every failed change leaves it
    assert faults(cloud, 10.0)["broken"] == 0


def test_a_later_good_change_repairs_a_broken_server() -> None:
    cloud = make_cloud(error_after_success_ratio=1.0)
    accepted_job_id(submit(cloud))
    cloud.set_faults({"error_after_success_ratio": 0.0})
    accepted_job_id(submit(cloud, os_change(mode=None), now=10.0))  # ERROR: no mode needed
    repaired = server(cloud, 20.0)
    assert (repaired["status"], repaired["image"]["id"]) == ("ACTIVE", IMAGE)


# --- job duration spread ---------------------------------------------------------------------


def _durations(cloud: Cloud) -> list[float]:
    def parse(text: str) -> datetime:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")

    result = []
    for sid in SERVERS[:100]:
        shown = job(cloud, accepted_job_id(submit(cloud, server=sid)), 1e6)
        result.append((parse(shown["end_time"]) - parse(shown["begin_time"])).total_seconds())
    return result


def test_job_seconds_spread_varies_durations_within_bounds_by_seed() -> None:
    durations = _durations(make_cloud(job_seconds=10.0, job_seconds_spread=0.5, seed=1))
    assert all(5.0 <= d <= 15.0 for d in durations)
    assert min(durations) < 6.0 and max(durations) > 14.0
    assert _durations(make_cloud(job_seconds=10.0, job_seconds_spread=0.5, seed=1)) == durations
    assert _durations(make_cloud(job_seconds=10.0, job_seconds_spread=0.5, seed=2)) != durations
    assert set(_durations(make_cloud(job_seconds=10.0))) == {10.0}


# --- counters --------------------------------------------------------------------------------


def test_changeos_received_counts_every_answer() -> None:
    cloud = make_cloud()
    submit(cloud, b"{}")  # invalid
    accepted_job_id(submit(cloud))
    submit(cloud, now=1.0)  # busy
    cloud.set_faults({"transient_error_ratio": 1.0})
    submit(cloud, now=2.0)
    cloud.count_changeos_received(SERVER)  # what the HTTP gateway does when it turns one away
    stats = cloud.stats(3.0)
    assert stats["changeos_received_by_server"] == {SERVER: 5}
    assert stats["changeos_accepted"] == {SERVER: 1}


def test_concurrent_jobs_now_counts_the_running_jobs() -> None:
    cloud = make_cloud()
    for n, sid in enumerate(SERVERS[:3]):
        accepted_job_id(submit(cloud, server=sid, now=float(n)))
    assert cloud.stats(9.5)["concurrent_jobs_now"] == 3
    assert cloud.stats(10.5)["concurrent_jobs_now"] == 2
    assert cloud.stats(12.0)["concurrent_jobs_now"] == 0
    assert cloud.stats(12.0)["max_concurrent_jobs"] == 3


# --- reproducibility -------------------------------------------------------------------------

FAULTS_UNDER_TEST = [
    pytest.param({"transient_error_ratio": 0.3}, id="transient"),
    pytest.param({"flow_control_ratio": 0.3}, id="flow-control"),
    pytest.param({"drop_ratio": 0.3}, id="drop"),
    pytest.param({"slow_ratio": 0.3}, id="slow"),
    pytest.param({"stuck_ratio": 0.3}, id="stuck"),
    pytest.param({"error_after_success_ratio": 0.3}, id="broken"),
]


def _trace(seed: int, settings: dict[str, Any]) -> list[str]:
    """What a fixed sequence of calls meets: a changeos per server then the job and server."""
    cloud = make_cloud(seed=seed, **settings)
    trace = []
    for sid in SERVERS:
        submitted = answer(cloud, sid)
        trace.append(outcome(submitted))
        if isinstance(submitted.reply, ApiError):
            continue
        shown_job = cloud.show_job(PROJECT, submitted.reply["job_id"], now=20.0)
        trace.append(shown_job["status"] if isinstance(shown_job, dict) else outcome(shown_job))
        shown = cloud.show_server(PROJECT, sid, now=20.0)
        trace.append(shown["server"]["status"] if isinstance(shown, dict) else outcome(shown))
    return trace


@pytest.mark.parametrize("settings", FAULTS_UNDER_TEST)
def test_a_seed_replays_the_same_faults(settings: dict[str, Any]) -> None:
    first = _trace(11, settings)
    assert _trace(11, settings) == first
    assert _trace(12, settings) != first
    assert _trace(11, {}) != first  # the fault did show up


@pytest.mark.parametrize(
    "setting", ["transient_error_ratio", "flow_control_ratio", "drop_ratio", "slow_ratio"]
)
def test_each_attempt_on_a_server_is_a_fresh_draw(setting: str) -> None:
    cloud = make_cloud(job_seconds=0.0, **{setting: 0.5})  # jobs end at once: resubmit freely
    seen = [outcome(answer(cloud, now=float(n))) for n in range(40)]
    assert "ok" in seen
    assert len(set(seen)) >= 2


def test_faults_are_per_server_whatever_the_order_of_calls() -> None:
    def outcomes(order: list[str]) -> dict[str, str]:
        cloud = make_cloud(seed=4, transient_error_ratio=0.5, drop_ratio=0.3)
        return {sid: outcome(answer(cloud, sid)) for sid in order}

    assert outcomes(SERVERS) == outcomes(list(reversed(SERVERS)))


# --- settings at run time --------------------------------------------------------------------


def test_set_faults_changes_only_what_it_is_given() -> None:
    cloud = make_cloud(slow_seconds=3.0)
    settings = cloud.set_faults({"drop_ratio": 1, "job_ttl": 30})
    assert settings["drop_ratio"] == 1.0 and settings["job_ttl"] == 30.0
    assert settings["slow_seconds"] == 3.0
    assert cloud.faults() == settings
    assert answer(cloud).drop
    cloud.set_faults({"drop_ratio": 0})
    assert not answer(cloud, SERVERS[0]).drop
    cloud.reset()
    assert cloud.faults()["drop_ratio"] == 0.0 and cloud.faults()["job_ttl"] is None


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param([], id="not-an-object"),
        pytest.param({"drop_ratio": 1.5}, id="ratio-over-1"),
        pytest.param({"drop_ration": 0.1}, id="unknown"),
        pytest.param({"drop_ratio": None}, id="null-ratio"),
        pytest.param({"drop_ratio": True}, id="bool"),
        pytest.param({"drop_ratio": "0.1"}, id="string"),
        pytest.param({"burst": 2.5, "rate_limit": 1}, id="fractional-burst"),
        pytest.param({"burst": 2}, id="burst-without-rate"),
        pytest.param({"job_seconds_spread": 0.95}, id="spread"),
        pytest.param({"seed": 3}, id="not-a-fault"),
    ],
)
def test_set_faults_rejects_bad_settings_and_keeps_the_old_ones(bad: object) -> None:
    cloud = make_cloud()
    before = cloud.faults()
    with pytest.raises(ValueError):
        cloud.set_faults(bad)
    assert cloud.faults() == before


def test_rate_limit_can_be_turned_on_and_off_at_run_time() -> None:
    cloud = make_cloud()
    cloud.set_faults({"rate_limit": 1, "burst": 2, "retry_after": 4})
    assert [cloud.admit(0.0) is None for _ in range(3)] == [True, True, False]
    cloud.set_faults({"rate_limit": 0})  # 0 or null: off, and burst goes with it
    assert cloud.faults()["burst"] is None
    assert all(cloud.admit(0.0) is None for _ in range(100))
    cloud.set_faults({"rate_limit": 2})
    assert [cloud.admit(0.0) is None for _ in range(3)] == [True, True, False]  # starts full


def test_429_carries_retry_after_when_configured() -> None:
    cloud = make_cloud(rate_limit=1.0, burst=1, retry_after=2.5)
    assert cloud.admit(0.0) is None
    rejected = cloud.admit(0.0)
    assert isinstance(rejected, ApiError)
    assert (rejected.status, rejected.retry_after) == (429, 2.5)
    silent = make_cloud(rate_limit=1.0, burst=1)
    silent.admit(0.0)
    rejected = silent.admit(0.0)
    assert isinstance(rejected, ApiError)
    assert rejected.retry_after is None


def test_config_rejects_impossible_fault_settings() -> None:
    base: dict[str, Any] = {"ak": "AK", "sk": "SK", "project_id": PROJECT}
    for bad in (
        {"transient_error_ratio": 1.1},
        {"flow_control_ratio": -0.1},
        {"drop_ratio": float("nan")},
        {"slow_ratio": 2.0},
        {"stuck_ratio": -1.0},
        {"error_after_success_ratio": 1.5},
        {"slow_seconds": -1.0},
        {"job_ttl": -1.0},
        {"job_ttl": float("inf")},
        {"job_seconds_spread": 0.91},
        {"retry_after": -1.0},
    ):
        with pytest.raises(ValueError):
            SimulatorConfig(**{**base, **bad})
