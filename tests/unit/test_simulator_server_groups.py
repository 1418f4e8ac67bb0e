"""Server groups and failure domains in the simulator: the `server_group` inventory key,
`os:scheduler_hints` in server bodies (and the client's `Server.server_group`), ListServerGroups
paging and ShowServerGroup, and the peaks of concurrent changeos jobs per zone and per group in
the stats, driven with an explicit `now` (and a few calls over HTTP)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from orchestrator.cloud.models import Server
from orchestrator.simulator.app import SIMULATOR
from orchestrator.simulator.cloud import ApiError, Cloud, Reply, ServerSpec
from orchestrator.simulator.inventory import parse_inventory
from orchestrator.simulator.jobs import NEVER, JobBook, SimJob
from tests.support.clocks import ManualClock
from tests.unit.test_simulator_app import Client, ClientFactory, call, make_app
from tests.unit.test_simulator_cloud import (
    OTHER_IMAGE,
    PROJECT,
    SERVER,
    accepted_job_id,
    error_of,
    make_cloud,
    os_change,
    server,
    submit,
)

# In id order: G1 < G2 < G3.
G1 = "1a1a1a1a-0000-4000-8000-000000000001"
G2 = "2b2b2b2b-0000-4000-8000-000000000002"
G3 = "3c3c3c3c-0000-4000-8000-000000000003"
UNKNOWN_GROUP = "ffffffff-0000-4000-8000-00000000ffff"
GROUP_KEYS = {"id", "name", "members", "metadata", "policies"}


def ok(reply: Reply) -> dict[str, Any]:
    assert not isinstance(reply, ApiError), reply
    return reply


def sid(number: int) -> str:
    return f"5e5e5e5e-0000-4000-8000-{number:012d}"


def grouped_cloud(**overrides: Any) -> Cloud:
    """Five servers: 1 and 4 in G2, 2 in G1, 3 in G3 but missing, 5 in no group."""
    cloud = make_cloud(**overrides)
    cloud.put_servers(
        [
            ServerSpec(id=sid(1), server_group=G2),
            ServerSpec(id=sid(2), server_group=G1),
            ServerSpec(id=sid(3), server_group=G3, missing=True),
            ServerSpec(id=sid(4), server_group=G2),
            ServerSpec(id=sid(5)),
        ],
        now=0.0,
    )
    return cloud


def list_groups(cloud: Cloud, **query: str) -> dict[str, Any]:
    return ok(cloud.list_server_groups(PROJECT, query, now=0.0))


# --- the inventory ---------------------------------------------------------------------------


def test_server_group_is_an_optional_lower_case_uuid() -> None:
    [grouped, plain, cleared] = parse_inventory(
        {"servers": [{"server_group": G1}, {}, {"server_group": None}]}
    )
    assert (grouped.server_group, plain.server_group, cleared.server_group) == (G1, None, None)


@pytest.mark.parametrize("value", [G1.upper(), "not-a-uuid", "", 7, [G1], {"id": G1}])
def test_a_bad_server_group_is_refused_with_the_key_and_the_entry(value: object) -> None:
    with pytest.raises(ValueError, match=r"servers\[1\]: server_group must be a lower-case UUID"):
        parse_inventory({"servers": [{}, {"server_group": value}]})


def test_a_spec_built_in_code_is_checked_too() -> None:
    with pytest.raises(ValueError, match="server_group must be a lower-case UUID"):
        ServerSpec(server_group="group-1")
    cloud = make_cloud()
    with pytest.raises(ValueError, match="server_group"):
        cloud.add_server(now=0.0, server_group=G1.upper())
    added = cloud.add_server(now=0.0, server_group=G1, availability_zone="az-x")
    assert server(cloud, 0.0, added)["os:scheduler_hints"] == {"group": [G1]}


# --- server bodies ---------------------------------------------------------------------------


def test_a_grouped_server_shows_its_group_in_the_scheduler_hints() -> None:
    cloud = grouped_cloud()
    assert server(cloud, 0.0, sid(1))["os:scheduler_hints"] == {"group": [G2]}
    assert server(cloud, 0.0, sid(5))["os:scheduler_hints"] == {}
    assert server(cloud, 0.0, SERVER)["os:scheduler_hints"] == {}  # made on first reference
    listed = ok(cloud.list_servers(PROJECT, {}, now=0.0))["servers"]
    assert [body["os:scheduler_hints"] for body in listed] == [
        {"group": [G2]},
        {"group": [G1]},
        {"group": [G2]},
        {},
        {},
    ]


def test_the_client_reads_the_group_from_the_server_body() -> None:
    cloud = grouped_cloud()
    assert Server.from_body(server(cloud, 0.0, sid(1))).server_group == G2
    assert Server.from_body(server(cloud, 0.0, sid(5))).server_group is None


@pytest.mark.parametrize(
    ("hints", "expected"),
    [
        ({"group": [G1.upper(), G2]}, G1),  # the first one, in lower case
        ({"group": []}, None),
        ({"group": G1}, None),  # documented as a list
        ({"group": [7]}, None),
        ({"group": ["not-a-uuid"]}, None),
        ({"tenancy": ["dedicated"]}, None),
        ([G1], None),
        (None, None),
    ],
)
def test_the_client_ignores_a_malformed_group(hints: object, expected: str | None) -> None:
    body: dict[str, Any] = {"id": sid(1), "os:scheduler_hints": hints}
    assert Server.from_body(body).server_group == expected
    assert Server.from_body({"id": sid(1)}).server_group is None  # absent


# --- ListServerGroups and ShowServerGroup ---------------------------------------------------


def test_list_shows_every_group_by_id_with_its_listed_members() -> None:
    body = list_groups(grouped_cloud())
    assert set(body) == {"server_groups"}  # no limit: no paging, no page_info
    # G3's only member is missing (404 everywhere, never listed): no group is left of it.
    assert body["server_groups"] == [
        {
            "id": G1,
            "name": "sim-group-1a1a1a1a",
            "members": [sid(2)],
            "metadata": {},
            "policies": ["anti-affinity"],
        },
        {
            "id": G2,
            "name": "sim-group-2b2b2b2b",
            "members": [sid(1), sid(4)],
            "metadata": {},
            "policies": ["anti-affinity"],
        },
    ]
    assert list_groups(make_cloud()) == {"server_groups": []}


def test_list_pages_with_limit_and_marker_until_no_page_info() -> None:
    cloud = grouped_cloud()
    cloud.add_server(now=0.0, server_id=sid(6), server_group=G3)
    first = list_groups(cloud, limit="2")
    assert [group["id"] for group in first["server_groups"]] == [G1, G2]
    assert first["page_info"] == {"next_marker": G2}  # the last id on this page
    last = list_groups(cloud, limit="2", marker=first["page_info"]["next_marker"])
    assert [group["id"] for group in last["server_groups"]] == [G3]
    assert set(last) == {"server_groups"}  # nothing follows: no page_info
    # A page that happens to end with the last group has none either.
    assert set(list_groups(cloud, limit="3")) == {"server_groups"}
    assert list_groups(cloud, limit="1", marker=G3) == {"server_groups": []}
    assert list_groups(cloud, limit="1000", marker=G1.upper())["server_groups"][0]["id"] == G2
    assert list_groups(cloud, limit="2", marker="")["page_info"] == {"next_marker": G2}


@pytest.mark.parametrize(
    "query",
    [
        {"marker": G1},  # marker only with limit
        {"limit": "0"},
        {"limit": "1001"},  # at most 1000
        {"limit": "ten"},
        {"limit": "2", "marker": UNKNOWN_GROUP},
    ],
)
def test_bad_paging_is_400_ecs_0005(query: dict[str, str]) -> None:
    reply = grouped_cloud().list_server_groups(PROJECT, query, now=0.0)
    assert error_of(reply) == (400, "Ecs.0005")


def test_show_answers_one_group() -> None:
    cloud = grouped_cloud()
    body = ok(cloud.show_server_group(PROJECT, G2, now=0.0))
    assert set(body) == {"server_group"}
    assert set(body["server_group"]) == GROUP_KEYS
    assert body["server_group"] == list_groups(cloud)["server_groups"][1]
    assert ok(cloud.show_server_group(PROJECT, G2.upper(), now=0.0)) == body


@pytest.mark.parametrize("group_id", [UNKNOWN_GROUP, G3, "not-a-uuid"])
def test_an_unknown_group_is_404_in_the_ecs_shape(group_id: str) -> None:
    reply = grouped_cloud().show_server_group(PROJECT, group_id, now=0.0)
    assert error_of(reply) == (404, "Ecs.0114")
    assert isinstance(reply, ApiError)
    assert reply.body("rid") == {
        "error": {
            "code": "Ecs.0114",
            "message": f"The server group {group_id} does not exist.",
            "details": [],
        }
    }


def test_another_project_is_refused_and_the_calls_are_counted() -> None:
    cloud = grouped_cloud()
    other = "ffffffffffffffffffffffffffffffff"
    assert error_of(cloud.list_server_groups(other, {}, now=0.0)) == (400, "Ecs.0023")
    assert error_of(cloud.show_server_group(other, G1, now=0.0)) == (400, "Ecs.0023")
    cloud.show_server_group(PROJECT, UNKNOWN_GROUP, now=0.0)
    stats = cloud.stats(0.0)
    assert stats["requests"]["list_server_groups"] == 1
    assert stats["requests"]["show_server_group"] == 2
    assert stats["errors_by_code"] == {"Ecs.0023": 2, "Ecs.0114": 1}


def test_groups_follow_the_servers_when_they_are_replaced() -> None:
    cloud = grouped_cloud()
    cloud.put_servers([ServerSpec(id=sid(2), server_group=G2)], now=1.0)
    assert [group["id"] for group in list_groups(cloud)["server_groups"]] == [G2]
    assert list_groups(cloud)["server_groups"][0]["members"] == [sid(1), sid(2), sid(4)]
    assert error_of(cloud.show_server_group(PROJECT, G1, now=1.0)) == (404, "Ecs.0114")


# --- peaks of concurrent changeos jobs per zone and per group -------------------------------


def test_peaks_count_overlaps_and_not_jobs_that_end_as_another_starts() -> None:
    cloud = make_cloud(job_seconds=10.0)
    cloud.put_servers(
        [
            ServerSpec(id=sid(1), availability_zone="az-a", server_group=G1),
            ServerSpec(id=sid(2), availability_zone="az-a", server_group=G1),
            ServerSpec(id=sid(3), availability_zone="az-a"),
            ServerSpec(id=sid(4), availability_zone="az-b", server_group=G2),
            ServerSpec(id=sid(5), availability_zone="az-b", server_group=G2),
            ServerSpec(id=sid(6), availability_zone="az-c", server_group=G3),  # never changed
        ],
        now=0.0,
    )
    # In time order, as a clock runs. az-a: 0..10 and 5..15 overlap; 15..25 starts the moment
    # 5..15 ends, so the peak stays 2. az-b: 0..10 then 10..20, back to back: never two at once.
    for server_id, at in ((sid(1), 0.0), (sid(4), 0.0), (sid(2), 5.0), (sid(5), 10.0)):
        accepted_job_id(submit(cloud, server=server_id, now=at))
    accepted_job_id(submit(cloud, server=sid(3), now=15.0))
    stats = cloud.stats(16.0)
    assert stats["peak_jobs_by_zone"] == {"az-a": 2, "az-b": 1, "az-c": 0}
    # sid(3) is in no group: it counts for its zone only.
    assert stats["peak_jobs_by_group"] == {G1: 2, G2: 1, G3: 0}
    assert stats["jobs_by_zone"] == {"az-a": 3, "az-b": 2, "az-c": 0}
    assert stats["max_concurrent_jobs"] == 3  # 5..10: sid(1), sid(2), sid(4)


def test_peaks_include_running_and_stuck_jobs_and_the_same_server_again() -> None:
    cloud = make_cloud(job_seconds=10.0, stuck_ratio=1.0)  # every job RUNNING forever
    cloud.put_servers([ServerSpec(id=sid(i), server_group=G1) for i in (1, 2)], now=0.0)
    accepted_job_id(submit(cloud, server=sid(1), now=0.0))
    accepted_job_id(submit(cloud, server=sid(2), now=1000.0))
    stats = cloud.stats(2000.0)
    assert stats["peak_jobs_by_group"] == {G1: 2}
    assert stats["peak_jobs_by_zone"] == {"sim-az1": 2}

    again = make_cloud(job_seconds=10.0)
    again.add_server(now=0.0, server_id=sid(1), server_group=G1)
    accepted_job_id(submit(again, server=sid(1), now=0.0))
    accepted_job_id(submit(again, os_change(imageid=OTHER_IMAGE), server=sid(1), now=10.0))
    assert again.stats(30.0)["peak_jobs_by_group"] == {G1: 1}
    assert again.stats(30.0)["jobs_by_zone"] == {"sim-az1": 2}


def test_a_job_keeps_the_zone_and_group_its_server_had_when_accepted() -> None:
    cloud = make_cloud(job_seconds=10.0)
    cloud.add_server(now=0.0, server_id=sid(1), availability_zone="az-a", server_group=G1)
    accepted_job_id(submit(cloud, server=sid(1), now=0.0))
    cloud.put_servers([ServerSpec(id=sid(1), availability_zone="az-b")], now=20.0)
    stats = cloud.stats(20.0)
    assert stats["jobs_by_zone"] == {"az-b": 0, "az-a": 1}
    assert stats["peak_jobs_by_zone"] == {"az-b": 0, "az-a": 1}
    assert stats["peak_jobs_by_group"] == {G1: 1}


def test_a_job_that_ends_as_it_begins_counts_but_never_runs_beside_another() -> None:
    cloud = make_cloud(job_seconds=0.0)
    cloud.put_servers([ServerSpec(id=sid(i), server_group=G1) for i in (1, 2)], now=0.0)
    accepted_job_id(submit(cloud, server=sid(1), now=5.0))
    accepted_job_id(submit(cloud, server=sid(2), now=5.0))
    stats = cloud.stats(5.0)
    assert stats["jobs_by_zone"] == {"sim-az1": 2}
    assert stats["peak_jobs_by_zone"] == {"sim-az1": 0}
    assert stats["peak_jobs_by_group"] == {G1: 0}
    assert stats["max_concurrent_jobs"] == 0  # the same rule as the global count


def test_refused_changeos_are_no_jobs() -> None:
    cloud = make_cloud(job_seconds=10.0)
    cloud.add_server(now=0.0, server_id=sid(1), server_group=G1)
    accepted_job_id(submit(cloud, server=sid(1), now=0.0))
    assert error_of(submit(cloud, server=sid(1), now=1.0)) == (501, "Ecs.0603")  # busy
    stats = cloud.stats(2.0)
    assert (stats["jobs_by_zone"], stats["peak_jobs_by_group"]) == ({"sim-az1": 1}, {G1: 1})


def _job(number: int, start: float, end: float, zone: str, group: str | None) -> SimJob:
    return SimJob(
        id=f"job-{number}",
        sub_job_id=f"sub-{number}",
        server_id=sid(number),
        image_id=OTHER_IMAGE,
        key_name=None,
        created_at=start,
        running_at=start,
        finished_at=end,
        fails=False,
        availability_zone=zone,
        server_group=group,
    )


def test_the_sweep_agrees_with_counting_every_moment() -> None:
    """Random jobs on a coarse clock (many shared starts and ends) against brute force: at each
    start, the jobs of the same domain running then (started at or before, ending after)."""
    draw = random.Random(15)
    book = JobBook()
    jobs = []
    for number in range(300):
        start = float(draw.randrange(50))
        end = NEVER if draw.random() < 0.05 else start + draw.randrange(0, 8)
        zone, group = draw.choice(["a", "b", "c"]), draw.choice([G1, G2, None])
        jobs.append(_job(number, start, end, zone, group))
        book.add(jobs[-1], start)

    def brute(key: str, pick: str) -> int:
        mine = [job for job in jobs if getattr(job, pick) == key]
        return max(
            (
                sum(1 for other in mine if other.created_at <= job.created_at < other.finished_at)
                for job in mine
                if job.finished_at > job.created_at
            ),
            default=0,
        )

    by_zone = book.peak_by(lambda job: job.availability_zone)
    by_group = book.peak_by(lambda job: job.server_group)
    assert by_zone == {zone: brute(zone, "availability_zone") for zone in "abc"}
    assert by_group == {group: brute(group, "server_group") for group in (G1, G2)}
    assert book.count_by(lambda job: job.availability_zone).total() == 300


def test_ten_thousand_jobs_in_one_sweep() -> None:
    """Ten-second jobs starting every second in two zones (alternating): at most ten run at
    once overall, five per zone; no timing assertion, the suite's time shows the cost."""
    book = JobBook()
    for number in range(10_000):
        start = float(number)
        book.add(_job(number, start, start + 10.0, "ab"[number % 2], G1), start)
    assert book.peak_by(lambda job: job.availability_zone) == {"a": 5, "b": 5}
    assert book.peak_by(lambda job: job.server_group) == {G1: 10}
    assert book.max_concurrent == 10


