"""What a health gate and a backup meet in the simulator: the per-server health endpoint (jobs,
broken images, boot time), IMS images made from servers (CreateImage's rules, the image going
from saving to active or killed, its job on the shared job path, the quota, deletion, the log of
calls) and the "busy" refusals between a backup and a change of OS; on the model with an
explicit `now`, and over HTTP with an injected clock."""

from __future__ import annotations

import argparse
import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from orchestrator.simulator.app import SIMULATOR
from orchestrator.simulator.cli import add_simulate_arguments, config_from_args
from orchestrator.simulator.cloud import Cloud, Reply, ServerSpec, SimulatorConfig
from orchestrator.simulator.faults import FAULT_FIELDS
from orchestrator.simulator.images import ImageSpec, base_image, parse_images
from orchestrator.simulator.shared import Timestamps
from tests.support.clocks import ManualClock
from tests.unit.test_simulator_app import (
    AK,
    SK,
    Client,
    ClientFactory,
    call,
    make_app,
    signed_headers,
)
from tests.unit.test_simulator_cloud import (
    IMAGE,
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

ARM_SERVER = "3c1d2e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
BROKEN_IMAGE = "b0b0b0b0-0000-4000-8000-000000000001"
ARM_UEFI_IMAGE = "a1a1a1a1-0000-4000-8000-000000000001"
PUBLIC_IMAGE = "a1a1a1a1-0000-4000-8000-000000000002"
PROTECTED_IMAGE = "a1a1a1a1-0000-4000-8000-000000000003"
SHARED_IMAGE = "a1a1a1a1-0000-4000-8000-000000000004"
SAVING_IMAGE = "a1a1a1a1-0000-4000-8000-000000000005"
UNKNOWN = "ffffffff-0000-4000-8000-00000000ffff"
CATALOG = (
    ImageSpec(id=IMAGE, name="web-euleros"),
    ImageSpec(id=BROKEN_IMAGE, name="web-broken"),
    ImageSpec(
        id=ARM_UEFI_IMAGE,
        name="web-arm-uefi",
        architecture="arm",
        firmware="uefi",
        os_type="Other",
        os_version="Ubuntu 22.04 64bit",
        platform="Ubuntu",
        cloud_init=False,
    ),
    ImageSpec(id=PUBLIC_IMAGE, name="EulerOS 2.9", visibility="public"),
    ImageSpec(id=PROTECTED_IMAGE, name="golden", protected=True),
    ImageSpec(id=SHARED_IMAGE, name="from-another-project", visibility="shared"),
    ImageSpec(id=SAVING_IMAGE, name="half-made", status="saving"),
)
# Private images of the catalog, the base image aside: IMAGE, BROKEN, ARM_UEFI, PROTECTED, SAVING.
CATALOG_PRIVATE = 5
INVENTORY = (
    ServerSpec(id=SERVER),
    ServerSpec(
        id=ARM_SERVER, flavor_id="kc1.large.2", image_id=ARM_UEFI_IMAGE, system_disk_size=60
    ),
)
IMS_TIME = re.compile(r"\d{2}-[A-Z][a-z]{2}-\d{4} \d{2}:\d{2}:\d{2}:\d{3}")
IMS_JOB_KEYS = {
    "status",
    "job_id",
    "job_type",
    "begin_time",
    "end_time",
    "error_code",
    "fail_reason",
    "entities",
}


def backup_cloud(**overrides: Any) -> Cloud:
    settings: dict[str, Any] = {"image_specs": CATALOG, "inventory": INVENTORY}
    settings.update(overrides)
    return make_cloud(**settings)


def backup_body(**fields: Any) -> bytes:
    """A valid CreateImage body with `fields` changed; a None value removes the field."""
    body: dict[str, Any] = {"name": "backup-web-1", "instance_id": SERVER}
    body.update(fields)
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


def create(cloud: Cloud, body: bytes | None = None, *, now: float = 0.0) -> Reply:
    return cloud.create_image(PROJECT, backup_body() if body is None else body, now=now)


def ok(reply: Reply) -> dict[str, Any]:
    assert isinstance(reply, dict), reply
    return reply


def image_job(cloud: Cloud, job_id: str, now: float) -> dict[str, Any]:
    return ok(cloud.show_job(PROJECT, job_id, now=now))


def backup_image_id(cloud: Cloud, now: float = 0.0, **fields: Any) -> str:
    """Make an image of SERVER (or `instance_id`); answer its id."""
    job_id = accepted_job_id(create(cloud, backup_body(**fields), now=now))
    image_id = image_job(cloud, job_id, now)["entities"]["image_id"]
    assert isinstance(image_id, str)
    return image_id


def listed(cloud: Cloud, image_id: str, now: float) -> dict[str, Any] | None:
    images = ok(cloud.list_images(PROJECT, {"id": image_id}, now=now))["images"]
    assert len(images) <= 1
    return images[0] if images else None


def quota_used(cloud: Cloud, now: float = 0.0) -> int:
    [resource] = ok(cloud.image_quota(PROJECT, now=now))["quotas"]["resources"]
    assert isinstance(resource["used"], int)
    return resource["used"]


def health(cloud: Cloud, now: float, server_id: str = SERVER) -> dict[str, Any]:
    return cloud.probe_health(server_id, now=now)


def change_to(cloud: Cloud, image_id: str, now: float, server_id: str = SERVER) -> str:
    return accepted_job_id(submit(cloud, os_change(imageid=image_id), server=server_id, now=now))


# --- health ----------------------------------------------------------------------------------


def test_a_server_never_changed_is_healthy_and_a_change_makes_it_wait_for_its_boot() -> None:
    cloud = backup_cloud(job_seconds=10.0, boot_seconds=30.0)
    before = health(cloud, 5.0)
    assert before == {
        "healthy": True,
        "server_id": SERVER,
        "status": "ACTIVE",
        "image_id": base_image(0).id,
        "healthy_since": 0.0,
    }
    change_to(cloud, IMAGE, now=100.0)
    during = health(cloud, 105.0)
    assert (during["healthy"], during["status"]) == (False, "REBUILD")
    assert "REBUILD" in during["why"]
    booting = health(cloud, 110.0)  # the job ended: ACTIVE on the new image, not up yet
    assert (booting["healthy"], booting["image_id"]) == (False, IMAGE)
    assert booting["why"] == "still booting: up in 30.0 s"
    assert not health(cloud, 139.9)["healthy"]
    up = health(cloud, 140.0)
    assert (up["healthy"], up["healthy_since"], up["image_id"]) == (True, 140.0, IMAGE)


def test_a_broken_image_is_never_healthy_until_it_is_no_longer_listed() -> None:
    cloud = backup_cloud(job_seconds=10.0, broken_images=frozenset({BROKEN_IMAGE}))
    change_to(cloud, BROKEN_IMAGE, now=0.0)
    late = health(cloud, 10_000.0)
    assert (late["healthy"], late["status"], late["image_id"]) == (False, "ACTIVE", BROKEN_IMAGE)
    assert late["why"] == f"the image {BROKEN_IMAGE} boots broken"
    assert cloud.stats(10_000.0)["healthy_since_by_server"] == {SERVER: None}
    cloud.set_faults({"broken_images": [], "boot_seconds": 5})
    assert health(cloud, 10_000.0)["healthy_since"] == 15.0  # the job's end plus boot time


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        pytest.param(ServerSpec(id=SERVER, status="SHUTOFF"), "the server is SHUTOFF", id="off"),
        pytest.param(ServerSpec(id=SERVER, status="ERROR"), "the server is ERROR", id="error"),
        pytest.param(
            ServerSpec(id=SERVER, task_state="powering-on"),
            "the server is busy (powering-on)",
            id="busy",
        ),
        pytest.param(ServerSpec(id=SERVER, missing=True), "no such server", id="missing"),
    ],
)
def test_servers_that_are_not_up_and_idle_are_unhealthy(spec: ServerSpec, why: str) -> None:
    cloud = backup_cloud(inventory=(spec,))
    answer = health(cloud, 0.0)
    assert (answer["healthy"], answer["why"]) == (False, why)


