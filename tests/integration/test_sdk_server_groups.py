"""The official ECS SDK client, unchanged, reads server groups and a server's group from the
simulator on a real TCP port (ListServerGroups with its paging, ShowServerGroup, ShowServer's
`os:scheduler_hints`), and the stats count its changes per zone and per group: an SDK that
cannot parse a field (or warns that it had to convert one) means the simulator's JSON is wrong."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator.simulator.cloud import ServerSpec, SimulatorConfig
from tests.integration.test_sdk_against_simulator import (
    AK,
    IMAGE,
    PROJECT,
    SK,
    SimulatorThread,
)
from tests.support.sdk import prepare_sdk, sdk_client

# The SDK's TypeConversionWarning (a UserWarning) is how it says a field had the wrong type.
pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("error::UserWarning")]

# In id order.
G1 = "1a1a1a1a-0000-4000-8000-000000000001"
G2 = "2b2b2b2b-0000-4000-8000-000000000002"
G3 = "3c3c3c3c-0000-4000-8000-000000000003"
UNKNOWN_GROUP = "ffffffff-0000-4000-8000-00000000ffff"
WEB_1 = "5e5e5e5e-0000-4000-8000-000000000001"
WEB_2 = "5e5e5e5e-0000-4000-8000-000000000002"
DB_1 = "5e5e5e5e-0000-4000-8000-000000000003"
LONER = "5e5e5e5e-0000-4000-8000-000000000004"
UNGROUPED = "5e5e5e5e-0000-4000-8000-000000000005"
INVENTORY = (
    ServerSpec(id=WEB_1, status="SHUTOFF", availability_zone="az-a", server_group=G2),
    ServerSpec(id=WEB_2, status="SHUTOFF", availability_zone="az-b", server_group=G2),
    ServerSpec(id=DB_1, status="SHUTOFF", availability_zone="az-a", server_group=G1),
    ServerSpec(id=LONER, status="SHUTOFF", availability_zone="az-b", server_group=G3),
)


@pytest.fixture
def simulator_url() -> Iterator[str]:
    simulator = SimulatorThread(
        SimulatorConfig(
            ak=AK,
            sk=SK,
            project_id=PROJECT,
            job_seconds=0.5,
            inventory=INVENTORY,
            strict_inventory=True,
        )
    )
    yield simulator.start()
    simulator.stop()


@pytest.fixture
def sdk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, simulator_url: str) -> SimpleNamespace:
    """The ECS client and its module, imported with HOME (which the SDK writes to) and proxies
    made harmless."""
    prepare_sdk(monkeypatch, tmp_path)
    import huaweicloudsdkecs.v2 as ecs
    from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException

    return SimpleNamespace(
        ecs=sdk_client(ecs.EcsClient, simulator_url, ak=AK, sk=SK, project_id=PROJECT),
        v2=ecs,
        ClientRequestException=ClientRequestException,
    )


def test_list_server_groups_pages_with_limit_and_marker(sdk: SimpleNamespace) -> None:
    request = sdk.v2.ListServerGroupsRequest
    everything = sdk.ecs.list_server_groups(request())
    assert [group.id for group in everything.server_groups] == [G1, G2, G3]
    assert everything.page_info is None  # no limit: not paged
    web = everything.server_groups[1]
    assert (web.name, web.members, web.policies, web.metadata) == (
        "sim-group-2b2b2b2b",
        [WEB_1, WEB_2],
        ["anti-affinity"],
        {},
    )

    first = sdk.ecs.list_server_groups(request(limit=2))
    assert [group.id for group in first.server_groups] == [G1, G2]
    assert first.page_info.next_marker == G2
    last = sdk.ecs.list_server_groups(request(limit=2, marker=first.page_info.next_marker))
    assert [group.id for group in last.server_groups] == [G3]
    assert last.page_info is None  # the last page

    with pytest.raises(sdk.ClientRequestException) as raised:
        sdk.ecs.list_server_groups(request(limit=1001))
    assert (raised.value.status_code, raised.value.error_code) == (400, "Ecs.0005")


def test_show_server_group_and_an_unknown_one(sdk: SimpleNamespace) -> None:
    shown = sdk.ecs.show_server_group(sdk.v2.ShowServerGroupRequest(server_group_id=G1))
    group = shown.server_group
    assert (group.id, group.name, group.members, group.policies, group.metadata) == (
        G1,
        "sim-group-1a1a1a1a",
        [DB_1],
        ["anti-affinity"],
        {},
    )
    with pytest.raises(sdk.ClientRequestException) as raised:
        sdk.ecs.show_server_group(sdk.v2.ShowServerGroupRequest(server_group_id=UNKNOWN_GROUP))
    assert (raised.value.status_code, raised.value.error_code) == (404, "Ecs.0114")
    assert UNKNOWN_GROUP in raised.value.error_msg


def test_show_server_parses_the_group_and_the_zone(sdk: SimpleNamespace) -> None:
    web = sdk.ecs.show_server(sdk.v2.ShowServerRequest(server_id=WEB_2)).server
    assert web.osscheduler_hints.group == [G2]
    assert web.os_ext_a_zavailability_zone == "az-b"
    db = sdk.ecs.show_server(sdk.v2.ShowServerRequest(server_id=DB_1)).server
    assert db.to_dict()["osscheduler_hints"]["group"] == [G1]


def test_an_ungrouped_server_has_empty_scheduler_hints(
    sdk: SimpleNamespace, simulator_url: str
) -> None:
    added = {"id": UNGROUPED, "availability_zone": "az-c"}
    request = urllib.request.Request(
        f"{simulator_url}/_sim/servers",
        data=json.dumps({"servers": [added]}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read()) == {"servers": [UNGROUPED]}
    plain = sdk.ecs.show_server(sdk.v2.ShowServerRequest(server_id=UNGROUPED)).server
    hints = plain.osscheduler_hints
    assert hints is not None and hints.group is None
    listed = sdk.ecs.list_servers_details(sdk.v2.ListServersDetailsRequest(limit=10)).servers
    by_id = {server.id: server.osscheduler_hints.group for server in listed}
    assert by_id == {WEB_1: [G2], WEB_2: [G2], DB_1: [G1], LONER: [G3], UNGROUPED: None}


def test_changes_through_the_sdk_are_counted_per_zone_and_group(
    sdk: SimpleNamespace, simulator_url: str
) -> None:
    v2 = sdk.v2

    def change(server_id: str) -> str:
        option = v2.ChangeServerOsWithoutCloudInitOption(
            keyname="KeyPair-test", userid="7e25b1da389f4697a79df3a0e5bd494e", imageid=IMAGE
        )
        body = v2.ChangeServerOsWithoutCloudInitRequestBody(os_change=option)
        reply = sdk.ecs.change_server_os_without_cloud_init(
            v2.ChangeServerOsWithoutCloudInitRequest(server_id=server_id, body=body)
        )
        return str(reply.job_id)

    # Both members of G2 at once (zones a and b), then DB_1 (zone a) once they are done.
    first = [change(WEB_1), change(WEB_2)]
    for job_id in first:
        assert _wait(sdk, job_id) == "SUCCESS"
    assert _wait(sdk, change(DB_1)) == "SUCCESS"
    stats = _get_json(f"{simulator_url}/_sim/stats")
    assert stats["peak_jobs_by_group"] == {G1: 1, G2: 2, G3: 0}
    assert stats["peak_jobs_by_zone"] == {"az-a": 1, "az-b": 1}
    assert stats["jobs_by_zone"] == {"az-a": 2, "az-b": 1}
    assert stats["requests"]["changeos"] == 3
    assert stats["max_concurrent_jobs"] == 2


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _wait(sdk: SimpleNamespace, job_id: str) -> str:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        job = sdk.ecs.show_job(sdk.v2.ShowJobRequest(job_id=job_id))
        if job.status in ("SUCCESS", "FAIL"):
            return str(job.status)
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never ended")