# --- over HTTP -------------------------------------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def client(aiohttp_client: ClientFactory, clock: ManualClock) -> Client:
    return await aiohttp_client(make_app(clock, auth_token="tok"))


async def _put_servers(client: Client, entries: list[dict[str, Any]]) -> tuple[int, Any]:
    async with client.post("/_sim/servers", json={"servers": entries}) as resp:
        return resp.status, await resp.json()


async def test_sim_servers_takes_server_group_and_refuses_a_bad_one(client: Client) -> None:
    entries = [{"id": sid(1), "server_group": G1}, {"id": sid(2), "server_group": G1}]
    assert await _put_servers(client, entries) == (200, {"servers": [sid(1), sid(2)]})
    status, body = await _put_servers(client, [{"server_group": G1.upper()}])
    assert status == 400
    assert body["error"].startswith("servers[0]: server_group must be a lower-case UUID")
    status, shown, _ = await call(client, "GET", f"/v1/{PROJECT}/cloudservers/{sid(2)}")
    assert (status, shown["server"]["os:scheduler_hints"]) == (200, {"group": [G1]})


async def test_the_group_routes_are_signed_ecs_routes(client: Client) -> None:
    await _put_servers(client, [{"id": sid(1), "server_group": G1}])
    # Not taken for a server id: the list route comes before the {server_id} one.
    path = f"/v1/{PROJECT}/cloudservers/os-server-groups"
    status, body, _ = await call(client, "GET", path)
    assert (status, [group["id"] for group in body["server_groups"]]) == (200, [G1])
    status, body, _ = await call(client, "GET", f"{path}?limit=1&marker={G1}")
    assert (status, body) == (200, {"server_groups": []})
    status, body, _ = await call(client, "GET", f"{path}/{G1}")
    assert (status, body["server_group"]["members"]) == (200, [sid(1)])
    status, body, request_id = await call(client, "GET", f"{path}/{UNKNOWN_GROUP}")
    assert status == 404
    assert body["error"]["code"] == "Ecs.0114" and body["error"]["details"] == []
    assert len(request_id) == 32
    status, body, _ = await call(client, "GET", f"{path}?marker={G1}")
    assert (status, body["error"]["code"]) == (400, "Ecs.0005")
    async with client.get(path) as resp:  # unsigned
        assert resp.status == 401
        assert (await resp.json())["error_code"] == "APIGW.0301"


