"""The fleet facts a pre-flight check reads (IMS images, flavors, EVS system disks, the server's
flavor, zone and OS) and Huawei's rules for which change of OS can work, on the model with an
explicit `now` and over HTTP."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from orchestrator.simulator.app import SIMULATOR
from orchestrator.simulator.cli import add_simulate_arguments, config_from_args
from orchestrator.simulator.cloud import ApiError, Cloud, Reply, ServerSpec
from orchestrator.simulator.images import ImageSpec, base_image, load_images, parse_images
from orchestrator.simulator.inventory import parse_inventory
from orchestrator.simulator.shared import derived_uuid
from orchestrator.simulator.volumes import parse_ids
from tests.support.clocks import ManualClock
from tests.unit.test_simulator_app import (
    AK,
    SK,
    Client,
    ClientFactory,
    call,
    make_app,
)
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

OTHER_SERVER = "3c1d2e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
ARM_IMAGE = "a1a1a1a1-0000-4000-8000-000000000001"
UEFI_IMAGE = "a1a1a1a1-0000-4000-8000-000000000002"
WINDOWS_IMAGE = "a1a1a1a1-0000-4000-8000-000000000003"
BIG_IMAGE = "a1a1a1a1-0000-4000-8000-000000000004"
SAVING_IMAGE = "a1a1a1a1-0000-4000-8000-000000000005"
PUBLIC_IMAGE = "a1a1a1a1-0000-4000-8000-000000000006"
UNKNOWN = "ffffffff-0000-4000-8000-00000000ffff"
CATALOG = (
    ImageSpec(id=IMAGE, name="web-euleros"),
    ImageSpec(id=ARM_IMAGE, name="web-arm", architecture="arm", cloud_init=False),
    ImageSpec(id=UEFI_IMAGE, name="web-uefi", firmware="uefi"),
    ImageSpec(id=WINDOWS_IMAGE, name="win-2019", os_type="Windows", platform="Windows"),
    ImageSpec(id=BIG_IMAGE, name="web-big", min_disk=100, firmware="bios"),
    ImageSpec(id=SAVING_IMAGE, name="web-saving", status="saving"),
    ImageSpec(id=PUBLIC_IMAGE, name="EulerOS 2.9", visibility="public"),
)
WINDOWS_BODY = os_change(imageid=WINDOWS_IMAGE, keyname=None, userid=None, adminpass="Abcdefg1!")


def catalog_cloud(**overrides: Any) -> Cloud:
    return make_cloud(image_specs=CATALOG, **overrides)


def ok(reply: Reply) -> dict[str, Any]:
    assert not isinstance(reply, ApiError), reply
    return reply


def image_ids(cloud: Cloud, query: dict[str, str], *, project: str | None = PROJECT) -> list[str]:
    return [image["id"] for image in ok(cloud.list_images(project, query, now=0.0))["images"]]


def system_disk(body: dict[str, Any]) -> str:
    return str(body["os-extended-volumes:volumes_attached"][0]["id"])


def volume(cloud: Cloud, volume_id: str, now: float = 0.0) -> dict[str, Any]:
    body = ok(cloud.show_volume(PROJECT, volume_id, now=now))["volume"]
    assert isinstance(body, dict)
    return body


def volumes(cloud: Cloud, query: dict[str, str], now: float = 0.0) -> dict[str, Any]:
    return ok(cloud.list_volumes(PROJECT, query, now=now))


# --- servers ---------------------------------------------------------------------------------


def test_servers_show_their_flavor_zone_os_and_system_disk_device() -> None:
    cloud = make_cloud()
    cloud.add_server(
        now=0.0, server_id=SERVER, flavor_id="kc1.large.2", availability_zone="cn-north-4b"
    )
    body = server(cloud, 0.0)
    assert body["flavor"] == {
        "id": "kc1.large.2",
        "name": "kc1.large.2",
        "disk": "0",
        "vcpus": "2",
        "ram": "4096",
    }
    assert body["OS-EXT-AZ:availability_zone"] == "cn-north-4b"
    assert body["metadata"]["os_type"] == "Linux"
    assert body["metadata"]["image_name"] == "sim-base-euleros-2.9"
    assert body["os-extended-volumes:volumes_attached"][0]["device"] == "/dev/vda"
    default = server(cloud, 0.0, OTHER_SERVER)  # created on first reference
    assert default["flavor"]["id"] == "s6.small.1"
    assert default["OS-EXT-AZ:availability_zone"] == "sim-az1"


def test_servers_share_one_base_image_per_seed_that_is_always_listed() -> None:
    cloud = catalog_cloud(seed=5)
    first, second = server(cloud, 0.0), server(cloud, 0.0, OTHER_SERVER)
    base = derived_uuid(5, "base-image")
    assert first["image"]["id"] == second["image"]["id"] == base == base_image(5).id
    assert base not in (IMAGE, OTHER_IMAGE)
    assert base_image(6).id != base
    listed = ok(cloud.list_images(PROJECT, {"id": base}, now=0.0))["images"]
    assert [
        (i["status"], i["min_disk"], i["__os_type"], "hw_firmware_type" in i, "__support_arm" in i)
        for i in listed
    ] == [("active", 40, "Linux", False, False)]


def test_windows_image_shows_windows_os_type_once_the_server_is_on_it() -> None:
    cloud = catalog_cloud()
    cloud.add_server(now=0.0, server_id=SERVER, status="SHUTOFF")
    accepted_job_id(submit(cloud, WINDOWS_BODY, now=0.0))
    after = server(cloud, 10.0)
    assert after["metadata"]["os_type"] == "Windows"
    assert after["metadata"]["image_name"] == "win-2019"


def test_the_flavor_filter_of_list_servers_reads_the_server_flavor() -> None:
    cloud = make_cloud()
    arm = cloud.add_server(now=0.0, flavor_id="kc1.xlarge.4")
    cloud.add_server(now=0.0)
    reply = ok(cloud.list_servers(PROJECT, {"flavor": "kc1.xlarge.4"}, now=0.0))
    assert [s["id"] for s in reply["servers"]] == [arm]


def test_inventory_takes_flavor_disk_size_and_zone() -> None:
    entry = {"flavor_id": "c7.xlarge.2", "system_disk_size": 80, "availability_zone": "az2"}
    assert parse_inventory({"servers": [entry]}) == (
        ServerSpec(flavor_id="c7.xlarge.2", system_disk_size=80, availability_zone="az2"),
    )


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        pytest.param({"flavor_id": "m6.huge.8"}, "flavor_id must be one of", id="flavor"),
        pytest.param({"system_disk_size": 0}, "system_disk_size must be within", id="disk-0"),
        pytest.param({"system_disk_size": 32769}, "system_disk_size must be", id="disk-big"),
        pytest.param({"system_disk_size": "40"}, "system_disk_size must be an", id="disk-str"),
        pytest.param({"system_disk_size": True}, "system_disk_size must be an", id="disk-bool"),
        pytest.param({"availability_zone": ""}, "availability_zone must be", id="zone"),
    ],
)
def test_bad_fleet_facts_in_the_inventory_say_what_is_wrong(
    entry: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ValueError, match=r"servers\[0\]: ") as raised:
        parse_inventory({"servers": [entry]})
    assert fragment in str(raised.value)
    with pytest.raises(ValueError):
        make_cloud().add_server(now=0.0, **entry)


# --- IMS ListImages --------------------------------------------------------------------------


def test_list_images_shows_every_attribute_the_sdk_models() -> None:
    cloud = catalog_cloud()
    [arm] = ok(cloud.list_images(PROJECT, {"id": ARM_IMAGE}, now=0.0))["images"]
    assert arm["id"] == ARM_IMAGE
    assert (arm["name"], arm["status"], arm["min_disk"], arm["min_ram"]) == (
        "web-arm",
        "active",
        40,
        0,
    )
    assert (arm["__os_type"], arm["__os_version"], arm["__platform"], arm["__os_bit"]) == (
        "Linux",
        "EulerOS 2.9 64bit",
        "EulerOS",
        "64",
    )
    assert arm["__support_arm"] == "true"
    assert "hw_firmware_type" not in arm  # null firmware: BIOS
    assert arm["__support_fc_inject"] == "true"  # the docs: "true" means NO Cloud-Init
    assert (arm["__imagetype"], arm["visibility"], arm["protected"], arm["owner"]) == (
        "private",
        "private",
        False,
        PROJECT,
    )
    assert arm["virtual_env_type"] == "FusionCompute"
    assert (arm["disk_format"], arm["container_format"], arm["tags"]) == ("zvhd2", "bare", [])
    assert arm["created_at"].endswith("Z") and arm["__support_kvm"] == "true"
    [uefi] = ok(cloud.list_images(PROJECT, {"id": UEFI_IMAGE}, now=0.0))["images"]
    assert uefi["hw_firmware_type"] == "uefi"
    assert "__support_arm" not in uefi
    assert uefi["__support_fc_inject"] == "false"
    [public] = ok(cloud.list_images(PROJECT, {"id": PUBLIC_IMAGE}, now=0.0))["images"]
    assert (public["__imagetype"], public["protected"]) == ("gold", True)
    assert public["owner"] != PROJECT


def test_list_images_filters() -> None:
    cloud = catalog_cloud()
    assert image_ids(cloud, {"id": UEFI_IMAGE.upper()}) == [UEFI_IMAGE]
    assert image_ids(cloud, {"name": "web-big"}) == [BIG_IMAGE]
    assert image_ids(cloud, {"name": "web"}) == []  # exact match only
    assert image_ids(cloud, {"status": "saving"}) == [SAVING_IMAGE]
    assert image_ids(cloud, {"__imagetype": "gold"}) == [PUBLIC_IMAGE]
    assert image_ids(cloud, {"visibility": "public"}) == [PUBLIC_IMAGE]
    assert PUBLIC_IMAGE not in image_ids(cloud, {"__imagetype": "private"})
    assert image_ids(cloud, {"__imagetype": "shared"}) == []
    assert image_ids(cloud, {"__os_type": "Windows"}) == [WINDOWS_IMAGE]
    assert image_ids(cloud, {"architecture": "arm"}) == [ARM_IMAGE]
    assert image_ids(cloud, {"architecture": "x86", "name": "web-arm"}) == []


def test_an_id_that_matches_nothing_is_an_empty_list_not_a_404() -> None:
    assert image_ids(catalog_cloud(), {"id": UNKNOWN}) == []
    assert image_ids(catalog_cloud(), {"id": "not-a-uuid"}) == []


def test_an_open_catalog_synthesizes_any_well_formed_id() -> None:
    cloud = make_cloud()
    assert image_ids(cloud, {}) == [base_image(0).id]  # synthesized images are never listed
    [image] = ok(cloud.list_images(PROJECT, {"id": UNKNOWN}, now=0.0))["images"]
    assert (image["id"], image["status"], image["min_disk"]) == (UNKNOWN, "active", 40)
    accepted_job_id(submit(cloud, os_change(imageid=UNKNOWN)))


def test_list_images_pages_by_marker_in_catalog_order() -> None:
    cloud = catalog_cloud()
    everything = image_ids(cloud, {})
    assert everything == [base_image(0).id, *(image.id for image in CATALOG)]
    pages, marker = [], ""
    while True:
        page = image_ids(cloud, {"limit": "3", **({"marker": marker} if marker else {})})
        pages.append(page)
        if len(page) < 3:
            break
        marker = page[-1]
    assert [len(page) for page in pages] == [3, 3, 2]
    assert [i for page in pages for i in page] == everything
    # The marker is a place in the catalog, whatever the filters keep.
    assert image_ids(cloud, {"marker": ARM_IMAGE, "status": "active"}) == [
        UEFI_IMAGE,
        WINDOWS_IMAGE,
        BIG_IMAGE,
        PUBLIC_IMAGE,
    ]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        pytest.param({"limit": "0"}, "IMG.0001", id="limit-0"),
        pytest.param({"limit": "1001"}, "IMG.0001", id="limit-big"),
        pytest.param({"limit": "ten"}, "IMG.0001", id="limit-text"),
        pytest.param({"marker": UNKNOWN}, "IMG.0001", id="marker-unknown"),
        pytest.param({"status": "ACTIVE"}, "IMG.0001", id="status"),
        pytest.param({"architecture": "arm64"}, "IMG.0001", id="architecture"),
        pytest.param({"__os_type": "linux"}, "IMG.0001", id="os-type"),
        pytest.param({"visibility": "everyone"}, "IMG.0001", id="visibility"),
        pytest.param({"__imagetype": "public"}, "IMG.0024", id="imagetype"),
    ],
)
def test_malformed_list_images_queries_are_400_with_the_ims_body(
    query: dict[str, str], code: str
) -> None:
    reply = catalog_cloud().list_images(PROJECT, query, now=0.0)
    assert error_of(reply) == (400, code)
    assert isinstance(reply, ApiError)
    assert reply.body("r") == {"error": {"code": code, "message": reply.message}}


def test_list_images_checks_the_x_project_id_header() -> None:
    cloud = catalog_cloud()
    assert image_ids(cloud, {}, project=None)  # token callers may send none
    reply = cloud.list_images("ffffffffffffffffffffffffffffffff", {}, now=0.0)
    assert error_of(reply) == (403, "IMG.0403")
    assert cloud.stats(0.0)["requests"]["list_images"] == 2


def test_images_can_be_added_and_replaced_and_reset_restores_the_catalog() -> None:
    cloud = catalog_cloud()
    assert cloud.put_images([ImageSpec(id=OTHER_IMAGE, name="new")], now=5.0) == [OTHER_IMAGE]
    cloud.put_images([ImageSpec(id=IMAGE, name="web-euleros", status="deleted")], now=5.0)
    assert image_ids(cloud, {})[-1] == OTHER_IMAGE
    assert image_ids(cloud, {})[1] == IMAGE  # replaced in place
    assert error_of(submit(cloud)) == (400, "Ecs.0032")
    cloud.reset()
    assert image_ids(cloud, {"id": OTHER_IMAGE}) == []
    accepted_job_id(submit(cloud))


def test_a_closed_catalog_holds_images_ids_files_entries_and_the_base_image() -> None:
    cloud = make_cloud(images=frozenset({OTHER_IMAGE}), image_specs=(CATALOG[1],))
    assert image_ids(cloud, {}) == [base_image(0).id, OTHER_IMAGE, ARM_IMAGE]
    assert error_of(submit(cloud, os_change(imageid=UNKNOWN))) == (400, "Ecs.0031")
    only_file = make_cloud(image_specs=())  # an empty file still closes the catalog
    assert image_ids(only_file, {"id": UNKNOWN}) == []


# --- the images JSON and --images-file ---------------------------------------------------------


def test_images_json_becomes_image_specs_with_defaults() -> None:
    entry = {
        "id": IMAGE.upper(),
        "name": "镜像 web-1.0_a",
        "status": "killed",
        "min_disk": 60,
        "min_ram": 2048,
        "os_type": "Other",
        "os_version": "Ubuntu 22.04 64bit",
        "platform": "Ubuntu",
        "architecture": "arm",
        "firmware": "uefi",
        "cloud_init": False,
        "visibility": "public",
    }
    assert parse_images({"images": [entry, {"id": OTHER_IMAGE}]}) == (
        ImageSpec(
            id=IMAGE,
            name="镜像 web-1.0_a",
            status="killed",
            min_disk=60,
            min_ram=2048,
            os_type="Other",
            os_version="Ubuntu 22.04 64bit",
            platform="Ubuntu",
            architecture="arm",
            firmware="uefi",
            cloud_init=False,
            visibility="public",
        ),
        ImageSpec(id=OTHER_IMAGE, name="sim-image-0b6c5d4e"),
    )


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        pytest.param([], '{"images"', id="not-an-object"),
        pytest.param({"images": [{"id": IMAGE}, "x"]}, "images[1]: an image entry", id="entry"),
        pytest.param({"images": [{}]}, "images[0]: id is required", id="no-id"),
        pytest.param({"images": [{"id": "img-1"}]}, "images[0]: id must be a UUID", id="id"),
        pytest.param({"images": [{"id": IMAGE, "min_disk": 0}]}, "min_disk must be", id="disk"),
        pytest.param({"images": [{"id": IMAGE, "status": "ACTIVE"}]}, "status must", id="st"),
        pytest.param({"images": [{"id": IMAGE, "firmware": "efi"}]}, "firmware must", id="fw"),
        pytest.param({"images": [{"id": IMAGE, "name": " x"}]}, "name must be", id="name"),
        pytest.param({"images": [{"id": IMAGE, "arch": "arm"}]}, "unknown keys", id="typo"),
        pytest.param(
            {"images": [{"id": IMAGE}, {"id": IMAGE.upper()}]},
            "images[1]: id repeats images[0]",
            id="duplicate",
        ),
    ],
)
def test_bad_images_json_names_the_entry_and_the_key(data: object, fragment: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_images(data)
    assert fragment in str(raised.value)


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_simulate_arguments(parser)
    return parser.parse_args(["--ak", AK, "--sk", SK, "--project-id", PROJECT, *argv])


def test_images_file_option_loads_the_catalog(tmp_path: Path) -> None:
    path = tmp_path / "images.json"
    path.write_text(json.dumps({"images": [{"id": ARM_IMAGE, "architecture": "arm"}]}))
    config = config_from_args(_parse("--images-file", str(path)))
    assert config.image_specs == load_images(path)
    assert config.closed_catalog and config.images is None
    assert config_from_args(_parse()).image_specs is None


@pytest.mark.parametrize(
    "content",
    ["{not json", json.dumps({"images": [{"id": IMAGE, "os_type": "Linux64"}]})],
)
def test_images_file_option_rejects_a_bad_file(
    tmp_path: Path, content: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "images.json"
    path.write_text(content)
    with pytest.raises(SystemExit):
        _parse("--images-file", str(path))
    assert "--images-file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parse("--images-file", str(tmp_path / "absent.json"))


# --- flavors ---------------------------------------------------------------------------------


def test_list_flavors_marks_only_kunpeng_flavors_arm64() -> None:
    cloud = make_cloud()
    flavors = ok(cloud.list_flavors(PROJECT, {"availability_zone": "sim-az1"}, now=0.0))
    by_id = {flavor["id"]: flavor for flavor in flavors["flavors"]}
    assert list(by_id) == ["s6.small.1", "s6.large.2", "c7.xlarge.2", "kc1.large.2", "kc1.xlarge.4"]
    assert [(f["vcpus"], f["ram"]) for f in by_id.values()] == [
        ("1", 1024),
        ("2", 4096),
        ("4", 8192),
        ("2", 4096),
        ("4", 16384),
    ]
    for flavor_id in ("kc1.large.2", "kc1.xlarge.4"):
        specs = by_id[flavor_id]["os_extra_specs"]
        assert specs["ecs:instance_architecture"] == "arm64"
        assert specs["ecs:performancetype"] == "kunpeng_computing"
    for flavor_id in ("s6.small.1", "s6.large.2", "c7.xlarge.2"):
        assert "ecs:instance_architecture" not in by_id[flavor_id]["os_extra_specs"]
    assert by_id["c7.xlarge.2"]["os_extra_specs"]["ecs:performancetype"] == "computingv3"
    small = by_id["s6.small.1"]
    assert small["os_extra_specs"]["ecs:virtualization_env_types"] == "CloudCompute"
    assert small["os_extra_specs"]["cond:operation:status"] == "normal"
    assert (small["disk"], small["OS-FLV-DISABLED:disabled"], small["rxtx_factor"]) == (
        "0",
        False,
        1.0,
    )
    assert set(small["attachableQuantity"]) == {"free_scsi", "free_blk", "free_disk", "free_nic"}
    other = "ffffffffffffffffffffffffffffffff"
    assert error_of(cloud.list_flavors(other, {}, now=0.0)) == (400, "Ecs.0023")
    assert cloud.stats(0.0)["requests"]["list_flavors"] == 2


# --- EVS system disks ------------------------------------------------------------------------


def test_show_volume_describes_the_system_disk() -> None:
    cloud = make_cloud()
    cloud.add_server(
        now=0.0, server_id=SERVER, system_disk_size=60, availability_zone="az2", charging_mode="1"
    )
    disk_id = system_disk(server(cloud, 0.0))
    body = volume(cloud, disk_id)
    assert (body["id"], body["size"], body["bootable"], body["status"]) == (
        disk_id,
        60,
        "true",
        "in-use",
    )
    [attachment] = body["attachments"]
    assert attachment["server_id"] == SERVER
    assert (attachment["volume_id"], attachment["device"]) == (disk_id, "/dev/vda")
    assert set(attachment) == {
        "server_id",
        "attachment_id",
        "attached_at",
        "host_name",
        "volume_id",
        "device",
        "id",
    }
    assert body["availability_zone"] == "az2"
    assert body["metadata"]["hw:passthrough"] == "false"
    assert body["metadata"]["orderID"]  # a yearly/monthly disk
    assert body["volume_image_metadata"]["image_id"] == base_image(0).id
    assert (body["volume_type"], body["service_type"], body["shareable"]) == ("SSD", "EVS", "false")
    assert (body["multiattach"], body["encrypted"], body["tags"]) == (False, False, {})
    pay_per_use = cloud.add_server(now=0.0)
    assert "orderID" not in volume(cloud, system_disk(server(cloud, 0.0, pay_per_use)))["metadata"]


def test_show_volume_errors() -> None:
    cloud = make_cloud()
    reply = cloud.show_volume(PROJECT, UNKNOWN, now=0.0)
    assert error_of(reply) == (404, "itemNotFound")
    assert isinstance(reply, ApiError)
    assert reply.body("r") == {
        "itemNotFound": {"code": 404, "message": f"Volume {UNKNOWN} could not be found."}
    }
    reply = cloud.show_volume(PROJECT, "vol-1", now=0.0)
    assert error_of(reply) == (400, "EVS.1002")
    assert isinstance(reply, ApiError)
    assert set(reply.body("r")["error"]) == {"code", "message"}
    other = "ffffffffffffffffffffffffffffffff"
    assert error_of(cloud.show_volume(other, UNKNOWN, now=0.0)) == (400, "EVS.0001")
    diskless = cloud.add_server(now=0.0, has_system_disk=False)
    assert server(cloud, 0.0, diskless)["os-extended-volumes:volumes_attached"] == []
    assert cloud.stats(0.0)["requests"]["show_volume"] == 3


def test_a_change_of_os_replaces_the_disk_and_the_old_id_is_gone() -> None:
    cloud = catalog_cloud()
    cloud.add_server(now=0.0, server_id=SERVER, status="SHUTOFF")
    old = system_disk(server(cloud, 0.0))
    accepted_job_id(submit(cloud, now=1.0))
    new = system_disk(server(cloud, 1.0))
    assert new != old
    assert error_of(cloud.show_volume(PROJECT, old, now=1.0)) == (404, "itemNotFound")
    assert volume(cloud, new, now=20.0)["volume_image_metadata"]["image_id"] == IMAGE


def test_a_pay_per_use_disk_smaller_than_the_image_needs_grows_to_min_disk() -> None:
    cloud = catalog_cloud()
    cloud.add_server(now=0.0, server_id=SERVER, status="SHUTOFF", system_disk_size=50)
    job_id = accepted_job_id(submit(cloud, os_change(imageid=BIG_IMAGE), now=0.0))
    assert job(cloud, job_id, 10.0)["status"] == "SUCCESS"
    assert volume(cloud, system_disk(server(cloud, 10.0)), now=10.0)["size"] == 100
    # Never smaller than it was: back to a 40 GB image, the disk stays 100 GB.
    accepted_job_id(submit(cloud, now=10.0))
    assert volume(cloud, system_disk(server(cloud, 20.0)), now=20.0)["size"] == 100


def test_list_volumes_in_listing_order_with_count_and_filters() -> None:
    cloud = make_cloud()
    ids = [cloud.add_server(now=0.0, availability_zone=f"az{n % 2}") for n in range(5)]
    cloud.add_server(now=0.0, has_system_disk=False)
    cloud.add_server(now=0.0, missing=True)
    disks = [system_disk(server(cloud, 0.0, sid)) for sid in ids]
    everything = volumes(cloud, {})
    assert everything["count"] == 5
    assert [v["id"] for v in everything["volumes"]] == disks
    assert "volumes_links" not in everything
    by_server = volumes(cloud, {"server_id": ids[2]})
    assert [v["id"] for v in by_server["volumes"]] == [disks[2]]
    assert volumes(cloud, {"availability_zone": "az1"})["count"] == 2
    assert volumes(cloud, {"status": "in-use"})["count"] == 5
    assert volumes(cloud, {"status": "available"})["count"] == 0
    assert [v["id"] for v in volumes(cloud, {"id": disks[3]})["volumes"]] == [disks[3]]
    assert cloud.stats(0.0)["requests"]["list_volumes"] == 6


@pytest.mark.parametrize(
    "form",
    [
        pytest.param(lambda ids: "[" + ",".join(f"'{i}'" for i in ids) + "]", id="sdk-doc"),
        pytest.param(lambda ids: "[" + ", ".join(f"'{i}'" for i in ids) + "]", id="py-repr"),
        pytest.param(lambda ids: json.dumps(ids), id="json"),
        pytest.param(lambda ids: ",".join(ids), id="comma"),
    ],
)
def test_list_volumes_ids_in_each_form_ignoring_unknown_ids(form: Any) -> None:
    cloud = make_cloud()
    ids = [cloud.add_server(now=0.0) for _ in range(4)]
    disks = [system_disk(server(cloud, 0.0, sid)) for sid in ids]
    wanted = [disks[3], UNKNOWN, disks[1].upper(), "junk"]
    reply = volumes(cloud, {"ids": form(wanted), "id": disks[0]})  # `id` yields to `ids`
    assert reply["count"] == 2
    assert [v["id"] for v in reply["volumes"]] == [disks[1], disks[3]]


def test_ids_may_repeat_as_the_sdk_sends_a_list_and_at_most_60_are_taken() -> None:
    assert parse_ids(["a", "b"]) == frozenset({"a", "b"})
    assert parse_ids([]) is None
    assert parse_ids([json.dumps([f"id-{n}" for n in range(60)])]) == frozenset(
        f"id-{n}" for n in range(60)
    )
    reply = make_cloud().list_volumes(PROJECT, {"ids": json.dumps(["x"] * 61)}, now=0.0)
    assert error_of(reply) == (400, "EVS.1002")


def test_list_volumes_pages_with_limit_marker_offset_and_a_next_link() -> None:
    cloud = make_cloud()
    ids = [cloud.add_server(now=0.0) for _ in range(7)]
    disks = [system_disk(server(cloud, 0.0, sid)) for sid in ids]
    first = volumes(cloud, {"limit": "3"})
    assert (first["count"], [v["id"] for v in first["volumes"]]) == (7, disks[:3])
    [link] = first["volumes_links"]
    assert link["rel"] == "next"
    assert link["href"] == f"/v2/{PROJECT}/cloudvolumes/detail?limit=3&marker={disks[2]}"
    second = volumes(cloud, {"limit": "3", "marker": disks[2]})
    assert [v["id"] for v in second["volumes"]] == disks[3:6]
    last = volumes(cloud, {"limit": "3", "marker": disks[5]})
    assert ([v["id"] for v in last["volumes"]], "volumes_links" in last) == ([disks[6]], False)
    assert last["count"] == 7  # every match, whatever the page
    assert [v["id"] for v in volumes(cloud, {"offset": "5"})["volumes"]] == disks[5:]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        pytest.param({"limit": "0"}, "EVS.1023", id="limit-0"),
        pytest.param({"limit": "1001"}, "EVS.1023", id="limit-big"),
        pytest.param({"limit": "x"}, "EVS.1023", id="limit-text"),
        pytest.param({"marker": UNKNOWN}, "EVS.1024", id="marker"),
        pytest.param({"offset": "-1"}, "EVS.1018", id="offset"),
    ],
)
def test_bad_list_volumes_paging_is_400_with_the_evs_code(query: dict[str, str], code: str) -> None:
    assert error_of(make_cloud().list_volumes(PROJECT, query, now=0.0)) == (400, code)


# --- changeos meets Huawei's rules -----------------------------------------------------------


@pytest.mark.parametrize(
    ("attributes", "body", "code", "says"),
    [
        pytest.param({}, os_change(imageid=SAVING_IMAGE), "Ecs.0032", "not active", id="saving"),
        pytest.param({}, os_change(imageid=UNKNOWN), "Ecs.0031", "does not exist", id="missing"),
        pytest.param(
            {}, os_change(imageid=ARM_IMAGE), "Ecs.0007", "architecture", id="x86-server-arm"
        ),
        pytest.param(
            {"flavor_id": "kc1.large.2"}, os_change(), "Ecs.0007", "architecture", id="arm-x86"
        ),
        pytest.param(
            {"charging_mode": "1"},
            os_change(imageid=BIG_IMAGE),
            "Ecs.0007",
            "expanded first",
            id="yearly-disk-too-small",
        ),
        pytest.param({}, os_change(imageid=WINDOWS_IMAGE), "Ecs.0005", "Windows", id="windows-key"),
        pytest.param({"locked": True}, os_change(), "Ecs.0605", "locked", id="locked"),
        pytest.param({"charging_mode": "2"}, os_change(), "Ecs.0100", "spot", id="spot"),
        pytest.param({"has_system_disk": False}, os_change(), "Ecs.0105", "disk", id="no-disk"),
    ],
)
def test_changes_the_rules_forbid_are_refused_and_counted(
    attributes: dict[str, Any], body: bytes, code: str, says: str
) -> None:
    cloud = catalog_cloud()
    cloud.add_server(now=0.0, server_id=SERVER, status="SHUTOFF", **attributes)
    reply = submit(cloud, body)
    assert error_of(reply) == (400, code)
    assert isinstance(reply, ApiError)
    assert says in reply.message
    stats = cloud.stats(0.0)
    assert (stats["incompatible_changeos"], stats["incompatible_changeos_by_server"]) == (
        1,
        {SERVER: 1},
    )
    assert stats["changeos_accepted"] == {}


def test_compatible_changes_are_accepted_and_never_counted() -> None:
    cloud = catalog_cloud()
    arm = cloud.add_server(now=0.0, status="SHUTOFF", flavor_id="kc1.large.2")
    yearly = cloud.add_server(now=0.0, status="SHUTOFF", charging_mode="1", system_disk_size=100)
    windows = cloud.add_server(now=0.0, status="SHUTOFF")
    accepted_job_id(submit(cloud, os_change(imageid=ARM_IMAGE), server=arm))
    accepted_job_id(submit(cloud, os_change(imageid=BIG_IMAGE), server=yearly))
    accepted_job_id(submit(cloud, WINDOWS_BODY, server=windows))
    accepted_job_id(submit(cloud, os_change(imageid=PUBLIC_IMAGE), server=SERVER))
    stats = cloud.stats(20.0)
    assert (stats["incompatible_changeos"], stats["incompatible_changeos_by_server"]) == (0, {})
    assert all(truth["job_status"] == "SUCCESS" for truth in stats["truth"].values())


def test_a_bios_uefi_switch_is_accepted_then_its_job_fails_on_the_old_image() -> None:
    cloud = catalog_cloud()
    cloud.add_server(now=0.0, server_id=SERVER, status="SHUTOFF")
    before = server(cloud, 0.0)
    job_id = accepted_job_id(submit(cloud, os_change(imageid=UEFI_IMAGE), now=0.0))
    done = job(cloud, job_id, 10.0)
    assert done["status"] == "FAIL"
    assert done["error_code"] == "Ecs.0007"
    assert "BIOS and UEFI" in done["fail_reason"]
    assert "BIOS and UEFI" in done["entities"]["sub_jobs"][0]["entities"]["errorcode_message"]
    after = server(cloud, 10.0)
    assert (after["status"], after["image"]["id"]) == ("ERROR", before["image"]["id"])
    assert cloud.stats(10.0)["incompatible_changeos_by_server"] == {SERVER: 1}


def test_explicit_bios_and_no_firmware_are_the_same_boot_mode() -> None:
    cloud = catalog_cloud()
    cloud.add_server(now=0.0, server_id=SERVER, status="SHUTOFF", system_disk_size=100)
    job_id = accepted_job_id(submit(cloud, os_change(imageid=BIG_IMAGE), now=0.0))  # bios
    assert job(cloud, job_id, 10.0)["status"] == "SUCCESS"
    # And from UEFI back to BIOS fails too.
    cloud.add_server(now=10.0, server_id=OTHER_SERVER, status="SHUTOFF", image_id=UEFI_IMAGE)
    job_id = accepted_job_id(submit(cloud, server=OTHER_SERVER, now=10.0))
    assert job(cloud, job_id, 20.0)["status"] == "FAIL"


def test_incompatible_changes_count_whatever_the_answer() -> None:
    cloud = catalog_cloud(transient_error_ratio=1.0)
    cloud.add_server(now=0.0, server_id=SERVER, status="SHUTOFF", locked=True)
    assert error_of(submit(cloud))[1] in ("Ecs.0615", "Common.1503")
    assert error_of(submit(cloud, b"{not json"))[1] in ("Ecs.0615", "Common.1503")
    assert cloud.stats(0.0)["incompatible_changeos"] == 2  # a locked server, whatever the body
    # Missing servers and other projects' servers are no server of ours: not counted.
    cloud.add_server(now=0.0, server_id=OTHER_SERVER, missing=True)
    submit(cloud, os_change(imageid=ARM_IMAGE), server=OTHER_SERVER)
    submit(cloud, os_change(imageid=ARM_IMAGE), project="ffffffffffffffffffffffffffffffff")
    assert cloud.stats(0.0)["incompatible_changeos"] == 2


def test_counting_does_not_create_a_server() -> None:
    cloud = catalog_cloud(transient_error_ratio=1.0)
    submit(cloud, os_change(imageid=ARM_IMAGE), server=OTHER_SERVER)
    assert cloud.stats(0.0)["incompatible_changeos_by_server"] == {OTHER_SERVER: 1}
    assert ok(cloud.list_servers(PROJECT, {}, now=0.0))["count"] == 0


# --- over HTTP -------------------------------------------------------------------------------


@pytest.fixture
async def client(aiohttp_client: ClientFactory, clock: ManualClock) -> Client:
    return await aiohttp_client(make_app(clock, image_specs=CATALOG, auth_token="tok"))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


async def test_the_new_routes_answer_signed_requests(client: Client) -> None:
    status, body, _ = await call(client, "GET", f"/v2/cloudimages?id={ARM_IMAGE}&limit=5")
    assert status == 200
    assert [image["id"] for image in body["images"]] == [ARM_IMAGE]
    status, body, _ = await call(client, "GET", "/v2/cloudimages?__imagetype=gold")
    assert [image["id"] for image in body["images"]] == [PUBLIC_IMAGE]
    # "flavors" and "detail" are routes of their own, not a server or a volume id.
    status, body, _ = await call(client, "GET", f"/v1/{PROJECT}/cloudservers/flavors")
    assert status == 200 and len(body["flavors"]) == 5
    status, shown, _ = await call(client, "GET", f"/v1/{PROJECT}/cloudservers/{SERVER}")
    disk = system_disk(shown["server"])
    status, body, _ = await call(client, "GET", f"/v2/{PROJECT}/cloudvolumes/{disk}")
    assert (status, body["volume"]["id"]) == (200, disk)
    quoted = quote(json.dumps([disk, UNKNOWN]), safe="")
    status, body, _ = await call(client, "GET", f"/v2/{PROJECT}/cloudvolumes/detail?ids={quoted}")
    assert (status, body["count"], body["volumes"][0]["id"]) == (200, 1, disk)
    repeated = f"/v2/{PROJECT}/cloudvolumes/detail?ids={UNKNOWN}&ids={disk}"
    status, body, _ = await call(client, "GET", repeated)
    assert (status, body["count"]) == (200, 1)


async def test_http_error_bodies_of_ims_and_evs(client: Client) -> None:
    status, body, _ = await call(client, "GET", "/v2/cloudimages?limit=0")
    assert status == 400
    assert body == {"error": {"code": "IMG.0001", "message": body["error"]["message"]}}
    headers = {"X-Auth-Token": "tok", "X-Project-Id": "ffffffffffffffffffffffffffffffff"}
    async with client.get("/v2/cloudimages", headers=headers) as resp:
        assert resp.status == 403
        assert (await resp.json())["error"]["code"] == "IMG.0403"
    status, body, _ = await call(client, "GET", f"/v2/{PROJECT}/cloudvolumes/{UNKNOWN}")
    assert (status, body["itemNotFound"]["code"]) == (404, 404)
    status, body, _ = await call(client, "GET", f"/v2/{PROJECT}/cloudvolumes/detail?marker=x")
    assert (status, body["error"]["code"]) == (400, "EVS.1024")


async def test_the_new_routes_share_the_one_rate_limit(
    aiohttp_client: ClientFactory, clock: ManualClock
) -> None:
    client = await aiohttp_client(make_app(clock, rate_limit=1.0, burst=2))
    assert (await call(client, "GET", "/v2/cloudimages"))[0] == 200
    assert (await call(client, "GET", f"/v2/{PROJECT}/cloudvolumes/detail"))[0] == 200
    status, body, _ = await call(client, "GET", f"/v1/{PROJECT}/cloudservers/flavors")
    assert (status, body["error_code"]) == (429, "APIGW.0308")


async def test_sim_images_adds_and_replaces_images(client: Client) -> None:
    new = {"id": OTHER_IMAGE, "name": "fresh", "firmware": "uefi"}
    async with client.post("/_sim/images", json={"images": [new]}) as resp:
        assert (resp.status, await resp.json()) == (200, {"images": [OTHER_IMAGE]})
    status, body, _ = await call(client, "GET", f"/v2/cloudimages?id={OTHER_IMAGE}")
    assert (status, body["images"][0]["hw_firmware_type"]) == (200, "uefi")
    async with client.post("/_sim/images", json={"images": [{"id": "x"}]}) as resp:
        assert resp.status == 400
        assert "images[0]: id must be a UUID" in (await resp.json())["error"]
    async with client.post("/_sim/images", data=b"{not json") as resp:
        assert resp.status == 400


async def test_a_throttled_incompatible_changeos_still_counts(
    aiohttp_client: ClientFactory, clock: ManualClock
) -> None:
    client = await aiohttp_client(make_app(clock, image_specs=CATALOG, rate_limit=1.0, burst=1))
    assert (await call(client, "GET", "/v2/cloudimages"))[0] == 200
    body = os_change(imageid=ARM_IMAGE)
    path = f"/v1/{PROJECT}/cloudservers/{SERVER}/changeos"
    assert (await call(client, "POST", path, body))[0] == 429
    stats = client.app[SIMULATOR].cloud.stats(clock.now)
    assert stats["incompatible_changeos_by_server"] == {SERVER: 1}
    assert stats["changeos_accepted"] == {}