def test_a_failed_change_leaves_the_server_unhealthy_and_unknown_ids_are_no_servers() -> None:
    cloud = backup_cloud(fail_ratio=1.0, strict_inventory=True)
    change_to(cloud, IMAGE, now=0.0)
    assert health(cloud, 50.0)["why"] == "the server is ERROR"
    assert health(cloud, 0.0, UNKNOWN)["why"] == "no such server"
    assert health(cloud, 0.0, "not-a-uuid")["why"] == "no such server"


def test_a_server_busy_for_a_while_is_healthy_from_the_end_of_its_task() -> None:
    cloud = backup_cloud(inventory=(ServerSpec(id=SERVER, busy_for_s=20.0),))
    assert not health(cloud, 19.0)["healthy"]
    assert health(cloud, 20.0)["healthy_since"] == 20.0


def test_probes_are_counted_apart_from_api_requests_with_the_first_healthy_per_job() -> None:
    cloud = backup_cloud(job_seconds=10.0, boot_seconds=5.0)
    health(cloud, 1.0)  # healthy before any job
    change_to(cloud, IMAGE, now=2.0)
    for now in (4.0, 12.0, 17.0, 18.0):  # REBUILD, booting, healthy, healthy
        health(cloud, now)
    health(cloud, 1.0, ARM_SERVER)
    stats = cloud.stats(20.0)
    assert stats["health_probes"] == 6
    assert stats["health_probes_by_server"] == {SERVER: 5, ARM_SERVER: 1}
    # Since its latest job, or since it exists for a server never changed.
    assert stats["first_healthy_probe_by_server"] == {SERVER: 17.0, ARM_SERVER: 1.0}
    assert stats["healthy_since_by_server"] == {SERVER: 17.0, ARM_SERVER: 0.0}
    assert stats["requests"]["show_server"] == 0 and sum(stats["requests"].values()) == 1
    change_to(cloud, IMAGE, now=30.0)  # a new job: no healthy answer since
    assert cloud.stats(31.0)["first_healthy_probe_by_server"] == {ARM_SERVER: 1.0}
    assert cloud.stats(31.0)["healthy_since_by_server"] == {SERVER: None, ARM_SERVER: 0.0}


