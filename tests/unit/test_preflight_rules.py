"""The pre-flight verdict over every rule and its boundaries (domain/preflight.judge)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from orchestrator.domain.preflight import (
    CODES,
    Architecture,
    ChangeRequest,
    Facts,
    Firmware,
    ImageFacts,
    Login,
    ServerFacts,
    Verdict,
    judge,
)
from orchestrator.domain.verdicts import ServerSnapshot

X86_IMAGE, ARM_IMAGE, OLD_IMAGE = "img-x86", "img-arm", "img-old"
KEY = Login(keyname=True, adminpass=False)


def image(image_id: str = X86_IMAGE, **changes: Any) -> ImageFacts:
    base = ImageFacts(
        id=image_id,
        status="active",
        min_disk_gb=40,
        os_type="Linux",
        architecture=Architecture.X86_64,
        firmware=Firmware.BIOS,
    )
    return dataclasses.replace(base, **changes)


def server(**changes: Any) -> ServerFacts:
    snapshot = ServerSnapshot(status="SHUTOFF", task_state=None, image_id=OLD_IMAGE)
    if "status" in changes or "task_state" in changes or "image_id" in changes:
        snapshot = dataclasses.replace(
            snapshot,
            **{k: changes.pop(k) for k in ("status", "task_state", "image_id") if k in changes},
        )
    base = ServerFacts(
        snapshot=snapshot,
        flavor_id="s6.small.1",
        charging_mode="0",
        locked=False,
        has_system_disk=True,
    )
    return dataclasses.replace(base, **changes)


def facts(**changes: Any) -> Facts:
    base = Facts(
        server=server(),
        architecture=Architecture.X86_64,
        current_image=image(OLD_IMAGE),
        disk_gb=40,
        images={X86_IMAGE: image(), ARM_IMAGE: image(ARM_IMAGE, architecture=Architecture.AARCH64)},
    )
    return dataclasses.replace(base, **changes)


def single(image_id: str = X86_IMAGE, login: Login = KEY, **kw: Any) -> ChangeRequest:
    return ChangeRequest.for_image(image_id, login, stop_server=kw.pop("stop_server", True), **kw)


PER_ARCH = ChangeRequest(
    images={Architecture.X86_64: X86_IMAGE, Architecture.AARCH64: ARM_IMAGE},
    single_image=False,
    login=KEY,
    stop_server=True,
)


def codes(result: Any) -> list[str]:
    return [r.code for r in result.reasons]


def test_a_compatible_server_is_submitted_with_no_reason() -> None:
    result = judge(facts(), single())
    assert (result.verdict, result.image_id, result.reasons) == (Verdict.SUBMIT, X86_IMAGE, ())


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"server": None}, "server_not_found"),
        ({"server": server(locked=True)}, "server_locked"),
        ({"server": server(charging_mode="2")}, "spot_server"),
        ({"server": server(has_system_disk=False)}, "no_system_disk"),
        ({"images": {X86_IMAGE: None}}, "image_not_found"),
        ({"images": {X86_IMAGE: image(status="saving")}}, "image_not_active"),
        ({"images": {X86_IMAGE: image(virtual_env_type="IsoImage")}}, "image_not_supported"),
        ({"architecture": Architecture.AARCH64}, "architecture_mismatch"),
        ({"current_image": image(OLD_IMAGE, firmware=Firmware.UEFI)}, "firmware_mismatch"),
        (
            {"server": server(charging_mode="1"), "images": {X86_IMAGE: image(min_disk_gb=100)}},
            "disk_too_small",
        ),
        ({"images": {X86_IMAGE: image(os_type="Windows")}}, "login_mismatch"),
    ],
)
def test_each_blocking_rule_fails_the_server_with_its_code(
    change: dict[str, Any], code: str
) -> None:
    result = judge(facts(**change), single())
    assert result.verdict is Verdict.WILL_FAIL
    assert code in codes(result) and code in CODES
    assert result.first_blocking is not None


def test_a_running_server_without_stop_mode_is_refused_but_a_stopped_one_is_not() -> None:
    running = facts(server=server(status="ACTIVE"))
    assert codes(judge(running, single(stop_server=False))) == ["needs_stop"]
    assert judge(running, single(stop_server=True)).verdict is Verdict.SUBMIT
    assert judge(facts(), single(stop_server=False)).verdict is Verdict.SUBMIT


def test_disk_equal_to_min_disk_is_enough_for_a_yearly_server() -> None:
    yearly = server(charging_mode="1")
    at_min = facts(server=yearly, disk_gb=100, images={X86_IMAGE: image(min_disk_gb=100)})
    below = dataclasses.replace(at_min, disk_gb=99)
    assert judge(at_min, single()).verdict is Verdict.SUBMIT
    result = judge(below, single())
    assert result.verdict is Verdict.WILL_FAIL and codes(result) == ["disk_too_small"]
    assert result.reasons[0].facts == {
        "disk_gb": 99,
        "min_disk_gb": 100,
        "charging_mode": "yearly_monthly",
    }


def test_a_pay_per_use_disk_below_min_disk_only_warns_that_it_will_grow() -> None:
    result = judge(facts(disk_gb=40, images={X86_IMAGE: image(min_disk_gb=50)}), single())
    assert result.verdict is Verdict.SUBMIT
    assert codes(result) == ["disk_will_grow"] and not result.reasons[0].blocking
    assert result.reasons[0].facts["charging_mode"] == "pay_per_use"


def test_an_unknown_disk_size_blocks_only_a_yearly_server_and_says_unknown() -> None:
    assert judge(facts(disk_gb=None), single()).verdict is Verdict.SUBMIT
    yearly = judge(facts(disk_gb=None, server=server(charging_mode="1")), single())
    assert yearly.verdict is Verdict.UNKNOWN and codes(yearly) == ["disk_size_unknown"]


def test_missing_firmware_type_means_bios_on_both_sides() -> None:
    # ImageFacts are built from IMS with BIOS for an absent hw_firmware_type (cloud layer);
    # here: BIOS to BIOS passes, BIOS to UEFI and UEFI to BIOS fail.
    uefi = image(firmware=Firmware.UEFI)
    assert judge(facts(images={X86_IMAGE: uefi}), single()).verdict is Verdict.WILL_FAIL
    from_uefi = facts(current_image=image(OLD_IMAGE, firmware=Firmware.UEFI))
    assert judge(from_uefi, single()).verdict is Verdict.WILL_FAIL
    both_uefi = dataclasses.replace(from_uefi, images={X86_IMAGE: uefi})
    assert judge(both_uefi, single()).verdict is Verdict.SUBMIT


def test_a_gone_current_image_is_a_warning_not_a_block() -> None:
    result = judge(facts(current_image=None), single())
    assert result.verdict is Verdict.SUBMIT and codes(result) == ["firmware_unknown"]


def test_an_arm_flavor_with_an_arm_image_is_compatible() -> None:
    arm = facts(architecture=Architecture.AARCH64)
    assert judge(arm, single(ARM_IMAGE)).verdict is Verdict.SUBMIT
    mismatch = judge(arm, single(X86_IMAGE))
    assert codes(mismatch) == ["architecture_mismatch"]
    assert mismatch.reasons[0].facts["server_architecture"] == "aarch64"
    assert mismatch.reasons[0].facts["image_architecture"] == "x86_64"


def test_per_architecture_images_pick_the_servers_own() -> None:
    assert judge(facts(), PER_ARCH).image_id == X86_IMAGE
    arm = judge(facts(architecture=Architecture.AARCH64), PER_ARCH)
    assert (arm.verdict, arm.image_id) == (Verdict.SUBMIT, ARM_IMAGE)
    x86_only = dataclasses.replace(PER_ARCH, images={Architecture.X86_64: X86_IMAGE})
    missing = judge(facts(architecture=Architecture.AARCH64), x86_only)
    assert (missing.verdict, codes(missing)) == (Verdict.WILL_FAIL, ["architecture_mismatch"])
    unknown = judge(facts(architecture=None), PER_ARCH)
    assert (unknown.verdict, codes(unknown)) == (Verdict.UNKNOWN, ["architecture_unknown"])


def test_an_unknown_flavor_with_a_single_image_warns_and_submits() -> None:
    result = judge(facts(architecture=None), single())
    assert result.verdict is Verdict.SUBMIT and codes(result) == ["architecture_unknown"]


def test_windows_needs_a_password_and_no_key() -> None:
    windows = facts(images={X86_IMAGE: image(os_type="Windows")})
    assert judge(windows, single(login=Login(keyname=False, adminpass=True))).verdict is (
        Verdict.SUBMIT
    )
    assert codes(judge(windows, single(login=KEY))) == ["login_mismatch"]


def test_no_key_nor_password_blocks_unless_user_data_gives_the_login() -> None:
    nothing = Login(keyname=False, adminpass=False)
    assert codes(judge(facts(), single(login=nothing))) == ["login_mismatch"]
    user_data = judge(facts(), single(login=Login(False, False, user_data=True)))
    assert user_data.verdict is Verdict.SUBMIT and codes(user_data) == ["login_from_user_data"]


def test_already_on_image_skips_before_any_rule_but_a_busy_one_waits() -> None:
    on_target = facts(server=server(image_id=X86_IMAGE, locked=True))
    assert judge(on_target, single()).verdict is Verdict.SKIP
    assert judge(on_target, single(skip_matching=False)).verdict is Verdict.WILL_FAIL
    busy_on_target = facts(server=server(image_id=X86_IMAGE, task_state="rebuilding"))
    assert judge(busy_on_target, single()).verdict is Verdict.WAIT


def test_busy_waits_but_an_incompatible_busy_server_fails_now() -> None:
    busy = judge(facts(server=server(task_state="powering-on")), single())
    assert (busy.verdict, codes(busy)) == (Verdict.WAIT, ["busy"])
    locked_busy = facts(server=server(task_state="powering-on", locked=True))
    assert judge(locked_busy, single()).verdict is Verdict.WILL_FAIL


def test_every_reason_of_a_server_is_reported_together() -> None:
    bad = facts(
        server=server(locked=True, charging_mode="2"),
        architecture=Architecture.AARCH64,
        images={X86_IMAGE: image(firmware=Firmware.UEFI)},
    )
    assert set(codes(judge(bad, single()))) == {
        "server_locked",
        "spot_server",
        "architecture_mismatch",
        "firmware_mismatch",
    }


def test_a_server_the_cloud_would_not_show_is_unknown_not_missing() -> None:
    unreadable = judge(facts(server=None, server_readable=False), single())
    assert (unreadable.verdict, codes(unreadable)) == (Verdict.UNKNOWN, ["server_unreadable"])
    assert judge(facts(server=None), single()).verdict is Verdict.WILL_FAIL
