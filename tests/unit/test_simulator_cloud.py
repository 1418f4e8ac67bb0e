"""The simulated cloud's rules, driven with an explicit `now`: no HTTP, no sleeping."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from orchestrator.simulator.cloud import (
    ApiError,
    Cloud,
    Reply,
    SimulatorConfig,
    password_is_complex,
)

PROJECT = "0605767bd8b5d3f92f0ac0123456789a"
SERVER = "b6f4a5b4-1c8e-4d7c-9a3e-2f1d0c9b8a71"
IMAGE = "e215580f-73ad-429d-b6f2-5433947433b0"
OTHER_IMAGE = "0b6c5d4e-3f2a-4b1c-8d9e-0f1a2b3c4d5e"
# Every key of the ShowServer body captured from the official SDK (sdk-signing-vectors.json).
SHOW_SERVER_KEYS = {
    "id",
    "name",
    "status",
    "addresses",
    "image",
    "flavor",
    "key_name",
    "metadata",
    "OS-EXT-STS:vm_state",
    "OS-EXT-STS:task_state",
    "OS-EXT-STS:power_state",
    "OS-EXT-AZ:availability_zone",
    "tenant_id",
    "user_id",
    "created",
    "updated",
    "os-extended-volumes:volumes_attached",
    "locked",
    "tags",
    "os:scheduler_hints",
    "sys_tags",
    "enterprise_project_id",
}
JOB_KEYS = {
    "status",
    "entities",
    "job_id",
    "job_type",
    "begin_time",
    "end_time",
    "error_code",
    "fail_reason",
}


def make_cloud(**overrides: Any) -> Cloud:
    settings: dict[str, Any] = {"ak": "AK", "sk": "SK", "project_id": PROJECT, "job_seconds": 10.0}
    settings.update(overrides)
    return Cloud(SimulatorConfig(**settings))


def os_change(**fields: Any) -> bytes:
    """A valid v1 body with `fields` changed; a None value removes the field."""
    option: dict[str, Any] = {
        "keyname": "KeyPair-test",
        "userid": "7e25b1da389f4697a79df3a0e5bd494e",
        "imageid": IMAGE,
        "mode": "withStopServer",
    }
    option.update(fields)
    return json.dumps({"os-change": {k: v for k, v in option.items() if v is not None}}).encode()


def submit(
    cloud: Cloud,
    body: bytes | None = None,
    *,
    server: str = SERVER,
    now: float = 0.0,
    cloud_init: bool = False,
    project: str = PROJECT,
) -> Reply:
    return cloud.change_os(
        project, server, os_change() if body is None else body, cloud_init=cloud_init, now=now
    )


def accepted_job_id(reply: Reply) -> str:
    assert not isinstance(reply, ApiError), reply
    job_id = reply["job_id"]
    assert isinstance(job_id, str)
    assert len(job_id) == 32
    int(job_id, 16)
    return job_id


def job(cloud: Cloud, job_id: str, now: float) -> dict[str, Any]:
    reply = cloud.show_job(PROJECT, job_id, now=now)
    assert not isinstance(reply, ApiError), reply
    return reply


def server(cloud: Cloud, now: float, server_id: str = SERVER) -> dict[str, Any]:
    reply = cloud.show_server(PROJECT, server_id, now=now)
    assert not isinstance(reply, ApiError), reply
    body = reply["server"]
    assert isinstance(body, dict)
    return body


def error_of(reply: Reply) -> tuple[int, str]:
    assert isinstance(reply, ApiError), reply
    return reply.status, reply.code


# --- jobs ------------------------------------------------------------------------------------


def test_job_goes_init_then_running_then_success_on_the_clock() -> None:
    cloud = make_cloud(job_seconds=60.0)
    job_id = accepted_job_id(submit(cloud, now=100.0))

    first = job(cloud, job_id, 100.0)
    assert set(first) == JOB_KEYS
    assert first["status"] == "INIT"
    assert first["job_type"] == "changeOS"
    assert first["entities"] == {"server_id": SERVER}  # no sub-jobs yet, as captured
    assert first["end_time"] == ""
    assert first["begin_time"].endswith("Z") and len(first["begin_time"]) == 24

    assert job(cloud, job_id, 100.99)["status"] == "INIT"
    running = job(cloud, job_id, 101.0)  # min(1 s, 10% of 60 s)
    assert running["status"] == "RUNNING"
    assert running["entities"]["sub_jobs_total"] == 1
    assert running["entities"]["sub_jobs"][0]["status"] == "RUNNING"
    assert job(cloud, job_id, 159.99)["status"] == "RUNNING"

    done = job(cloud, job_id, 160.0)
    assert done["status"] == "SUCCESS"
    assert done["error_code"] is None and done["fail_reason"] is None
    assert done["end_time"] > done["begin_time"]
    assert done["entities"]["sub_jobs"][0]["entities"]["errorcode_message"] is None


def test_short_jobs_start_running_after_a_tenth_of_their_time() -> None:
    cloud = make_cloud(job_seconds=2.0)
    job_id = accepted_job_id(submit(cloud, now=0.0))
    assert job(cloud, job_id, 0.19)["status"] == "INIT"
    assert job(cloud, job_id, 0.2)["status"] == "RUNNING"
    assert job(cloud, job_id, 2.0)["status"] == "SUCCESS"


def test_failed_job_keeps_its_code_reason_and_sub_job_message() -> None:
    cloud = make_cloud(fail_ratio=1.0)
    job_id = accepted_job_id(submit(cloud))
    assert job(cloud, job_id, 9.0)["status"] == "RUNNING"
    failed = job(cloud, job_id, 10.0)
    assert failed["status"] == "FAIL"
    assert failed["error_code"] == "Ecs.0202"
    assert failed["fail_reason"] == "Creating the system disk failed."
    sub_job = failed["entities"]["sub_jobs"][0]
    assert sub_job["status"] == "FAIL"
    assert sub_job["entities"]["errorcode_message"]


def _outcomes(cloud: Cloud, server_ids: list[str]) -> list[str]:
    job_ids = [accepted_job_id(submit(cloud, server=sid)) for sid in server_ids]
    return [job(cloud, job_id, 10.0)["status"] for job_id in job_ids]


def test_which_servers_fail_depends_only_on_seed_and_server_id() -> None:
    server_ids = [f"00000000-0000-4000-8000-{n:012d}" for n in range(300)]
    first = _outcomes(make_cloud(fail_ratio=0.5, seed=7), server_ids)
    again = _outcomes(make_cloud(fail_ratio=0.5, seed=7), list(reversed(server_ids)))
    other_seed = _outcomes(make_cloud(fail_ratio=0.5, seed=8), server_ids)

    assert first == list(reversed(again))
    assert first != other_seed
    assert 0.35 < first.count("FAIL") / len(first) < 0.65
    assert set(_outcomes(make_cloud(fail_ratio=0.0), server_ids[:50])) == {"SUCCESS"}
    assert set(_outcomes(make_cloud(fail_ratio=1.0), server_ids[:50])) == {"FAIL"}


def test_unknown_job_id_is_common_0011() -> None:
    cloud = make_cloud()
    reply = cloud.show_job(PROJECT, "ff80808288d41e1b018990260955686a", now=0.0)
    assert error_of(reply) == (400, "Common.0011")
    assert isinstance(reply, ApiError)
    assert reply.body("rid") == {
        "error": {"code": "Common.0011", "message": reply.message, "details": []}
    }


# --- servers ---------------------------------------------------------------------------------


def test_any_uuid_is_a_deterministic_active_server_with_an_old_image() -> None:
    body = server(make_cloud(seed=3), now=0.0)
    assert set(body) == SHOW_SERVER_KEYS
    assert body["id"] == SERVER
    assert body["name"] == "ecs-b6f4a5b4"
    assert body["status"] == "ACTIVE"
    assert body["OS-EXT-STS:vm_state"] == "active"
    assert body["OS-EXT-STS:task_state"] == ""
    assert body["locked"] is False
    assert body["tags"] == []
    assert body["metadata"]["charging_mode"] == "0"
    assert body["metadata"]["os_type"] == "Linux"
    assert body["metadata"]["metering.image_id"] == body["image"]["id"]
    assert [v["bootIndex"] for v in body["os-extended-volumes:volumes_attached"]] == ["0"]
    assert body["image"]["id"] not in (IMAGE, OTHER_IMAGE)

    assert server(make_cloud(seed=3), now=0.0) == body
    assert server(make_cloud(seed=4), now=0.0)["image"]["id"] != body["image"]["id"]


def test_server_id_that_is_not_a_uuid_does_not_exist() -> None:
    cloud = make_cloud()
    assert error_of(cloud.show_server(PROJECT, "odd id~é", now=0.0)) == (404, "Ecs.0114")


def test_server_rebuilds_while_the_job_runs_then_shows_the_new_image() -> None:
    cloud = make_cloud()
    old_image = server(cloud, 0.0)["image"]["id"]
    accepted_job_id(submit(cloud, now=0.0))

    during = server(cloud, 5.0)
    assert during["status"] == "REBUILD"
    assert during["OS-EXT-STS:task_state"] == "rebuilding"
    assert during["OS-EXT-STS:vm_state"] == "active"
    assert during["image"]["id"] == old_image

    after = server(cloud, 10.0)
    assert after["status"] == "ACTIVE"
    assert after["OS-EXT-STS:task_state"] == ""
    assert after["image"]["id"] == IMAGE
    assert after["metadata"]["metering.image_id"] == IMAGE


def system_disk(body: dict[str, Any]) -> str:
    volumes = body["os-extended-volumes:volumes_attached"]
    return str(next(v["id"] for v in volumes if v["bootIndex"] == "0"))


def test_failed_change_leaves_the_image_and_the_server_in_error_on_a_new_disk() -> None:
    cloud = make_cloud(fail_ratio=1.0)
    cloud.add_server(now=0.0, server_id=SERVER, status="SHUTOFF")
    before = server(cloud, 0.0)
    accepted_job_id(submit(cloud, os_change(mode=None), now=2.0))
    running = server(cloud, 5.0)
    assert running["status"] == "REBUILD"
    after = server(cloud, 13.0)
    assert (after["status"], after["OS-EXT-STS:vm_state"]) == ("ERROR", "error")
    assert after["OS-EXT-STS:task_state"] == ""
    assert after["image"]["id"] == before["image"]["id"]
    # The old system disk is gone with the attempt, and the server says when it changed.
    assert system_disk(running) == system_disk(after) != system_disk(before)
    assert before["updated"] < running["updated"] < after["updated"]


def test_a_successful_change_replaces_the_system_disk_and_moves_updated() -> None:
    cloud = make_cloud()
    before = server(cloud, 0.0)
    accepted_job_id(submit(cloud, now=2.0))
    after = server(cloud, 13.0)
    assert after["image"]["id"] == IMAGE
    assert system_disk(after) != system_disk(before)
    assert before["updated"] < after["updated"]


def test_a_second_change_while_one_runs_is_busy_ecs_0603() -> None:
    cloud = make_cloud()
    accepted_job_id(submit(cloud, now=0.0))
    assert error_of(submit(cloud, now=9.9)) == (501, "Ecs.0603")
    accepted_job_id(submit(cloud, os_change(imageid=OTHER_IMAGE), now=10.0))


# --- changeos validation ---------------------------------------------------------------------

BIG_USER_DATA = base64.b64encode(b"x" * 32769).decode()
MAX_USER_DATA = base64.b64encode(b"x" * 32768).decode()
USER_DATA = base64.b64encode(b"#cloud-config\nhostname: sim\n").decode()
NO_CREDENTIALS: dict[str, Any] = {"keyname": None, "userid": None}


@pytest.mark.parametrize(
    ("body", "cloud_init", "code"),
    [
        pytest.param(b"{not json", False, "Ecs.0005", id="not-json"),
        pytest.param(b'{"change": {}}', False, "Ecs.0005", id="no-os-change"),
        pytest.param(b'{"os-change": "x"}', False, "Ecs.0005", id="os-change-not-object"),
        pytest.param(os_change(imageid=None), False, "Ecs.0005", id="imageid-missing"),
        pytest.param(os_change(imageid="ubuntu-22"), False, "Ecs.0005", id="imageid-not-uuid"),
        pytest.param(os_change(adminpass="Abcdefg1!"), False, "Ecs.0005", id="v1-both"),
        pytest.param(os_change(**NO_CREDENTIALS), False, "Ecs.0005", id="v1-neither"),
        pytest.param(
            os_change(**NO_CREDENTIALS, metadata={"user_data": USER_DATA}),
            False,
            "Ecs.0005",
            id="v1-neither-with-user-data",
        ),
        pytest.param(os_change(adminpass="Abcdefg1!"), True, "Ecs.0005", id="v2-both"),
        pytest.param(os_change(**NO_CREDENTIALS), True, "Ecs.0005", id="v2-neither"),
        pytest.param(os_change(keyname=7), False, "Ecs.0005", id="keyname-not-string"),
        pytest.param(os_change(metadata="BYOL"), False, "Ecs.0005", id="metadata-not-object"),
        pytest.param(
            os_change(**NO_CREDENTIALS, adminpass="Ab1!"), False, "Ecs.0011", id="pw-short"
        ),
        pytest.param(
            os_change(**NO_CREDENTIALS, adminpass="Abcdefgh1!" * 3), False, "Ecs.0011", id="pw-long"
        ),
        pytest.param(
            os_change(**NO_CREDENTIALS, adminpass="abcdefgh12"), False, "Ecs.0011", id="pw-2-kinds"
        ),
        pytest.param(
            os_change(**NO_CREDENTIALS, adminpass="Abcdefg1 "), False, "Ecs.0011", id="pw-space"
        ),
        pytest.param(os_change(metadata={"BYOL": "false"}), False, "Ecs.0005", id="byol-false"),
        pytest.param(os_change(mode="force"), False, "Ecs.0005", id="mode-other"),
        pytest.param(
            os_change(metadata={"user_data": USER_DATA}), False, "Ecs.0005", id="v1-user-data"
        ),
        pytest.param(
            os_change(metadata={"user_data": "not base64!"}),
            True,
            "Ecs.0005",
            id="user-data-not-base64",
        ),
        pytest.param(
            os_change(metadata={"user_data": BIG_USER_DATA}),
            True,
            "Ecs.0005",
            id="user-data-over-32k",
        ),
        # Order: the password is checked before BYOL, BYOL before mode.
        pytest.param(
            os_change(**NO_CREDENTIALS, adminpass="short", metadata={"BYOL": "no"}),
            False,
            "Ecs.0011",
            id="pw-before-byol",
        ),
    ],
)
def test_invalid_bodies_are_rejected_with_their_code(
    body: bytes, cloud_init: bool, code: str
) -> None:
    cloud = make_cloud()
    assert error_of(submit(cloud, body, cloud_init=cloud_init)) == (400, code)
    assert cloud.stats(0.0)["errors_by_code"] == {code: 1}
    assert cloud.stats(0.0)["changeos_accepted"] == {}


@pytest.mark.parametrize(
    ("body", "cloud_init"),
    [
        pytest.param(os_change(**NO_CREDENTIALS, adminpass="Abcdefg1!"), False, id="v1-password"),
        pytest.param(os_change(**NO_CREDENTIALS, adminpass="abcdefg1!"), False, id="pw-3-kinds"),
        pytest.param(os_change(metadata={"BYOL": "true"}), False, id="byol-true"),
        pytest.param(
            os_change(**NO_CREDENTIALS, metadata={"user_data": USER_DATA}),
            True,
            id="v2-password-from-user-data",
        ),
        pytest.param(os_change(metadata={"user_data": MAX_USER_DATA}), True, id="v2-32k-exactly"),
        pytest.param(os_change(adminpass=None), True, id="v2-keyname"),
    ],
)
def test_valid_bodies_are_accepted(body: bytes, cloud_init: bool) -> None:
    accepted_job_id(submit(make_cloud(), body, cloud_init=cloud_init))


def test_password_complexity_rule() -> None:
    assert password_is_complex("Abcdefg1")
    assert password_is_complex("abc-def_12")
    assert password_is_complex("A" * 20 + "b1?#*~")
    assert not password_is_complex("Abcdef1")  # 7 characters
    assert not password_is_complex("Abcdefgh1" * 3)  # 27 characters
    assert not password_is_complex("ABCDEFGH")
    assert not password_is_complex("Abcdefg1&")  # '&' is not an allowed special


def test_unknown_image_is_ecs_0031_when_images_are_listed() -> None:
    cloud = make_cloud(images=frozenset({OTHER_IMAGE.upper()}))
    assert error_of(submit(cloud)) == (400, "Ecs.0031")
    # The image check comes before the server lookup.
    assert error_of(submit(cloud, server="not-a-uuid")) == (400, "Ecs.0031")
    accepted_job_id(submit(cloud, os_change(imageid=OTHER_IMAGE)))


def test_server_not_a_uuid_is_404_ecs_0114() -> None:
    assert error_of(submit(make_cloud(), server="i-123")) == (404, "Ecs.0114")


@pytest.mark.parametrize(
    ("attributes", "code"),
    [
        pytest.param({"locked": True}, "Ecs.0605", id="locked"),
        pytest.param({"has_system_disk": False}, "Ecs.0105", id="no-system-disk"),
        pytest.param({"charging_mode": "2"}, "Ecs.0100", id="spot"),
        pytest.param({"locked": True, "charging_mode": "2"}, "Ecs.0605", id="locked-first"),
    ],
)
def test_server_conditions_are_rejected(attributes: dict[str, Any], code: str) -> None:
    cloud = make_cloud()
    cloud.add_server(now=0.0, server_id=SERVER, **attributes)
    assert error_of(submit(cloud)) == (400, code)


def test_running_server_needs_with_stop_server_mode() -> None:
    cloud = make_cloud()
    assert error_of(submit(cloud, os_change(mode=None))) == (400, "Ecs.0100")
    stopped = cloud.add_server(now=0.0, status="SHUTOFF")
    accepted_job_id(submit(cloud, os_change(mode=None), server=stopped))


def test_busy_is_checked_before_the_running_state() -> None:
    cloud = make_cloud()
    accepted_job_id(submit(cloud))
    assert error_of(submit(cloud, os_change(mode=None), now=1.0)) == (501, "Ecs.0603")


def test_project_id_in_the_url_must_be_the_configured_one() -> None:
    cloud = make_cloud()
    other = "ffffffffffffffffffffffffffffffff"
    assert error_of(submit(cloud, project=other)) == (400, "Ecs.0023")
    assert error_of(cloud.show_server(other, SERVER, now=0.0)) == (400, "Ecs.0023")
    assert error_of(cloud.show_job(other, "0" * 32, now=0.0)) == (400, "Ecs.0023")
    assert error_of(cloud.list_servers(other, {}, now=0.0)) == (400, "Ecs.0023")


# --- stats -----------------------------------------------------------------------------------


def test_duplicate_submissions_count_a_second_change_to_the_same_image() -> None:
    cloud = make_cloud()
    accepted_job_id(submit(cloud, now=0.0))
    accepted_job_id(submit(cloud, os_change(imageid=OTHER_IMAGE), now=10.0))
    assert cloud.stats(20.0)["duplicate_submissions"] == 0
    accepted_job_id(submit(cloud, now=20.0))  # IMAGE again: its first change succeeded
    stats = cloud.stats(30.0)
    assert stats["duplicate_submissions"] == 1
    assert stats["changeos_accepted"] == {SERVER: 3}


def test_resubmitting_after_a_failed_job_is_a_duplicate_too() -> None:
    """Only an operator may send a change again after a failure: the server is in ERROR on a
    half-built disk, so the simulator counts a second change however the first one ended."""
    cloud = make_cloud(fail_ratio=1.0)
    accepted_job_id(submit(cloud, now=0.0))
    assert cloud.stats(10.0)["duplicate_submissions"] == 0
    accepted_job_id(submit(cloud, now=10.0))
    assert cloud.stats(20.0)["duplicate_submissions"] == 1


def test_changeos_calls_are_logged_with_time_and_answer() -> None:
    cloud = make_cloud(rate_limit=1.0, burst=1)
    accepted_job_id(submit(cloud, now=0.0))
    assert error_of(submit(cloud, now=1.0)) == (501, "Ecs.0603")
    cloud.changeos_turned_away(SERVER, "APIGW.0308", now=1.5)
    calls = cloud.changeos_calls()
    assert [(c["server_id"], c["answer"]) for c in calls] == [
        (SERVER, "accepted"),
        (SERVER, "Ecs.0603"),
        (SERVER, "APIGW.0308"),
    ]
    assert [round(c["at"] - calls[0]["at"], 3) for c in calls] == [0.0, 1.0, 1.5]
    assert cloud.changeos_calls(since=calls[1]["at"]) == calls[1:]
    assert cloud.stats(2.0)["changeos_received_by_server"] == {SERVER: 3}


def test_stats_report_requests_concurrency_and_truth() -> None:
    cloud = make_cloud()
    servers = [cloud.add_server(now=0.0) for _ in range(4)]
    job_ids = [
        accepted_job_id(submit(cloud, server=sid, now=float(i)))
        for i, sid in enumerate(servers[:3])
    ]
    accepted_job_id(submit(cloud, server=servers[3], now=50.0))  # the others are done by then
    cloud.show_job(PROJECT, job_ids[0], now=50.0)
    cloud.show_server(PROJECT, servers[0], now=50.0)
    cloud.list_servers(PROJECT, {}, now=50.0)
    submit(cloud, b"{}", now=50.0)

    stats = cloud.stats(55.0)
    assert stats["max_concurrent_jobs"] == 3
    assert stats["requests"] == {
        "changeos": 5,
        "show_job": 1,
        "show_server": 1,
        "list_servers": 1,
        "rejected_429": 0,
        "list_images": 0,
        "list_flavors": 0,
        "show_volume": 0,
        "list_volumes": 0,
        "create_image": 0,
        "show_image_job": 0,
        "image_quota": 0,
        "delete_image": 0,
        "list_server_groups": 0,
        "show_server_group": 0,
    }
    assert stats["errors_by_code"] == {"Ecs.0005": 1}
    assert stats["changeos_accepted"] == dict.fromkeys(servers, 1)
    assert stats["truth"][servers[0]] == {
        "job_id": job_ids[0],
        "job_status": "SUCCESS",
        "image_id": IMAGE,
        "status": "ACTIVE",
    }
    assert stats["truth"][servers[3]]["job_status"] == "RUNNING"
    assert stats["truth"][servers[3]]["status"] == "REBUILD"
    json.dumps(stats)  # served as JSON as is

    assert stats["concurrent_jobs_now"] == 1
    assert stats["changeos_received_by_server"] == {**dict.fromkeys(servers, 1), SERVER: 1}

    cloud.reset()
    assert cloud.stats(0.0) == {
        "changeos_accepted": {},
        "duplicate_submissions": 0,
        "requests": dict.fromkeys(stats["requests"], 0),
        "errors_by_code": {},
        "max_concurrent_jobs": 0,
        "truth": {},
        "faults": {
            "transient": 0,
            "flow_control": 0,
            "dropped": 0,
            "dropped_failing": 0,
            "slow": 0,
            "stuck": 0,
            "purged": 0,
            "broken": 0,
        },
        "changeos_received_by_server": {},
        "concurrent_jobs_now": 0,
        "incompatible_changeos": 0,
        "incompatible_changeos_by_server": {},
        "health_probes": 0,
        "health_probes_by_server": {},
        "healthy_since_by_server": {},
        "first_healthy_probe_by_server": {},
        "images_created": 0,
        "images_deleted": 0,
        "jobs_by_zone": {},
        "peak_jobs_by_zone": {},
        "peak_jobs_by_group": {},
    }


# --- rate limit ------------------------------------------------------------------------------


def test_token_bucket_allows_a_burst_then_refills_at_the_rate() -> None:
    cloud = make_cloud(rate_limit=2.0, burst=3)
    assert [cloud.admit(0.0) for _ in range(3)] == [None, None, None]
    rejected = cloud.admit(0.0)
    assert isinstance(rejected, ApiError)
    assert (rejected.status, rejected.code) == (429, "APIGW.0308")
    assert rejected.body("abc") == {
        "error_code": "APIGW.0308",
        "error_msg": "The throttling threshold has been reached: "
        "policy user over ratelimit,limit:2,time:1 second",
        "request_id": "abc",
    }
    assert cloud.admit(0.5) is None  # one token back after half a second at 2/s
    assert cloud.admit(0.5) is not None
    assert [cloud.admit(100.0) for _ in range(3)] == [None, None, None]  # capped at the burst
    assert cloud.admit(100.0) is not None
    stats = cloud.stats(100.0)
    assert stats["requests"]["rejected_429"] == 3
    assert stats["errors_by_code"] == {"APIGW.0308": 3}


def test_no_rate_limit_admits_everything() -> None:
    cloud = make_cloud()
    assert all(cloud.admit(0.0) is None for _ in range(10_000))


def test_burst_defaults_to_one_second_of_the_rate() -> None:
    cloud = make_cloud(rate_limit=5.0)
    assert [cloud.admit(0.0) is None for _ in range(6)] == [True] * 5 + [False]


# --- listing ---------------------------------------------------------------------------------


def _listed(cloud: Cloud, query: dict[str, str], now: float = 0.0) -> tuple[int, list[str]]:
    reply = cloud.list_servers(PROJECT, query, now=now)
    assert not isinstance(reply, ApiError), reply
    return reply["count"], [s["id"] for s in reply["servers"]]


def test_list_filters_by_name_status_and_tags() -> None:
    cloud = make_cloud()
    web1 = cloud.add_server(now=0.0, name="web-01", tags=["env=prod"])
    web2 = cloud.add_server(now=0.0, name="web-02", tags=["env=test"], status="SHUTOFF")
    db1 = cloud.add_server(now=0.0, name="db-01", tags=["env=prod"])
    assert _listed(cloud, {}) == (3, [web1, web2, db1])
    assert _listed(cloud, {"name": "web"}) == (2, [web1, web2])
    assert _listed(cloud, {"tags": "env=prod"}) == (2, [web1, db1])
    assert _listed(cloud, {"not-tags": "env=prod"}) == (1, [web2])
    assert _listed(cloud, {"status": "SHUTOFF"}) == (1, [web2])
    assert _listed(cloud, {"server_id": f"{db1},{web2}", "name": "zzz"}) == (2, [web2, db1])
    accepted_job_id(submit(cloud, server=db1))
    # ACTIVE also matches REBUILD, as documented.
    assert _listed(cloud, {"status": "ACTIVE"}, now=1.0) == (2, [web1, db1])
    assert _listed(cloud, {"status": "REBUILD"}, now=1.0) == (1, [db1])


def test_list_pages_by_offset_and_rejects_bad_paging() -> None:
    cloud = make_cloud()
    ids = [cloud.add_server(now=0.0) for _ in range(30)]
    assert _listed(cloud, {}) == (30, ids[:25])  # default limit 25
    assert _listed(cloud, {"limit": "10", "offset": "3"}) == (30, ids[20:30])
    assert _listed(cloud, {"limit": "10", "offset": "0"}) == (30, ids[:10])
    assert _listed(cloud, {"limit": "1000"}) == (30, ids)
    for bad in ({"limit": "1001"}, {"limit": "0"}, {"limit": "x"}, {"marker": SERVER}):
        assert error_of(cloud.list_servers(PROJECT, bad, now=0.0)) == (400, "Ecs.0005")


def test_config_rejects_impossible_settings() -> None:
    base: dict[str, Any] = {"ak": "AK", "sk": "SK", "project_id": PROJECT}
    for bad in (
        {"fail_ratio": 1.5},
        {"fail_ratio": -0.1},
        {"job_seconds": -1.0},
        {"images": frozenset({"not-a-uuid"})},
        {"rate_limit": 0.0},
        {"burst": 3},
        {"rate_limit": 1.0, "burst": 0},
        {"ak": ""},
    ):
        with pytest.raises(ValueError):
            SimulatorConfig(**{**base, **bad})