def test_the_health_of_a_server_is_not_affected_by_an_image_being_made_from_it() -> None:
    cloud = backup_cloud()
    accepted_job_id(create(cloud))
    assert health(cloud, 1.0)["healthy"]


# --- CreateImage: the rules ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param(b"", "IMG.0007", id="empty"),
        pytest.param(b"{}", "IMG.0007", id="empty-object"),
        pytest.param(b"{not json", "IMG.0001", id="not-json"),
        pytest.param(b"[]", "IMG.0001", id="not-an-object"),
        pytest.param(backup_body(image_url="obs:x"), "IMG.0001", id="obs-mode"),
        pytest.param(backup_body(instance_id=None, volume_id=UNKNOWN), "IMG.0001", id="volume"),
        pytest.param(backup_body(data_images=[]), "IMG.0001", id="data-images"),
        pytest.param(
            backup_body(tags=["a.b"], image_tags=[{"key": "a", "value": "b"}]),
            "IMG.0001",
            id="both-tag-forms",
        ),
        pytest.param(backup_body(tags="a.b"), "IMG.0001", id="tags-not-a-list"),
        pytest.param(backup_body(image_tags=[{"value": "b"}]), "IMG.0001", id="tag-without-key"),
        pytest.param(backup_body(name=None), "IMG.0013", id="name-missing"),
        pytest.param(backup_body(name=""), "IMG.0013", id="name-empty"),
        pytest.param(backup_body(name=7), "IMG.0001", id="name-not-a-string"),
        pytest.param(backup_body(name="n" * 129), "IMG.0002", id="name-too-long"),
        pytest.param(backup_body(name="web/backup"), "IMG.0003", id="name-bad-character"),
        pytest.param(backup_body(name=" backup"), "IMG.0003", id="name-leading-space"),
        pytest.param(backup_body(description="d" * 1025), "IMG.0004", id="description-long"),
        pytest.param(backup_body(instance_id=None), "IMG.0012", id="instance-id-missing"),
        pytest.param(backup_body(instance_id=""), "IMG.0012", id="instance-id-empty"),
        pytest.param(backup_body(instance_id=UNKNOWN), "IMG.0005", id="unknown-server"),
        pytest.param(backup_body(instance_id="web-01"), "IMG.0005", id="not-a-server-id"),
        pytest.param(backup_body(name="web-euleros"), "IMG.0009", id="name-in-use"),
        pytest.param(backup_body(min_ram=-1), "IMG.0001", id="bad-min-ram"),
    ],
)
def test_create_image_refuses_bodies_with_the_ims_codes(body: bytes, code: str) -> None:
    cloud = backup_cloud(strict_inventory=True)
    reply = create(cloud, body)
    assert error_of(reply) == (400, code)
    assert not isinstance(reply, dict)
    assert reply.body("rid") == {"error": {"code": code, "message": reply.message}}
    assert cloud.stats(0.0)["images_created"] == 0
    assert quota_used(cloud) == CATALOG_PRIVATE  # nothing was made


def test_create_image_refuses_servers_without_a_usable_system_disk() -> None:
    diskless = "22222222-2222-4222-8222-222222222222"
    huge = "33333333-3333-4333-8333-333333333333"
    cloud = backup_cloud(
        inventory=(
            ServerSpec(id=diskless, has_system_disk=False),
            ServerSpec(id=huge, system_disk_size=2048),
        )
    )
    assert error_of(create(cloud, backup_body(instance_id=diskless))) == (400, "IMG.0119")
    assert error_of(create(cloud, backup_body(instance_id=huge))) == (400, "IMG.0006")


def test_create_image_refuses_a_server_with_tasks_in_progress() -> None:
    cloud = backup_cloud(job_seconds=10.0)
    change_to(cloud, IMAGE, now=0.0)
    assert error_of(create(cloud, now=5.0)) == (400, "IMG.0010")  # a change of OS runs
    accepted_job_id(create(cloud, now=10.0))  # it ended
    second = backup_body(name="backup-web-2")
    assert error_of(create(cloud, second, now=11.0)) == (400, "IMG.0010")  # a backup runs
    accepted_job_id(create(cloud, second, now=12.0))
    busy = backup_cloud(inventory=(ServerSpec(id=SERVER, busy_for_s=60),))
    assert error_of(create(busy, now=0.0)) == (400, "IMG.0010")


def test_create_image_checks_the_x_project_id_header() -> None:
    cloud = backup_cloud()
    reply = cloud.create_image("ffffffffffffffffffffffffffffffff", backup_body(), now=0.0)
    assert error_of(reply) == (403, "IMG.0403")
    assert accepted_job_id(cloud.create_image(None, backup_body(), now=0.0))  # no header: ours


