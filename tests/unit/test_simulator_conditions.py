"""Deterministic server conditions and the inventory, on the model with an explicit `now`:
missing, locked, diskless, spot and busy servers, replacement, strict inventories, generated
fleets and listing them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.simulator.cloud import ApiError, Cloud, ServerSpec
from orchestrator.simulator.inventory import (
    generated_inventory,
    load_inventory,
    parse_inventory,
    parse_tags,
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


def listed(cloud: Cloud, query: dict[str, str], now: float = 0.0) -> tuple[int, list[str]]:
    reply = cloud.list_servers(PROJECT, query, now=now)
    assert not isinstance(reply, ApiError), reply
    return reply["count"], [s["id"] for s in reply["servers"]]


# --- conditions ------------------------------------------------------------------------------


def test_missing_server_is_404_everywhere_and_never_listed() -> None:
    cloud = make_cloud()
    cloud.put_servers([ServerSpec(id=SERVER, missing=True)], now=0.0)
    assert error_of(submit(cloud)) == (404, "Ecs.0114")
    assert error_of(cloud.show_server(PROJECT, SERVER, now=0.0)) == (404, "Ecs.0114")
    assert listed(cloud, {}) == (0, [])
    assert listed(cloud, {"server_id": SERVER}) == (0, [])
    assert cloud.stats(0.0)["changeos_accepted"] == {}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({"missing": True, "locked": True}, (404, "Ecs.0114"), id="missing-first"),
        pytest.param({"locked": True, "has_system_disk": False}, (400, "Ecs.0605"), id="locked"),
        pytest.param(
            {"has_system_disk": False, "charging_mode": "2"}, (400, "Ecs.0105"), id="no-disk"
        ),
        pytest.param({"charging_mode": "2", "task_state": "x"}, (400, "Ecs.0100"), id="spot"),
        pytest.param({"task_state": "powering-on"}, (501, "Ecs.0603"), id="busy"),
    ],
)
def test_conditions_are_checked_in_the_clouds_order(
    spec: dict[str, Any], expected: tuple[int, str]
) -> None:
    cloud = make_cloud()
    cloud.put_servers([ServerSpec(id=SERVER, **spec)], now=0.0)
    # No withStopServer on a running server: that rule comes last, so it never shows here.
    assert error_of(submit(cloud, os_change(mode=None))) == expected


def test_yearly_monthly_servers_can_change_os() -> None:
    cloud = make_cloud()
    cloud.add_server(now=0.0, server_id=SERVER, charging_mode="1")
    accepted_job_id(submit(cloud))
    assert server(cloud, 0.0)["metadata"]["charging_mode"] == "1"


def test_task_state_keeps_the_server_busy_until_it_is_replaced() -> None:
    cloud = make_cloud()
    cloud.add_server(now=0.0, server_id=SERVER, task_state="powering-on", status="SHUTOFF")
    shown = server(cloud, 1e6)
    assert (shown["status"], shown["OS-EXT-STS:task_state"]) == ("SHUTOFF", "powering-on")
    assert error_of(submit(cloud, now=1e6)) == (501, "Ecs.0603")
    cloud.put_servers([ServerSpec(id=SERVER, status="SHUTOFF")], now=1e6)
    accepted_job_id(submit(cloud, now=1e6))


def test_busy_for_s_is_busy_powering_on_then_idle() -> None:
    cloud = make_cloud()
    cloud.put_servers([ServerSpec(id=SERVER, busy_for_s=30.0)], now=100.0)
    assert server(cloud, 129.9)["OS-EXT-STS:task_state"] == "powering-on"
    assert error_of(submit(cloud, now=129.9)) == (501, "Ecs.0603")
    assert server(cloud, 130.0)["OS-EXT-STS:task_state"] == ""
    accepted_job_id(submit(cloud, now=130.0))


def test_busy_for_s_keeps_a_given_task_state() -> None:
    cloud = make_cloud()
    cloud.add_server(now=0.0, server_id=SERVER, task_state="resize_prep", busy_for_s=5.0)
    assert server(cloud, 4.0)["OS-EXT-STS:task_state"] == "resize_prep"
    assert server(cloud, 5.0)["OS-EXT-STS:task_state"] == ""


def test_error_server_shows_error_and_can_be_reinstalled() -> None:
    cloud = make_cloud()
    cloud.add_server(now=0.0, server_id=SERVER, status="ERROR", image_id=OTHER_IMAGE)
    shown = server(cloud, 0.0)
    assert (shown["status"], shown["OS-EXT-STS:vm_state"]) == ("ERROR", "error")
    assert shown["image"]["id"] == OTHER_IMAGE
    accepted_job_id(submit(cloud, os_change(mode=None)))  # not running: no mode needed
    assert server(cloud, 10.0)["image"]["id"] == IMAGE


# --- replacing and strict inventories --------------------------------------------------------


def test_replacing_a_server_supersedes_its_finished_jobs_but_keeps_its_history() -> None:
    cloud = make_cloud()
    first = accepted_job_id(submit(cloud, now=0.0))
    assert server(cloud, 10.0)["image"]["id"] == IMAGE
    assert cloud.put_servers([ServerSpec(id=SERVER, image_id=OTHER_IMAGE)], now=20.0) == [SERVER]
    assert server(cloud, 20.0)["image"]["id"] == OTHER_IMAGE
    assert job(cloud, first, 20.0)["status"] == "SUCCESS"
    accepted_job_id(submit(cloud, now=20.0))  # IMAGE again, and its last change succeeded
    stats = cloud.stats(30.0)
    assert stats["duplicate_submissions"] == 1
    assert stats["changeos_accepted"] == {SERVER: 2}


def test_replacing_a_server_does_not_cancel_its_running_job() -> None:
    cloud = make_cloud()
    accepted_job_id(submit(cloud, now=0.0))
    cloud.put_servers([ServerSpec(id=SERVER, name="renamed")], now=5.0)
    during = server(cloud, 5.0)
    assert (during["name"], during["status"]) == ("renamed", "REBUILD")
    assert error_of(submit(cloud, now=5.0)) == (501, "Ecs.0603")
    assert server(cloud, 10.0)["image"]["id"] == IMAGE


def test_replacing_keeps_the_listing_position() -> None:
    cloud = make_cloud()
    ids = [cloud.add_server(now=0.0) for _ in range(3)]
    cloud.put_servers([ServerSpec(id=ids[0], name="again")], now=0.0)
    assert listed(cloud, {}) == (3, ids)


def test_add_server_refuses_an_existing_id_but_put_servers_replaces_it() -> None:
    cloud = make_cloud()
    cloud.add_server(now=0.0, server_id=SERVER)
    with pytest.raises(ValueError):
        cloud.add_server(now=0.0, server_id=SERVER)
    cloud.put_servers([ServerSpec(id=SERVER, locked=True)], now=0.0)
    assert server(cloud, 0.0)["locked"] is True


def test_generated_ids_are_fresh_and_follow_the_seed() -> None:
    specs = [ServerSpec(name="a"), ServerSpec(name="b")]
    first = make_cloud(seed=5).put_servers(specs, now=0.0)
    assert len(set(first)) == 2
    assert make_cloud(seed=5).put_servers(specs, now=0.0) == first
    assert make_cloud(seed=6).put_servers(specs, now=0.0) != first


def test_strict_inventory_knows_only_its_servers() -> None:
    cloud = make_cloud(strict_inventory=True, inventory=(ServerSpec(id=SERVER),))
    assert error_of(submit(cloud, server=OTHER_SERVER)) == (404, "Ecs.0114")
    assert error_of(cloud.show_server(PROJECT, OTHER_SERVER, now=0.0)) == (404, "Ecs.0114")
    accepted_job_id(submit(cloud))
    cloud.add_server(now=0.0, server_id=OTHER_SERVER)
    assert server(cloud, 0.0, OTHER_SERVER)["id"] == OTHER_SERVER


def test_lenient_inventory_creates_any_uuid_on_first_reference() -> None:
    cloud = make_cloud(inventory=(ServerSpec(id=SERVER),))
    assert server(cloud, 0.0, OTHER_SERVER)["id"] == OTHER_SERVER
    assert listed(cloud, {}) == (2, [SERVER, OTHER_SERVER])


def test_reset_restores_the_inventory_with_busy_counted_from_the_reset() -> None:
    cloud = make_cloud(inventory=(ServerSpec(id=SERVER, busy_for_s=10.0),))
    assert error_of(submit(cloud, now=5.0)) == (501, "Ecs.0603")
    accepted_job_id(submit(cloud, now=10.0))
    cloud.add_server(now=10.0)
    cloud.reset(now=100.0)
    assert listed(cloud, {}, now=100.0) == (1, [SERVER])
    assert error_of(submit(cloud, now=109.0)) == (501, "Ecs.0603")
    accepted_job_id(submit(cloud, now=110.0))


# --- the generated fleet and listing it ------------------------------------------------------


def test_inventory_size_creates_named_tagged_servers_with_seeded_ids() -> None:
    cloud = make_cloud(seed=3, inventory_size=12, inventory_tags=("env=prod", "tier=web"))
    reply = cloud.list_servers(PROJECT, {"limit": "1000"}, now=0.0)
    assert not isinstance(reply, ApiError)
    assert reply["count"] == 12
    names = [s["name"] for s in reply["servers"]]
    assert names == [f"web-{n:04d}" for n in range(1, 13)]
    assert {tuple(s["tags"]) for s in reply["servers"]} == {("env=prod", "tier=web")}
    ids = [s["id"] for s in reply["servers"]]
    assert ids == [spec.id for spec in generated_inventory(3, 12, ())]
    assert ids != [spec.id for spec in generated_inventory(4, 12, ())]


def test_list_filters_inventory_and_lazy_servers_by_tag_name_and_status() -> None:
    prod = tuple(ServerSpec(name=f"web-{n}", tags=("env=prod", f"n={n}")) for n in range(3))
    cloud = make_cloud(inventory=(*prod, ServerSpec(name="db-0", tags=("env=test",))))
    web = listed(cloud, {"tags": "env=prod"})[1]
    assert len(web) == 3
    server(cloud, 0.0)  # a lazily created one: listed, without tags
    assert listed(cloud, {})[0] == 5
    assert listed(cloud, {"tags": "env=prod"}) == (3, web)
    assert listed(cloud, {"tags": "n=1"}) == (1, web[1:2])
    assert listed(cloud, {"tags": "env"}) == (0, [])  # a whole key=value, not a prefix
    assert listed(cloud, {"name": "eb-"}) == (3, web)  # fuzzy: a substring anywhere
    assert listed(cloud, {"name": "ecs-"}) == (1, [SERVER])
    accepted_job_id(submit(cloud, server=web[2]))
    assert listed(cloud, {"status": "ACTIVE", "tags": "env=prod"}, now=1.0) == (3, web)
    assert listed(cloud, {"status": "REBUILD"}, now=1.0) == (1, web[2:])


def test_marker_pages_through_a_filtered_fleet() -> None:
    cloud = make_cloud(inventory_size=25, inventory_tags=("env=prod",))
    every = listed(cloud, {"limit": "1000"})[1]
    cloud.put_servers([ServerSpec(id=every[4], tags=("env=test",))], now=0.0)
    expected = every[:4] + every[5:]
    pages, marker = [], ""
    while True:
        query = {"limit": "10", "tags": "env=prod", **({"marker": marker} if marker else {})}
        count, page = listed(cloud, query)
        assert count == 24
        pages.append(page)
        if len(page) < 10:
            break
        marker = page[-1]
    assert [len(page) for page in pages] == [10, 10, 4]
    assert [sid for page in pages for sid in page] == expected
    # A marker that the filter excludes still marks a place in the listing order.
    assert listed(cloud, {"tags": "env=prod", "marker": every[4], "limit": "2"})[1] == every[5:7]


def test_limit_goes_up_to_1000() -> None:
    cloud = make_cloud(inventory_size=1001)
    assert listed(cloud, {"limit": "1000"})[0] == 1001
    assert len(listed(cloud, {"limit": "1000"})[1]) == 1000
    assert error_of(cloud.list_servers(PROJECT, {"limit": "1001"}, now=0.0)) == (400, "Ecs.0005")


# --- the inventory JSON ----------------------------------------------------------------------


def test_inventory_json_becomes_server_specs() -> None:
    specs = parse_inventory(
        {
            "servers": [
                {
                    "id": SERVER,
                    "name": "web-1",
                    "tags": ["env=prod"],
                    "status": "SHUTOFF",
                    "locked": True,
                    "charging_mode": "1",
                    "has_system_disk": False,
                    "image_id": IMAGE,
                    "key_name": "kp",
                    "task_state": "powering-on",
                    "busy_for_s": 3,
                    "missing": False,
                },
                {},
            ]
        }
    )
    assert specs == (
        ServerSpec(
            id=SERVER,
            name="web-1",
            tags=("env=prod",),
            status="SHUTOFF",
            locked=True,
            charging_mode="1",
            has_system_disk=False,
            image_id=IMAGE,
            key_name="kp",
            task_state="powering-on",
            busy_for_s=3.0,
        ),
        ServerSpec(),
    )


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        pytest.param([], '{"servers"', id="not-an-object"),
        pytest.param({"servers": {}}, '{"servers"', id="servers-not-a-list"),
        pytest.param({"servers": ["x"]}, "servers[0]: a server entry", id="entry-not-object"),
        pytest.param({"servers": [{}, {"busy_for": 3}]}, "servers[1]: unknown", id="typo"),
        pytest.param({"servers": [{"id": "i-1"}]}, "id must be a UUID", id="id"),
        pytest.param({"servers": [{"tags": "env=prod"}]}, "tags must be a list", id="tags-str"),
        pytest.param({"servers": [{"tags": ["env"]}]}, "'env' is not", id="tag-no-value"),
        pytest.param({"servers": [{"charging_mode": 2}]}, "charging_mode", id="charging-int"),
        pytest.param({"servers": [{"status": "active"}]}, "status", id="status-lower"),
        pytest.param({"servers": [{"locked": "yes"}]}, "locked must be", id="locked-str"),
        pytest.param({"servers": [{"busy_for_s": -1}]}, "busy_for_s", id="busy-negative"),
        pytest.param({"servers": [{"busy_for_s": True}]}, "busy_for_s", id="busy-bool"),
    ],
)
def test_bad_inventory_json_says_what_is_wrong(data: object, fragment: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_inventory(data)
    assert fragment in str(raised.value)


def test_inventory_file_is_the_same_json(tmp_path: Path) -> None:
    path = tmp_path / "inventory.json"
    path.write_text(json.dumps({"servers": [{"id": SERVER, "locked": True}]}))
    assert load_inventory(path) == (ServerSpec(id=SERVER, locked=True),)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read"):
        load_inventory(path)
    with pytest.raises(ValueError, match="cannot read"):
        load_inventory(tmp_path / "absent.json")


def test_tags_text_is_comma_separated_key_values() -> None:
    assert parse_tags("env=prod, tier=web,") == ("env=prod", "tier=web")
    assert parse_tags("team=") == ("team=",)
    for bad in ("env", "=prod", "env=prod,x"):
        with pytest.raises(ValueError):
            parse_tags(bad)


def test_config_rejects_a_bad_inventory() -> None:
    for bad in (
        {"inventory_size": -1},
        {"inventory_tags": ("env",)},
        {"inventory": ({"id": SERVER},)},
    ):
        with pytest.raises(ValueError):
            make_cloud(**bad)