async def test_the_group_routes_share_the_one_rate_limit(
    aiohttp_client: ClientFactory, clock: ManualClock
) -> None:
    client = await aiohttp_client(make_app(clock, rate_limit=1.0, burst=1))
    path = f"/v1/{PROJECT}/cloudservers/os-server-groups"
    assert (await call(client, "GET", path))[0] == 200
    status, body, _ = await call(client, "GET", f"{path}/{G1}")
    assert (status, body["error_code"]) == (429, "APIGW.0308")


async def test_sim_stats_serves_the_peaks(client: Client, clock: ManualClock) -> None:
    await _put_servers(
        client,
        [
            {"id": sid(1), "server_group": G1, "availability_zone": "az-a"},
            {"id": sid(2), "server_group": G1, "availability_zone": "az-b"},
        ],
    )
    for server_id in (sid(1), sid(2)):
        changeos = f"/v1/{PROJECT}/cloudservers/{server_id}/changeos"
        assert (await call(client, "POST", changeos, os_change()))[0] == 200
    clock.now += 60.0  # both done (job_seconds 10)
    async with client.get("/_sim/stats") as resp:
        stats = await resp.json()
    assert stats["peak_jobs_by_group"] == {G1: 2}
    assert stats["peak_jobs_by_zone"] == {"az-a": 1, "az-b": 1}
    assert stats["jobs_by_zone"] == {"az-a": 1, "az-b": 1}
    assert client.app[SIMULATOR].cloud.stats(clock.now)["concurrent_jobs_now"] == 0