# --- CreateImage: the image and its job ------------------------------------------------------


def test_the_image_is_listed_saving_at_once_and_active_when_its_job_ends() -> None:
    cloud = backup_cloud(backup_seconds=30.0)
    body = backup_body(
        instance_id=ARM_SERVER,
        description="before the change",
        image_tags=[{"key": "reimage", "value": "backup"}],
    )
    job_id = accepted_job_id(create(cloud, body, now=100.0))
    image_id = image_job(cloud, job_id, 100.0)["entities"]["image_id"]
    saving = listed(cloud, image_id, 100.0)
    assert saving is not None and saving["status"] == "saving"
    assert "active_at" not in saving
    assert (saving["min_disk"], saving["__os_type"], saving["__platform"]) == (
        60,
        "Other",
        "Ubuntu",
    )
    assert (saving["__support_arm"], saving["hw_firmware_type"]) == ("true", "uefi")
    assert saving["__support_fc_inject"] == "true"  # no Cloud-Init, as the image it ran
    assert (saving["__imagetype"], saving["visibility"], saving["protected"]) == (
        "private",
        "private",
        False,
    )
    assert (saving["owner"], saving["virtual_env_type"]) == (PROJECT, "FusionCompute")
    assert saving["__originalimagename"] == ARM_UEFI_IMAGE
    assert saving["__data_origin"] == f"instance,{ARM_SERVER}"
    assert (saving["tags"], saving["__description"]) == (["reimage.backup"], "before the change")
    assert (saving["name"], saving["enterprise_project_id"]) == ("backup-web-1", "0")
    assert listed(cloud, image_id, 129.9)["status"] == "saving"  # type: ignore[index]
    active = listed(cloud, image_id, 130.0)
    assert active is not None and active["status"] == "active"
    ended = datetime.fromtimestamp(130.0, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert active["active_at"] == active["updated_at"] == ended
    assert active["created_at"] < ended
    by_tag = ok(cloud.list_images(PROJECT, {"tag": "reimage.backup"}, now=130.0))["images"]
    assert [image["id"] for image in by_tag] == [image_id]


def test_the_old_tags_form_is_kept_as_given() -> None:
    cloud = backup_cloud()
    image_id = backup_image_id(cloud, tags=["reimage.backup", "team.web"])
    assert listed(cloud, image_id, 0.0)["tags"] == ["reimage.backup", "team.web"]  # type: ignore[index]


def test_the_ims_job_answers_on_the_ecs_job_path_init_running_success() -> None:
    cloud = backup_cloud(backup_seconds=20.0)
    job_id = accepted_job_id(create(cloud, now=100.0))
    first = image_job(cloud, job_id, 100.0)
    assert set(first) == IMS_JOB_KEYS
    assert (first["status"], first["job_id"], first["job_type"]) == (
        "INIT",
        job_id,
        "createImageByInstance",
    )
    assert IMS_TIME.fullmatch(first["begin_time"]) and first["end_time"] == ""
    assert first["error_code"] is None and first["fail_reason"] is None
    entities = first["entities"]
    assert set(entities) == {"image_id", "image_name", "process_percent", "current_task"}
    assert (entities["image_name"], entities["process_percent"]) == ("backup-web-1", 0.0)
    assert entities["current_task"] == "CreateImageByInstanceTask"
    running = image_job(cloud, job_id, 110.0)  # running from min(1 s, 10% of 20 s)
    assert (running["status"], running["entities"]["process_percent"]) == ("RUNNING", 0.5)
    assert running["entities"]["image_id"] == entities["image_id"]
    done = image_job(cloud, job_id, 120.0)
    assert (done["status"], done["entities"]["process_percent"]) == ("SUCCESS", 1.0)
    assert IMS_TIME.fullmatch(done["end_time"])
    stats = cloud.stats(120.0)
    assert stats["requests"]["show_image_job"] == 3 and stats["requests"]["show_job"] == 0
    assert stats["images_created"] == 1


def test_ims_times_use_the_format_of_the_ims_docs() -> None:
    moment = datetime(2015, 6, 4, 18, 11, 6, 586000, tzinfo=UTC).timestamp()
    assert Timestamps(moment).ims_ms(0.0) == "04-Jun-2015 18:11:06:586"


def test_changeos_jobs_are_still_found_and_unknown_or_purged_ids_are_common_0011() -> None:
    cloud = backup_cloud(job_ttl=60.0)
    changeos_job = change_to(cloud, ARM_UEFI_IMAGE, now=0.0, server_id=ARM_SERVER)
    image_job_id = accepted_job_id(create(cloud, now=0.0))
    assert image_job(cloud, changeos_job, 1.0)["job_type"] == "changeOS"
    assert image_job(cloud, image_job_id, 1.0)["job_type"] == "createImageByInstance"
    assert error_of(cloud.show_job(PROJECT, UNKNOWN.replace("-", ""), now=1.0)) == (
        400,
        "Common.0011",
    )
    assert error_of(cloud.show_job(PROJECT, image_job_id, now=62.0)) == (400, "Common.0011")
    other_project = "ffffffffffffffffffffffffffffffff"
    assert error_of(cloud.show_job(other_project, image_job_id, now=1.0)) == (403, "IMG.0403")


def test_a_failed_image_job_leaves_the_image_killed() -> None:
    cloud = backup_cloud(backup_fail_ratio=1.0)
    job_id = accepted_job_id(create(cloud))
    failed = image_job(cloud, job_id, 2.0)
    assert (failed["status"], failed["error_code"]) == ("FAIL", "IMG.0006")
    assert failed["fail_reason"]
    killed = listed(cloud, failed["entities"]["image_id"], 2.0)
    assert killed is not None and killed["status"] == "killed"
    assert "active_at" not in killed
    assert error_of(submit(cloud, os_change(imageid=killed["id"]), now=3.0)) == (400, "Ecs.0032")


def test_which_servers_backups_fail_depends_on_seed_and_server_id() -> None:
    servers = [f"00000000-0000-4000-8000-{n:012d}" for n in range(200)]

    def outcomes(seed: int, order: list[str]) -> dict[str, str]:
        cloud = make_cloud(backup_fail_ratio=0.5, seed=seed, image_quota=1000)
        job_ids = {
            sid: accepted_job_id(create(cloud, backup_body(name=f"b-{sid}", instance_id=sid)))
            for sid in order
        }
        return {sid: image_job(cloud, job_ids[sid], 2.0)["status"] for sid in servers}

    first = outcomes(3, servers)
    assert first == outcomes(3, list(reversed(servers)))
    assert first != outcomes(4, servers)
    assert 0.35 < list(first.values()).count("FAIL") / len(servers) < 0.65


# --- backups and changes of OS ---------------------------------------------------------------


def test_changeos_is_refused_busy_while_an_image_is_made_and_accepted_once_it_is_active() -> None:
    cloud = backup_cloud(backup_seconds=30.0)
    image_id = backup_image_id(cloud, now=0.0)
    shown = server(cloud, 10.0)
    assert (shown["status"], shown["OS-EXT-STS:task_state"]) == ("ACTIVE", "")  # nothing shows
    assert error_of(submit(cloud, now=10.0)) == (501, "Ecs.0603")
    assert error_of(submit(cloud, os_change(imageid=image_id), server=ARM_SERVER, now=10.0)) == (
        400,
        "Ecs.0032",  # the backup image is not active yet
    )
    change_to(cloud, IMAGE, now=30.0)
    # A rollback to the backup: the server is back on its old OS, on the backup image.
    change_to(cloud, image_id, now=100.0)
    assert server(cloud, 200.0)["image"]["id"] == image_id


def test_a_server_keeps_showing_a_deleted_image_it_runs() -> None:
    cloud = backup_cloud(backup_seconds=0.0)
    image_id = backup_image_id(cloud, instance_id=ARM_SERVER)
    change_to(cloud, image_id, now=1.0, server_id=ARM_SERVER)
    assert cloud.delete_image(PROJECT, image_id, now=100.0) == {}
    shown = server(cloud, 100.0, ARM_SERVER)
    assert (shown["image"]["id"], shown["metadata"]["image_name"]) == (image_id, "backup-web-1")
    assert shown["metadata"]["os_type"] == "Other"
    # Its boot mode is still the image's (UEFI): a change to a UEFI image can still work.
    assert job(cloud, change_to(cloud, ARM_UEFI_IMAGE, 101.0, ARM_SERVER), 200.0)["status"] == (
        "SUCCESS"
    )


# --- the quota -------------------------------------------------------------------------------


def test_the_quota_counts_private_images_only_and_is_refused_when_full() -> None:
    cloud = backup_cloud(image_quota=CATALOG_PRIVATE + 2)
    assert ok(cloud.image_quota(PROJECT, now=0.0)) == {
        "quotas": {
            "resources": [
                {"type": "image", "used": CATALOG_PRIVATE, "quota": 7, "min": 1, "max": 1000}
            ]
        }
    }
    first = backup_image_id(cloud, name="backup-1")
    assert quota_used(cloud) == CATALOG_PRIVATE + 1  # saving images count
    backup_image_id(cloud, now=5.0, name="backup-2")
    full = create(cloud, backup_body(name="backup-3", instance_id=ARM_SERVER), now=10.0)
    assert error_of(full) == (400, "IMG.0015")
    cloud.delete_image(PROJECT, first, now=10.0)
    assert quota_used(cloud, 10.0) == CATALOG_PRIVATE + 1
    accepted_job_id(create(cloud, backup_body(name="backup-3", instance_id=ARM_SERVER), now=10.0))
    cloud.set_faults({"image_quota": 100})
    assert ok(cloud.image_quota(None, now=10.0))["quotas"]["resources"][0]["quota"] == 100
    assert error_of(cloud.image_quota("f" * 32, now=0.0)) == (403, "IMG.0403")


def test_an_open_catalog_counts_only_the_images_it_holds() -> None:
    cloud = make_cloud()  # the base image only: every other id is synthesized, never counted
    assert quota_used(cloud) == 0
    backup_image_id(cloud)
    assert quota_used(cloud) == 1


# --- deletion --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image_id", "expected"),
    [
        pytest.param(PUBLIC_IMAGE, (400, "IMG.0094"), id="public"),
        pytest.param(PROTECTED_IMAGE, (400, "IMG.0091"), id="protected"),
        pytest.param(SHARED_IMAGE, (400, "IMG.0092"), id="not-ours"),
        pytest.param(SAVING_IMAGE, (400, "IMG.0090"), id="being-created"),
        pytest.param(UNKNOWN, (404, "IMG.0027"), id="unknown"),
        pytest.param("not-an-id", (404, "IMG.0027"), id="not-an-id"),
    ],
)
def test_deletion_refusals(image_id: str, expected: tuple[int, str]) -> None:
    cloud = backup_cloud()
    reply = cloud.delete_image(PROJECT, image_id, now=0.0)
    assert error_of(reply) == expected
    assert not isinstance(reply, dict)
    assert reply.body("rid") == {"error": {"code": expected[1], "message": reply.message}}


