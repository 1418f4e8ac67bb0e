"""The official IMS and ECS SDK clients, unchanged, make, follow, count and delete backup images
of servers on the simulator over a real TCP port: an SDK that cannot parse a field (or warns
that it had to convert one) means the simulator's JSON is wrong."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator.simulator.cloud import ServerSpec, SimulatorConfig
from orchestrator.simulator.images import ImageSpec
from tests.integration.test_sdk_against_simulator import (
    AK,
    IMAGE,
    PROJECT,
    SERVER,
    SK,
    SimulatorThread,
)
from tests.support.sdk import prepare_sdk, sdk_client

# The SDK's TypeConversionWarning (a UserWarning) is how it says a field had the wrong type.
# It also marks IMS ShowJob deprecated (for ShowJobProgress); ShowJob is what clients call.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("error::UserWarning"),
    pytest.mark.filterwarnings("ignore:Method 'show_job' of ImsClient:DeprecationWarning"),
]

OTHER_SERVER = "3c1d2e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
UNKNOWN = "ffffffff-0000-4000-8000-00000000ffff"
QUOTA = 2


@pytest.fixture
def simulator_url() -> Iterator[str]:
    simulator = SimulatorThread(
        SimulatorConfig(
            ak=AK,
            sk=SK,
            project_id=PROJECT,
            job_seconds=0.3,
            backup_seconds=0.3,
            image_specs=(ImageSpec(id=IMAGE, name="EulerOS 2.9", visibility="public"),),
            inventory=(ServerSpec(id=SERVER, system_disk_size=50), ServerSpec(id=OTHER_SERVER)),
            strict_inventory=True,
            image_quota=QUOTA,
        )
    )
    yield simulator.start()
    simulator.stop()


@pytest.fixture
def sdk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, simulator_url: str) -> SimpleNamespace:
    """The IMS and ECS clients and their modules, imported with HOME (which the SDK writes to)
    and proxies made harmless."""
    prepare_sdk(monkeypatch, tmp_path)
    import huaweicloudsdkecs.v2 as ecs
    import huaweicloudsdkims.v2 as ims
    from huaweicloudsdkcore.exceptions.exceptions import (
        ClientRequestException,
        ServerResponseException,
    )

    def build(client_class: Any) -> Any:
        return sdk_client(client_class, simulator_url, ak=AK, sk=SK, project_id=PROJECT)

    return SimpleNamespace(
        ims=build(ims.ImsClient),
        ecs=build(ecs.EcsClient),
        ims_v2=ims,
        ecs_v2=ecs,
        ClientRequestException=ClientRequestException,
        ServerResponseException=ServerResponseException,
    )


def create_backup(sdk: SimpleNamespace, name: str, server_id: str = SERVER) -> str:
    v2 = sdk.ims_v2
    body = v2.CreateImageRequestBody(
        name=name,
        instance_id=server_id,
        description="before the change of OS",
        image_tags=[v2.TagKeyValue(key="reimage", value="backup")],
    )
    job_id = sdk.ims.create_image(v2.CreateImageRequest(body=body)).job_id
    assert isinstance(job_id, str) and len(job_id) == 32
    return job_id


def wait_for_image_job(sdk: SimpleNamespace, job_id: str) -> Any:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        job = sdk.ims.show_job(sdk.ims_v2.ShowJobRequest(job_id=job_id))
        if job.status in ("SUCCESS", "FAIL"):
            return job
        assert job.status in ("INIT", "RUNNING")
        time.sleep(0.05)
    raise AssertionError(f"image job {job_id} never ended")


def listed(sdk: SimpleNamespace, image_id: str) -> list[Any]:
    return list(sdk.ims.list_images(sdk.ims_v2.ListImagesRequest(id=image_id)).images)


def quota(sdk: SimpleNamespace) -> Any:
    [resource] = sdk.ims.show_image_quota(sdk.ims_v2.ShowImageQuotaRequest()).quotas.resources
    return resource


def get_json(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_backup_is_made_followed_counted_and_deleted_with_the_sdk(
    sdk: SimpleNamespace, simulator_url: str
) -> None:
    v2 = sdk.ims_v2
    assert (quota(sdk).type, quota(sdk).used, quota(sdk).quota) == ("image", 0, QUOTA)
    job_id = create_backup(sdk, "backup-web-00001")
    first = sdk.ims.show_job(v2.ShowJobRequest(job_id=job_id))
    image_id = first.entities.image_id  # there from the start in the simulator
    [saving] = listed(sdk, image_id)
    assert saving.status == "saving"
    assert quota(sdk).used == 1

    job = wait_for_image_job(sdk, job_id)
    assert (job.status, job.job_type, job.entities.image_id) == (
        "SUCCESS",
        "createImageByInstance",
        image_id,
    )
    assert job.entities.image_name == "backup-web-00001"
    assert job.entities.process_percent == 1.0
    assert job.end_time and job.error_code is None
    [image] = listed(sdk, image_id)
    assert (image.status, image.min_disk, image.imagetype, image.owner) == (
        "active",
        50,
        "private",
        PROJECT,
    )
    assert image.data_origin == f"instance,{SERVER}"
    assert image.tags == ["reimage.backup"]
    assert image.virtual_env_type == "FusionCompute"
    assert image.active_at

    request = v2.GlanceDeleteImageRequest(
        image_id=image_id, body=v2.GlanceDeleteImageRequestBody(delete_backup=False)
    )
    assert sdk.ims.glance_delete_image(request).status_code == 204
    assert listed(sdk, image_id) == []
    assert quota(sdk).used == 0
    with pytest.raises(sdk.ClientRequestException) as raised:
        sdk.ims.glance_delete_image(request)
    assert (raised.value.status_code, raised.value.error_code) == (404, "IMG.0027")

    status, log = get_json(f"{simulator_url}/_sim/images/log")
    assert status == 200
    assert [(c["kind"], c["answer"]) for c in log["calls"]] == [
        ("create", "accepted"),
        ("delete", "accepted"),
        ("delete", "IMG.0027"),
    ]
    assert log["calls"][0]["active_at"] > log["calls"][0]["at"]


def test_the_sdk_reads_the_ims_refusals(sdk: SimpleNamespace) -> None:
    v2 = sdk.ims_v2
    with pytest.raises(sdk.ClientRequestException) as raised:
        create_backup(sdk, "backup-nobody", UNKNOWN)
    assert (raised.value.status_code, raised.value.error_code) == (400, "IMG.0005")
    first = create_backup(sdk, "backup-1")
    with pytest.raises(sdk.ClientRequestException) as raised:
        create_backup(sdk, "backup-1", OTHER_SERVER)
    assert raised.value.error_code == "IMG.0009"
    with pytest.raises(sdk.ClientRequestException) as raised:
        create_backup(sdk, "backup-2")  # the first is still being made
    assert raised.value.error_code == "IMG.0010"
    create_backup(sdk, "backup-2", OTHER_SERVER)
    with pytest.raises(sdk.ClientRequestException) as raised:
        create_backup(sdk, "backup-3", OTHER_SERVER)  # busy, and the quota is full anyway
    assert raised.value.error_code == "IMG.0010"  # the table's order: busy comes first
    wait_for_image_job(sdk, first)
    with pytest.raises(sdk.ClientRequestException) as raised:
        create_backup(sdk, "backup-3")
    assert (raised.value.status_code, raised.value.error_code) == (400, "IMG.0015")
    with pytest.raises(sdk.ClientRequestException) as raised:
        sdk.ims.glance_delete_image(v2.GlanceDeleteImageRequest(image_id=IMAGE))
    assert raised.value.error_code == "IMG.0094"


def test_a_change_of_os_waits_for_the_backup_and_the_server_is_healthy_after_it(
    sdk: SimpleNamespace, simulator_url: str
) -> None:
    ecs = sdk.ecs_v2
    option = ecs.ChangeServerOsWithoutCloudInitOption(
        keyname="KeyPair-test",
        userid="7e25b1da389f4697a79df3a0e5bd494e",
        imageid=IMAGE,
        mode="withStopServer",
    )
    change = ecs.ChangeServerOsWithoutCloudInitRequest(
        server_id=SERVER, body=ecs.ChangeServerOsWithoutCloudInitRequestBody(os_change=option)
    )
    image_job = create_backup(sdk, "backup-before-change")
    with pytest.raises(sdk.ServerResponseException) as raised:
        sdk.ecs.change_server_os_without_cloud_init(change)
    assert (raised.value.status_code, raised.value.error_code) == (501, "Ecs.0603")
    shown = sdk.ecs.show_server(ecs.ShowServerRequest(server_id=SERVER)).server
    assert (shown.status, shown.os_ext_st_stask_state) == ("ACTIVE", "")
    wait_for_image_job(sdk, image_job)
    job_id = sdk.ecs.change_server_os_without_cloud_init(change).job_id
    deadline = time.monotonic() + 15
    while sdk.ecs.show_job(ecs.ShowJobRequest(job_id=job_id)).status != "SUCCESS":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    status, health = get_json(f"{simulator_url}/_sim/health/{SERVER}")
    assert (status, health["healthy"], health["image_id"]) == (200, True, IMAGE)
    status, missing = get_json(f"{simulator_url}/_sim/health/{UNKNOWN}")
    assert (status, missing["healthy"]) == (503, False)
