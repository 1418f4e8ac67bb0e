"""The official IMS, EVS and ECS SDK clients, unchanged, read the fleet facts from the simulator
on a real TCP port: an SDK that cannot parse a field (or warns that it had to convert one) means
the simulator's JSON is wrong."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator.simulator.cloud import ServerSpec, SimulatorConfig
from orchestrator.simulator.images import ImageSpec, base_image
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
pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("error::UserWarning")]

ARM_SERVER = "3c1d2e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
ARM_IMAGE = "a1a1a1a1-0000-4000-8000-000000000001"
UEFI_IMAGE = "a1a1a1a1-0000-4000-8000-000000000002"
UNKNOWN = "ffffffff-0000-4000-8000-00000000ffff"
CATALOG = (
    ImageSpec(id=IMAGE, name="web-euleros", min_disk=50),
    ImageSpec(id=ARM_IMAGE, name="web-arm", architecture="arm", os_type="Other"),
    ImageSpec(id=UEFI_IMAGE, name="web-uefi", firmware="uefi", cloud_init=False),
)
INVENTORY = (
    ServerSpec(id=SERVER, status="SHUTOFF", system_disk_size=40, availability_zone="az-b"),
    ServerSpec(id=ARM_SERVER, status="SHUTOFF", flavor_id="kc1.large.2", charging_mode="1"),
)


@pytest.fixture
def simulator_url() -> Iterator[str]:
    simulator = SimulatorThread(
        SimulatorConfig(
            ak=AK,
            sk=SK,
            project_id=PROJECT,
            job_seconds=0.5,
            image_specs=CATALOG,
            inventory=INVENTORY,
            strict_inventory=True,
        )
    )
    yield simulator.start()
    simulator.stop()


@pytest.fixture
def clients(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, simulator_url: str
) -> Callable[..., SimpleNamespace]:
    """`clients(project_id=PROJECT)`: the ECS, IMS and EVS clients of that project and their
    modules, imported with HOME (which the SDK writes to) and proxies made harmless."""
    prepare_sdk(monkeypatch, tmp_path)
    import huaweicloudsdkecs.v2 as ecs
    import huaweicloudsdkevs.v2 as evs
    import huaweicloudsdkims.v2 as ims
    from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException

    def build(client_class: Any, project_id: str) -> Any:
        return sdk_client(client_class, simulator_url, ak=AK, sk=SK, project_id=project_id)

    def make(project_id: str = PROJECT) -> SimpleNamespace:
        return SimpleNamespace(
            ecs=build(ecs.EcsClient, project_id),
            ims=build(ims.ImsClient, project_id),
            evs=build(evs.EvsClient, project_id),
            ecs_v2=ecs,
            ims_v2=ims,
            evs_v2=evs,
            ClientRequestException=ClientRequestException,
        )

    return make


def sim_stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/_sim/stats", timeout=10) as response:
        stats = json.loads(response.read())
    assert isinstance(stats, dict)
    return stats


def system_disk_of(sdk: SimpleNamespace, server_id: str) -> str:
    server = sdk.ecs.show_server(sdk.ecs_v2.ShowServerRequest(server_id=server_id)).server
    [disk] = server.os_extended_volumesvolumes_attached
    assert (disk.boot_index, disk.device) == ("0", "/dev/vda")
    return str(disk.id)


def test_list_images_by_id_parses_the_pre_flight_fields(
    clients: Callable[..., SimpleNamespace],
) -> None:
    sdk = clients()
    request = sdk.ims_v2.ListImagesRequest
    [arm] = sdk.ims.list_images(request(id=ARM_IMAGE)).images
    assert (arm.id, arm.min_disk, arm.support_arm, arm.os_type) == (ARM_IMAGE, 40, "true", "Other")
    assert arm.hw_firmware_type is None  # absent: BIOS
    assert (arm.imagetype, arm.status, arm.support_fc_inject) == ("private", "active", "false")
    [uefi] = sdk.ims.list_images(request(id=UEFI_IMAGE)).images
    assert (uefi.hw_firmware_type, uefi.support_arm, uefi.min_disk) == ("uefi", None, 40)
    assert uefi.support_fc_inject == "true"  # no Cloud-Init
    [own] = sdk.ims.list_images(request(id=IMAGE)).images
    assert (own.min_disk, own.os_type, own.name) == (50, "Linux", "web-euleros")
    assert sdk.ims.list_images(request(id=UNKNOWN)).images == []


def test_list_images_pages_with_marker_and_filters(
    clients: Callable[..., SimpleNamespace],
) -> None:
    sdk = clients()
    request = sdk.ims_v2.ListImagesRequest
    first = sdk.ims.list_images(request(limit=2)).images
    rest = sdk.ims.list_images(request(limit=2, marker=first[-1].id)).images
    assert [image.id for image in [*first, *rest]] == [
        base_image(0).id,
        IMAGE,
        ARM_IMAGE,
        UEFI_IMAGE,
    ]
    arm = sdk.ims.list_images(request(architecture="arm", imagetype="private")).images
    assert [image.id for image in arm] == [ARM_IMAGE]


def test_list_images_refuses_another_project_with_the_ims_body(
    clients: Callable[..., SimpleNamespace],
) -> None:
    sdk = clients("ffffffffffffffffffffffffffffffff")
    with pytest.raises(sdk.ClientRequestException) as raised:
        sdk.ims.list_images(sdk.ims_v2.ListImagesRequest())
    assert (raised.value.status_code, raised.value.error_code) == (403, "IMG.0403")


def test_list_flavors_parses_the_kunpeng_architecture(
    clients: Callable[..., SimpleNamespace],
) -> None:
    sdk = clients()
    flavors = sdk.ecs.list_flavors(sdk.ecs_v2.ListFlavorsRequest()).flavors
    by_id = {flavor.id: flavor for flavor in flavors}
    assert by_id["kc1.large.2"].os_extra_specs.ecsinstance_architecture == "arm64"
    assert by_id["kc1.xlarge.4"].os_extra_specs.ecsperformancetype == "kunpeng_computing"
    assert by_id["s6.small.1"].os_extra_specs.ecsinstance_architecture is None
    assert (by_id["c7.xlarge.2"].vcpus, by_id["c7.xlarge.2"].ram) == ("4", 8192)
    assert by_id["s6.large.2"].attachable_quantity.free_nic == 3
    in_zone = sdk.ecs.list_flavors(sdk.ecs_v2.ListFlavorsRequest(availability_zone="az-b"))
    assert len(in_zone.flavors) == len(flavors)


def test_show_server_parses_flavor_zone_and_os(clients: Callable[..., SimpleNamespace]) -> None:
    sdk = clients()
    arm = sdk.ecs.show_server(sdk.ecs_v2.ShowServerRequest(server_id=ARM_SERVER)).server
    assert (arm.flavor.id, arm.flavor.vcpus, arm.flavor.ram) == ("kc1.large.2", "2", "4096")
    assert arm.metadata["os_type"] == "Linux"
    assert arm.metadata["image_name"] == "sim-base-euleros-2.9"
    web = sdk.ecs.show_server(sdk.ecs_v2.ShowServerRequest(server_id=SERVER)).server
    assert web.os_ext_a_zavailability_zone == "az-b"
    assert web.image.id == arm.image.id == base_image(0).id


def test_show_volume_parses_size_bootable_and_attachments(
    clients: Callable[..., SimpleNamespace],
) -> None:
    sdk = clients()
    disk_id = system_disk_of(sdk, SERVER)
    volume = sdk.evs.show_volume(sdk.evs_v2.ShowVolumeRequest(volume_id=disk_id)).volume
    assert (volume.id, volume.size, volume.bootable, volume.status) == (
        disk_id,
        40,
        "true",
        "in-use",
    )
    [attachment] = volume.attachments
    assert (attachment.server_id, attachment.device) == (SERVER, "/dev/vda")
    assert volume.availability_zone == "az-b"
    assert volume.volume_image_metadata["image_id"] == base_image(0).id
    with pytest.raises(sdk.ClientRequestException) as raised:
        sdk.evs.show_volume(sdk.evs_v2.ShowVolumeRequest(volume_id=UNKNOWN))
    assert (raised.value.status_code, raised.value.error_code) == (404, 404)


def test_list_volumes_by_ids_in_the_sdk_documented_form_and_as_a_list(
    clients: Callable[..., SimpleNamespace],
) -> None:
    sdk = clients()
    disks = [system_disk_of(sdk, SERVER), system_disk_of(sdk, ARM_SERVER)]
    request = sdk.evs_v2.ListVolumesRequest
    # The model types `ids` as a string and documents ids=['id1','id2']: sent as is.
    documented = "[" + ",".join(f"'{disk}'" for disk in [*disks, UNKNOWN]) + "]"
    listed = sdk.evs.list_volumes(request(ids=documented))
    assert (listed.count, [v.id for v in listed.volumes]) == (2, disks)
    assert [v.size for v in listed.volumes] == [40, 40]
    # A Python list instead: the SDK repeats the parameter, ids=a&ids=b.
    repeated = sdk.evs.list_volumes(request(ids=[disks[1], UNKNOWN]))
    assert [v.id for v in repeated.volumes] == [disks[1]]
    page = sdk.evs.list_volumes(request(limit=1))
    assert (page.count, [v.id for v in page.volumes]) == (2, disks[:1])
    assert [link.rel for link in page.volumes_links] == ["next"]
    with pytest.raises(sdk.ClientRequestException) as raised:
        sdk.evs.list_volumes(request(limit=0))
    assert (raised.value.status_code, raised.value.error_code) == (400, "EVS.1023")


def test_changeos_against_the_rules_is_refused_or_fails_and_is_counted(
    clients: Callable[..., SimpleNamespace], simulator_url: str
) -> None:
    sdk = clients()
    v2 = sdk.ecs_v2

    def change(server_id: str, image_id: str) -> Any:
        option = v2.ChangeServerOsWithoutCloudInitOption(
            keyname="KeyPair-test", userid="7e25b1da389f4697a79df3a0e5bd494e", imageid=image_id
        )
        body = v2.ChangeServerOsWithoutCloudInitRequestBody(os_change=option)
        return sdk.ecs.change_server_os_without_cloud_init(
            v2.ChangeServerOsWithoutCloudInitRequest(server_id=server_id, body=body)
        )

    with pytest.raises(sdk.ClientRequestException) as raised:
        change(ARM_SERVER, IMAGE)  # a Kunpeng flavor, an x86 image
    assert (raised.value.status_code, raised.value.error_code) == (400, "Ecs.0007")
    assert sim_stats(simulator_url)["incompatible_changeos"] == 1

    old_disk = system_disk_of(sdk, SERVER)
    job_id = change(SERVER, IMAGE).job_id  # pay-per-use, 40 GB disk, a 50 GB image: grows
    arm_job_id = change(ARM_SERVER, ARM_IMAGE).job_id  # compatible: accepted
    job = _wait(sdk, job_id)
    assert job.status == "SUCCESS"
    new_disk = system_disk_of(sdk, SERVER)
    assert new_disk != old_disk
    grown = sdk.evs.show_volume(sdk.evs_v2.ShowVolumeRequest(volume_id=new_disk)).volume
    assert grown.size == 50
    assert _wait(sdk, arm_job_id).status == "SUCCESS"

    uefi_job = change(SERVER, UEFI_IMAGE).job_id  # BIOS to UEFI: accepted, then it fails
    failed = _wait(sdk, uefi_job)
    assert (failed.status, failed.error_code) == ("FAIL", "Ecs.0007")
    assert "UEFI" in failed.fail_reason
    stats = sim_stats(simulator_url)
    assert stats["incompatible_changeos_by_server"] == {ARM_SERVER: 1, SERVER: 1}
    assert stats["requests"]["show_volume"] == 1
    assert stats["requests"]["list_images"] == 0


def _wait(sdk: SimpleNamespace, job_id: str) -> Any:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        job = sdk.ecs.show_job(sdk.ecs_v2.ShowJobRequest(job_id=job_id))
        if job.status in ("SUCCESS", "FAIL"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never ended")