def test_deleting_an_image_made_from_a_server_removes_it_at_once() -> None:
    cloud = backup_cloud()
    image_id = backup_image_id(cloud)
    assert error_of(cloud.delete_image(PROJECT, image_id, now=1.0)) == (400, "IMG.0090")
    body = json.dumps({"delete_backup": False}).encode()
    assert cloud.delete_image(PROJECT, image_id, body, now=2.0) == {}
    assert listed(cloud, image_id, 2.0) is None
    assert image_id not in [i["id"] for i in ok(cloud.list_images(PROJECT, {}, now=2.0))["images"]]
    assert error_of(cloud.delete_image(PROJECT, image_id, now=3.0)) == (404, "IMG.0027")
    assert error_of(submit(cloud, os_change(imageid=image_id), now=3.0)) == (400, "Ecs.0031")
    assert cloud.stats(3.0)["images_deleted"] == 1


def test_a_killed_image_can_be_deleted_and_a_malformed_body_cannot() -> None:
    cloud = backup_cloud(backup_fail_ratio=1.0)
    image_id = backup_image_id(cloud)
    assert error_of(cloud.delete_image(PROJECT, image_id, b"{x", now=5.0)) == (400, "IMG.0001")
    bad_flag = json.dumps({"delete_backup": "no"}).encode()
    assert error_of(cloud.delete_image(PROJECT, image_id, bad_flag, now=5.0)) == (400, "IMG.0001")
    assert cloud.delete_image(PROJECT, image_id, now=5.0) == {}


