"""Pre-flight with real processes (simulator, API, worker, beat) over HTTP: a mixed fleet of
300 servers, x86 and Kunpeng, small and large disks, a UEFI image, locked and spot servers,
a Windows image asked with a key pair. The dry run names every incompatible server with its
code and sends nothing; `reject` answers 422 and stores nothing; `skip` sends exactly one
changeos to each compatible server (the arm image to arm servers) and none to the others; a
server that becomes incompatible between submission and send fails without a changeos."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.stack import ProcessStack, http, stack_on_fresh_database

pytestmark = pytest.mark.e2e

TOKEN = "preflight-token-abcdefghijkl"
AK, SK = "PREFLIGHTACCESSKEY01", "preflight-secret-key-00000000000000000001"
PROJECT = "0605767bd8b5d3f92f0ac0123456789b"
X86_IMAGE = "7a1f0c3e-1111-4d2b-9a10-000000000001"
ARM_IMAGE = "7a1f0c3e-2222-4d2b-9a10-000000000002"
UEFI_OLD = "7a1f0c3e-3333-4d2b-9a10-000000000003"  # what some servers run today
WINDOWS = "7a1f0c3e-4444-4d2b-9a10-000000000004"
TERMINAL = {"succeeded", "partially_failed", "aborted", "cancelled"}

# (how many, inventory attributes, the blocking code pre-flight must give, or None)
FLEET: list[tuple[int, dict[str, Any], str | None]] = [
    (120, {"system_disk_size": 100}, None),
    (60, {"flavor_id": "kc1.large.2", "system_disk_size": 100}, None),
    (30, {"system_disk_size": 40}, None),  # pay-per-use: its disk will grow to 50 GB
    (30, {"system_disk_size": 40, "charging_mode": "1"}, "disk_too_small"),
    (20, {"system_disk_size": 100, "image_id": UEFI_OLD}, "firmware_mismatch"),
    (15, {"system_disk_size": 100, "locked": True}, "server_locked"),
    (15, {"system_disk_size": 100, "charging_mode": "2"}, "spot_server"),
    (10, {"has_system_disk": False}, "no_system_disk"),
]


def _fleet() -> tuple[list[dict[str, Any]], dict[str, str | None], set[str]]:
    entries, expected, arm = [], {}, set()
    for group, (count, attributes, code) in enumerate(FLEET):
        for number in range(count):
            server_id = str(uuid.UUID(int=(group + 1) << 64 | number))
            entries.append({"id": server_id, "name": f"g{group}-{number:03d}", **attributes})
            expected[server_id] = code
            if attributes.get("flavor_id", "").startswith("kc1"):
                arm.add(server_id)
    return entries, expected, arm


ENTRIES, EXPECTED, ARM_SERVERS = _fleet()
SERVERS = list(EXPECTED)
COMPATIBLE = [s for s, code in EXPECTED.items() if code is None]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessStack]:
    directory = tmp_path_factory.mktemp("preflight")
    images = directory / "images.json"
    images.write_text(
        json.dumps(
            {
                "images": [
                    {"id": X86_IMAGE, "name": "euler-x86", "min_disk": 50},
                    {"id": ARM_IMAGE, "name": "euler-arm", "min_disk": 50, "architecture": "arm"},
                    {"id": UEFI_OLD, "name": "old-uefi", "firmware": "uefi"},
                    {"id": WINDOWS, "name": "win-2022", "os_type": "Windows", "min_disk": 50},
                ]
            }
        )
    )
    inventory = directory / "inventory.json"
    inventory.write_text(json.dumps({"servers": ENTRIES}))
    with stack_on_fresh_database(
        directory,
        redis_db=12,
        token=TOKEN,
        ak=AK,
        sk=SK,
        project_id=PROJECT,
        simulator_args=[
            *("--job-seconds", "1", "--seed", "5", "--images-file", str(images)),
            *("--inventory", str(inventory), "--strict-inventory"),
        ],
        # Every send reads its server itself, so a lock set while the batch waits is seen.
        extra_env={"ORCH_ECS_RATE": "500", "ORCH_ECS_BURST": "500", "ORCH_FACTS_MAX_AGE_S": "0"},
    ) as full:
        yield full.processes


def api(stack: ProcessStack, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    return http(method, stack.env["API_URL"] + path, token=TOKEN, body=body, timeout=60)


def sim(stack: ProcessStack, path: str, body: Any = None) -> Any:
    method = "GET" if body is None else "POST"
    return http(method, stack.env["SIM_URL"] + path, body=body)[1]


def body(servers: list[str], *, on_incompatible: str, **os_change: Any) -> dict[str, Any]:
    change = {"images": {"x86_64": X86_IMAGE, "aarch64": ARM_IMAGE}, "keyname": "ops-key"}
    return {
        "project_id": PROJECT,
        "region": "cn-north-4",
        "servers": servers,
        "os_change": {**change, "mode": "withStopServer", **os_change},
        "policy": {"poll_interval_s": 1, "max_in_flight": 100, "on_incompatible": on_incompatible},
    }


def blocking_codes(report: dict[str, Any]) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for server in report["servers"]:
        blocking = [r["code"] for r in server["reasons"] if r["blocking"]]
        assert len(blocking) <= 1, server
        found[server["server_id"]] = blocking[0] if blocking else None
    return found


def wait_for(stack: ProcessStack, batch_id: str, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = api(stack, "GET", f"/api/v1/batches/{batch_id}")[1]
        if batch["state"] in TERMINAL or batch["state"] == "paused":
            return batch  # type: ignore[no-any-return]
        time.sleep(0.5)
    raise AssertionError(f"batch {batch_id} did not settle in {timeout_s} s")


def servers_of(stack: ProcessStack, batch_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = ""
    while True:
        page = api(stack, "GET", f"/api/v1/batches/{batch_id}/servers?limit=1000{cursor}")[1]
        items += page["items"]
        if not page["next_cursor"]:
            return items
        cursor = f"&cursor={page['next_cursor']}"


def test_the_dry_run_names_every_incompatible_server_and_sends_nothing(
    stack: ProcessStack,
) -> None:
    before = sim(stack, "/_sim/stats")["requests"]
    status, report = api(
        stack, "POST", "/api/v1/batches?dry_run=true", body(SERVERS, on_incompatible="reject")
    )
    assert status == 200, report
    assert blocking_codes(report) == EXPECTED
    assert report["verdicts"] == {"submit": 210, "will_fail": 90}
    assert report["codes"]["disk_will_grow"] == 30  # a warning: those servers are submitted
    images = {s["server_id"]: s["image_id"] for s in report["servers"]}
    assert {images[s] for s in ARM_SERVERS} == {ARM_IMAGE}
    assert {images[s] for s in COMPATIBLE if s not in ARM_SERVERS} == {X86_IMAGE}
    first_small = next(s for s in report["servers"] if EXPECTED[s["server_id"]] == "disk_too_small")
    assert first_small["reasons"][0]["facts"] == {
        "disk_gb": 40,
        "min_disk_gb": 50,
        "charging_mode": "yearly_monthly",
    }
    after = sim(stack, "/_sim/stats")["requests"]
    assert after["changeos"] == before["changeos"]
    spent = sum(after.values()) - sum(before.values())
    # One sweep page, one flavor list, one image query per distinct image, one volume call.
    assert spent == report["cloud_calls"]["total"] and spent <= 8, report["cloud_calls"]


def test_a_windows_image_asked_with_a_key_pair_is_a_login_mismatch(stack: ProcessStack) -> None:
    x86 = [s for s in COMPATIBLE if s not in ARM_SERVERS][:5]
    request = body(x86 + sorted(ARM_SERVERS)[:2], on_incompatible="reject")
    request["os_change"].pop("images")
    request["os_change"]["imageid"] = WINDOWS
    status, report = api(stack, "POST", "/api/v1/batches?dry_run=true", request)
    assert status == 200, report
    codes = {
        s["server_id"]: [r["code"] for r in s["reasons"] if r["blocking"]]
        for s in report["servers"]
    }
    assert all(codes[s] == ["login_mismatch"] for s in x86)
    assert all(
        codes[s] == ["architecture_mismatch", "login_mismatch"] for s in sorted(ARM_SERVERS)[:2]
    )


def test_reject_answers_422_with_the_servers_and_their_codes_and_stores_nothing(
    stack: ProcessStack,
) -> None:
    listed_before = api(stack, "GET", "/api/v1/batches?limit=500")[1]["items"]
    status, answer = api(stack, "POST", "/api/v1/batches", body(SERVERS, on_incompatible="reject"))
    assert status == 422, answer
    error = answer["error"]
    assert error["code"] == "incompatible_servers"
    assert {s["server_id"]: s["codes"][0] for s in error["servers"]} == {
        s: code for s, code in EXPECTED.items() if code
    }
    assert Counter(error["codes"]) == Counter(c for c in EXPECTED.values() if c)
    assert api(stack, "GET", "/api/v1/batches?limit=500")[1]["items"] == listed_before


def test_skip_sends_one_changeos_to_each_compatible_server_and_none_to_the_others(
    stack: ProcessStack,
) -> None:
    status, batch = api(stack, "POST", "/api/v1/batches", body(SERVERS, on_incompatible="skip"))
    assert status == 202, batch
    done = wait_for(stack, batch["id"])
    assert done["state"] == "succeeded", done
    assert done["counts"]["succeeded"] == 210 and done["counts"]["skipped"] == 90
    stats = sim(stack, "/_sim/stats")
    assert stats["incompatible_changeos"] == 0
    assert {s: stats["changeos_accepted"].get(s) for s in COMPATIBLE} == dict.fromkeys(
        COMPATIBLE, 1
    )
    assert not any(stats["changeos_received_by_server"].get(s) for s, c in EXPECTED.items() if c)
    truth = stats["truth"]
    assert {truth[s]["image_id"] for s in ARM_SERVERS} == {ARM_IMAGE}
    assert {truth[s]["image_id"] for s in COMPATIBLE if s not in ARM_SERVERS} == {X86_IMAGE}
    rows = {r["server_id"]: r for r in servers_of(stack, batch["id"])}
    for server_id, code in EXPECTED.items():
        row = rows[server_id]
        if code is None:
            assert row["state"] == "succeeded"
            assert row["image_id"] == (ARM_IMAGE if server_id in ARM_SERVERS else X86_IMAGE)
        else:
            assert (row["state"], row["error_code"]) == ("skipped", code)
    # The batch's failures by code count the servers pre-flight left out, as stored.
    groups = {(g["state"], g["code"]): g["count"] for g in done["failure_codes"]}
    assert groups == {
        ("skipped", c): n for c, n in Counter(c for c in EXPECTED.values() if c).items()
    }
    skipped = next(s for s, c in EXPECTED.items() if c == "firmware_mismatch")
    history = api(stack, "GET", f"/api/v1/servers/{skipped}/history")[1]["items"]
    created = next(h for h in history if h["batch_id"] == batch["id"])
    assert created["reason"] == "incompatible"
    assert created["details"]["code"] == "firmware_mismatch"
    assert created["details"]["reasons"][0]["facts"]["server_firmware"] == "uefi"


def test_a_server_that_becomes_incompatible_before_its_send_fails_without_a_changeos(
    stack: ProcessStack,
) -> None:
    fresh = [str(uuid.uuid4()) for _ in range(2)]
    sim(stack, "/_sim/servers", {"servers": [{"id": s, "system_disk_size": 100} for s in fresh]})
    request = body(fresh, on_incompatible="reject")
    request["policy"].update({"waves": [1, 1], "pause_after_waves": [1]})
    status, batch = api(stack, "POST", "/api/v1/batches", request)
    assert status == 202, batch
    assert wait_for(stack, batch["id"])["state"] == "paused"
    # An order locks the second server while the batch waits at its gate.
    sim(
        stack,
        "/_sim/servers",
        {"servers": [{"id": fresh[1], "system_disk_size": 100, "locked": True}]},
    )
    api(stack, "POST", f"/api/v1/batches/{batch['id']}/resume")
    done = wait_for(stack, batch["id"])
    assert done["state"] in ("partially_failed", "aborted"), done
    rows = {r["server_id"]: r for r in servers_of(stack, batch["id"])}
    assert (rows[fresh[1]]["state"], rows[fresh[1]]["error_code"]) == ("failed", "server_locked")
    assert sim(stack, "/_sim/stats")["changeos_received_by_server"].get(fresh[1]) is None
    history = api(stack, "GET", f"/api/v1/servers/{fresh[1]}/history")[1]["items"]
    assert history[-1]["reason"] == "preflight_failed"
    assert history[-1]["details"]["changeos_sent"] is False