def test_an_open_catalog_forgets_a_deleted_id_until_it_is_put_again() -> None:
    cloud = make_cloud()
    assert listed(cloud, UNKNOWN, 0.0) is not None  # synthesized
    assert cloud.delete_image(PROJECT, UNKNOWN, now=0.0) == {}
    assert listed(cloud, UNKNOWN, 0.0) is None
    cloud.put_images(parse_images({"images": [{"id": UNKNOWN}]}), now=1.0)
    assert listed(cloud, UNKNOWN, 1.0) is not None


# --- the log ---------------------------------------------------------------------------------


def test_the_log_holds_every_create_and_delete_with_its_answer_and_activation() -> None:
    cloud = backup_cloud(backup_seconds=10.0, strict_inventory=True)
    image_id = backup_image_id(cloud, now=100.0)
    create(cloud, backup_body(instance_id=UNKNOWN, name="b-2"), now=101.0)
    create(cloud, b"{x", now=102.0)
    cloud.delete_image(PROJECT, PUBLIC_IMAGE, now=103.0)
    assert cloud.image_calls(now=105.0)[0]["active_at"] is None  # not active yet
    cloud.delete_image(PROJECT, image_id, now=111.0)
    assert cloud.image_calls(now=111.0) == [
        {
            "at": 100.0,
            "kind": "create",
            "server_id": SERVER,
            "image_id": image_id,
            "answer": "accepted",
            "active_at": 110.0,
        },
        {
            "at": 101.0,
            "kind": "create",
            "server_id": UNKNOWN,
            "image_id": None,
            "answer": "IMG.0005",
            "active_at": None,
        },
        {
            "at": 102.0,
            "kind": "create",
            "server_id": None,
            "image_id": None,
            "answer": "IMG.0001",
            "active_at": None,
        },
        {
            "at": 103.0,
            "kind": "delete",
            "server_id": None,
            "image_id": PUBLIC_IMAGE,
            "answer": "IMG.0094",
            "active_at": None,
        },
        {
            "at": 111.0,
            "kind": "delete",
            "server_id": SERVER,
            "image_id": image_id,
            "answer": "accepted",
            "active_at": None,
        },
    ]
    assert [call["at"] for call in cloud.image_calls(102.5, now=111.0)] == [103.0, 111.0]
    cloud.reset()
    assert cloud.image_calls(now=0.0) == []


# --- fault settings and options --------------------------------------------------------------


def test_the_new_settings_change_at_run_time_and_bad_ones_are_refused() -> None:
    cloud = backup_cloud()
    settings = cloud.set_faults(
        {
            "broken_images": [BROKEN_IMAGE.upper()],
            "boot_seconds": 3,
            "backup_seconds": 7,
            "backup_fail_ratio": 0.5,
            "image_quota": 50,
        }
    )
    assert settings["broken_images"] == [BROKEN_IMAGE]
    assert (settings["boot_seconds"], settings["backup_seconds"]) == (3.0, 7.0)
    assert (settings["backup_fail_ratio"], settings["image_quota"]) == (0.5, 50)
    json.dumps(settings)
    for bad in (
        {"broken_images": BROKEN_IMAGE},
        {"broken_images": ["ubuntu"]},
        {"boot_seconds": -1},
        {"backup_seconds": None},
        {"backup_fail_ratio": 2},
        {"image_quota": 0},
        {"image_quota": 2.5},
    ):
        with pytest.raises(ValueError):
            cloud.set_faults(bad)
    assert cloud.faults() == settings


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_simulate_arguments(parser)
    return parser.parse_args(["--ak", AK, "--sk", SK, "--project-id", PROJECT, *argv])


def test_simulate_options_for_health_and_backups() -> None:
    defaults = config_from_args(_parse())
    assert (defaults.broken_images, defaults.boot_seconds) == (frozenset(), 0.0)
    assert (defaults.backup_seconds, defaults.backup_fail_ratio, defaults.image_quota) == (
        2.0,
        0.0,
        20,
    )
    config = config_from_args(
        _parse(
            "--broken-images", f"{BROKEN_IMAGE.upper()},{IMAGE}", "--boot-seconds", "30",
            "--backup-seconds", "5", "--backup-fail-ratio", "0.25", "--image-quota", "3",
        )
    )  # fmt: skip
    assert config == SimulatorConfig(
        ak=AK,
        sk=SK,
        project_id=PROJECT,
        broken_images=frozenset({BROKEN_IMAGE, IMAGE}),
        boot_seconds=30.0,
        backup_seconds=5.0,
        backup_fail_ratio=0.25,
        image_quota=3,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--broken-images", "ubuntu"],
        ["--boot-seconds", "-1"],
        ["--backup-seconds", "inf"],
        ["--backup-fail-ratio", "1.5"],
        ["--image-quota", "0"],
        ["--image-quota", "1001"],
    ],
)
def test_simulate_rejects_bad_health_and_backup_options(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        _parse(*argv)


def test_the_help_documents_every_new_option() -> None:
    parser = argparse.ArgumentParser()
    add_simulate_arguments(parser)
    text = parser.format_help()
    for flag in (
        "--broken-images",
        "--boot-seconds",
        "--backup-seconds",
        "--backup-fail-ratio",
        "--image-quota",
    ):
        assert flag in text


# --- over HTTP -------------------------------------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def client(aiohttp_client: ClientFactory, clock: ManualClock) -> Client:
    app = make_app(
        clock, image_specs=CATALOG, inventory=INVENTORY, backup_seconds=10.0, boot_seconds=20.0
    )
    return await aiohttp_client(app)


async def control(client: Client, path: str) -> tuple[int, dict[str, Any]]:
    async with client.get(path) as resp:
        return resp.status, await resp.json()


async def delete(client: Client, path: str, body: bytes = b"") -> tuple[int, bytes]:
    headers = signed_headers(client, "DELETE", path, body)
    async with client.delete(path, data=body or None, headers=headers) as resp:
        return resp.status, await resp.read()


async def test_health_over_http_is_a_control_route_answering_200_or_503(
    aiohttp_client: ClientFactory, clock: ManualClock
) -> None:
    app = make_app(clock, rate_limit=1.0, burst=1, broken_images=frozenset({BROKEN_IMAGE}))
    client = await aiohttp_client(app)
    for _ in range(5):  # no signature, never throttled
        status, body = await control(client, f"/_sim/health/{SERVER}")
        assert (status, body["healthy"]) == (200, True)
    status, body = await control(client, "/_sim/health/not-a-uuid")
    assert (status, body["healthy"], body["why"]) == (503, False, "no such server")
    change = os_change(imageid=BROKEN_IMAGE)
    assert (await call(client, "POST", f"/v1/{PROJECT}/cloudservers/{SERVER}/changeos", change))[
        0
    ] == 200
    status, body = await control(client, f"/_sim/health/{SERVER}")
    assert (status, body["status"]) == (503, "REBUILD")
    clock.now += 10
    status, body = await control(client, f"/_sim/health/{SERVER}")
    assert (status, body["why"]) == (503, f"the image {BROKEN_IMAGE} boots broken")
    stats = client.app[SIMULATOR].cloud.stats(clock.now)
    assert stats["health_probes"] == 8
    assert sum(stats["requests"].values()) == 1  # the changeos only


async def test_create_image_job_quota_and_delete_over_http(
    client: Client, clock: ManualClock
) -> None:
    status, body, _ = await call(client, "POST", "/v2/cloudimages/action", backup_body())
    assert status == 200 and set(body) == {"job_id"}
    job_id = body["job_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", job_id)
    status, shown, _ = await call(client, "GET", f"/v1/{PROJECT}/jobs/{job_id}")
    assert (status, shown["status"], shown["job_type"]) == (200, "INIT", "createImageByInstance")
    image_id = shown["entities"]["image_id"]
    status, body, _ = await call(client, "GET", "/v1/cloudimages/quota")
    assert body["quotas"]["resources"][0]["used"] == CATALOG_PRIVATE + 1
    status, body, _ = await call(client, "GET", f"/v1/{PROJECT}/cloudimages/quota")
    assert (status, body["quotas"]["resources"][0]["quota"]) == (200, 20)
    status, body, _ = await call(
        client, "GET", "/v1/ffffffffffffffffffffffffffffffff/cloudimages/quota"
    )
    assert (status, body["error"]["code"]) == (403, "IMG.0403")

    status, raw = await delete(client, f"/v2/images/{image_id}")
    assert (status, json.loads(raw)["error"]["code"]) == (400, "IMG.0090")
    clock.now += 10
    status, shown, _ = await call(client, "GET", f"/v1/{PROJECT}/jobs/{job_id}")
    assert shown["status"] == "SUCCESS"
    assert (await call(client, "GET", f"/v2/cloudimages?id={image_id}"))[1]["images"][0][
        "status"
    ] == "active"
    assert await delete(client, f"/v2/images/{image_id}", b'{"delete_backup": false}') == (204, b"")
    assert (await call(client, "GET", f"/v2/cloudimages?id={image_id}"))[1] == {"images": []}
    status, raw = await delete(client, f"/v2/images/{image_id}")
    assert status == 404
    assert json.loads(raw) == {
        "error": {"code": "IMG.0027", "message": json.loads(raw)["error"]["message"]}
    }

    status, log = await control(client, "/_sim/images/log")
    assert [(c["kind"], c["answer"]) for c in log["calls"]] == [
        ("create", "accepted"),
        ("delete", "IMG.0090"),
        ("delete", "accepted"),
        ("delete", "IMG.0027"),
    ]
    assert log["calls"][0]["active_at"] == log["calls"][0]["at"] + 10
    status, later = await control(client, f"/_sim/images/log?since={log['calls'][2]['at']}")
    assert len(later["calls"]) == 2
    assert (await control(client, "/_sim/images/log?since=soon"))[0] == 400


async def test_changeos_during_a_backup_is_501_ecs_0603_over_http(
    client: Client, clock: ManualClock
) -> None:
    assert (await call(client, "POST", "/v2/cloudimages/action", backup_body()))[0] == 200
    path = f"/v1/{PROJECT}/cloudservers/{SERVER}/changeos"
    status, body, _ = await call(client, "POST", path, os_change())
    assert (status, body["error"]["code"]) == (501, "Ecs.0603")
    clock.now += 10
    assert (await call(client, "POST", path, os_change()))[0] == 200
    status, body, _ = await call(
        client, "POST", "/v2/cloudimages/action", backup_body(name="backup-web-2")
    )
    assert (status, body["error"]["code"]) == (400, "IMG.0010")


async def test_image_calls_the_gateway_turns_away_are_logged(
    aiohttp_client: ClientFactory, clock: ManualClock
) -> None:
    client = await aiohttp_client(make_app(clock, rate_limit=1.0, burst=1))
    assert (await call(client, "GET", "/v1/cloudimages/quota"))[0] == 200
    status, body, _ = await call(client, "POST", "/v2/cloudimages/action", backup_body())
    assert (status, body["error_code"]) == (429, "APIGW.0308")
    status, _ = await delete(client, f"/v2/images/{IMAGE}")
    assert status == 429
    async with client.post("/v2/cloudimages/action", data=backup_body()) as resp:
        assert resp.status == 401  # unsigned
    status, log = await control(client, "/_sim/images/log")
    assert [(c["kind"], c["server_id"], c["image_id"], c["answer"]) for c in log["calls"]] == [
        ("create", SERVER, None, "APIGW.0308"),
        ("delete", None, IMAGE, "APIGW.0308"),
        ("create", SERVER, None, "APIGW.0301"),
    ]
    assert client.app[SIMULATOR].cloud.stats(clock.now)["images_created"] == 0


async def test_the_fault_route_takes_the_new_settings(client: Client) -> None:
    async with client.get("/_sim/faults") as resp:
        settings = await resp.json()
    assert set(settings) == set(FAULT_FIELDS)
    assert settings["broken_images"] == [] and settings["image_quota"] == 20
    async with client.post("/_sim/faults", json={"broken_images": [IMAGE]}) as resp:
        assert (resp.status, (await resp.json())["broken_images"]) == (200, [IMAGE])
    async with client.post("/_sim/faults", json={"broken_images": "all"}) as resp:
        assert resp.status == 400
