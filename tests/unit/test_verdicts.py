"""The pure decisions of `domain/verdicts.py`: pre-flight and the reconcile of a lost answer."""

from __future__ import annotations

import dataclasses

import pytest

from orchestrator.cloud.models import Server
from orchestrator.domain.preflight import (
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
from orchestrator.domain.verdicts import (
    AfterJob,
    Reconcile,
    ServerSnapshot,
    after_job_verdict,
    reconcile_verdict,
)

TARGET = "e215580f-73ad-429d-b6f2-5433947433b0"
OLD = "11111111-2222-4333-8444-555555555555"
BEFORE = ServerSnapshot(
    status="SHUTOFF",
    task_state=None,
    image_id=OLD,
    updated="2026-12-01T10:00:00Z",
    system_disk_id="disk-0",
)


def seen(**changes: object) -> ServerSnapshot:
    return dataclasses.replace(BEFORE, **changes)  # type: ignore[arg-type]


# --- pre-flight (the snapshot's part of domain.preflight.judge) -------------------------------


def verdict(snapshot: ServerSnapshot, *, skip_matching: bool = True) -> Verdict:
    image = ImageFacts(TARGET, "active", 40, "Linux", Architecture.X86_64, Firmware.BIOS)
    server = ServerFacts(snapshot, "s6.small.1", "0", locked=False, has_system_disk=True)
    facts = Facts(
        server, Architecture.X86_64, dataclasses.replace(image, id=OLD), 40, {TARGET: image}
    )
    login = Login(keyname=True, adminpass=False)
    request = ChangeRequest.for_image(TARGET, login, stop_server=True, skip_matching=skip_matching)
    return judge(facts, request).verdict


def test_an_idle_server_on_its_old_image_is_submitted() -> None:
    assert verdict(BEFORE) is Verdict.SUBMIT


def test_an_idle_server_on_the_target_image_is_skipped_unless_skip_matching_is_off() -> None:
    on_target = seen(image_id=TARGET)
    assert verdict(on_target) is Verdict.SKIP
    assert verdict(on_target, skip_matching=False) is Verdict.SUBMIT


@pytest.mark.parametrize(
    ("status", "task_state"),
    [("REBUILD", "rebuilding"), ("ACTIVE", "powering-off"), ("RESIZE", None), ("BUILD", None)],
)
def test_a_busy_server_waits_even_on_the_target_image(status: str, task_state: str | None) -> None:
    busy = seen(status=status, task_state=task_state, image_id=TARGET)
    assert verdict(busy) is Verdict.WAIT


# --- reconcile ----------------------------------------------------------------------------------


def test_exactly_as_before_is_the_only_resend() -> None:
    verdict = reconcile_verdict(BEFORE, seen(), target_image=TARGET)
    assert (verdict.outcome, verdict.changed) == (Reconcile.RESEND, ())


@pytest.mark.parametrize(
    ("changes", "names"),
    [
        ({"status": "ERROR"}, ["status"]),  # a failed job's mark
        ({"system_disk_id": "disk-1"}, ["system_disk_id"]),  # the old disk is gone
        ({"updated": "2026-12-01T10:00:07Z"}, ["updated"]),  # something touched it
        ({"status": "ACTIVE"}, ["status"]),  # powered on by someone
        ({"image_id": "99999999-2222-4333-8444-555555555555"}, ["image_id"]),
        ({"status": "ERROR", "system_disk_id": "d2"}, ["status", "system_disk_id"]),
    ],
)
def test_any_sign_of_change_settles_the_server_without_a_resend(
    changes: dict[str, str], names: list[str]
) -> None:
    verdict = reconcile_verdict(BEFORE, seen(**changes), target_image=TARGET)
    assert verdict.outcome is Reconcile.CHANGED
    assert list(verdict.changed) == names


def test_a_rebuild_running_is_followed() -> None:
    rebuilding = seen(status="REBUILD", task_state="rebuilding")
    assert reconcile_verdict(BEFORE, rebuilding, target_image=TARGET).outcome is Reconcile.RUNNING
    # Without a snapshot too: the change runs, whoever asked for it.
    assert reconcile_verdict(None, rebuilding, target_image=TARGET).outcome is Reconcile.RUNNING


def test_on_the_target_image_after_a_change_is_succeeded_or_broken() -> None:
    done = seen(image_id=TARGET, system_disk_id="disk-1", updated="2026-12-01T10:09:00Z")
    assert reconcile_verdict(BEFORE, done, target_image=TARGET).outcome is Reconcile.SUCCEEDED
    broken = dataclasses.replace(done, status="ERROR")
    assert reconcile_verdict(BEFORE, broken, target_image=TARGET).outcome is Reconcile.BROKEN


def test_already_on_the_target_image_and_unchanged_was_not_changed_by_the_call() -> None:
    """Skip matching off: a server that was on the target image and shows nothing new."""
    already = seen(image_id=TARGET)
    assert reconcile_verdict(already, already, target_image=TARGET).outcome is Reconcile.RESEND


def test_another_operation_running_means_look_again_later() -> None:
    busy = seen(status="SHUTOFF", task_state="powering-on")
    verdict = reconcile_verdict(BEFORE, busy, target_image=TARGET)
    assert verdict.outcome is Reconcile.WAIT
    assert verdict.changed == ("task_state",)


def test_without_a_snapshot_an_idle_server_on_its_old_image_is_never_resent() -> None:
    verdict = reconcile_verdict(None, BEFORE, target_image=TARGET)
    assert (verdict.outcome, verdict.changed) == (Reconcile.CHANGED, ())


def test_verdict_details_carry_both_snapshots_for_the_history() -> None:
    after = seen(status="ERROR")
    verdict = reconcile_verdict(BEFORE, after, target_image=TARGET)
    assert verdict.details(BEFORE, after) == {
        "server": after.as_dict(),
        "before_call": BEFORE.as_dict(),
        "changed": ["status"],
    }


def test_snapshots_round_trip_and_come_from_the_cloud_body() -> None:
    assert ServerSnapshot.from_dict(BEFORE.as_dict()) == BEFORE
    body = {
        "id": "s1",
        "status": "SHUTOFF",
        "OS-EXT-STS:task_state": "",
        "image": {"id": OLD},
        "updated": "2026-12-01T10:00:00Z",
        "os-extended-volumes:volumes_attached": [
            {"id": "data-1", "bootIndex": "-1"},
            {"id": "disk-0", "bootIndex": "0"},
        ],
    }
    assert Server.from_body(body).snapshot() == BEFORE


# --- after the job ------------------------------------------------------------------------------

DONE = seen(image_id=TARGET, system_disk_id="disk-1", status="ACTIVE")


@pytest.mark.parametrize(
    ("job_succeeded", "server", "expected"),
    [
        (True, DONE, AfterJob.SUCCEEDED),
        (True, dataclasses.replace(DONE, status="ERROR"), AfterJob.BROKEN),
        (True, BEFORE, AfterJob.WRONG_IMAGE),
        (True, seen(status="REBUILD", task_state="rebuilding"), AfterJob.WAIT),
        # After a success the server is powered on: not a reason to wait (the health gate is).
        (True, dataclasses.replace(DONE, task_state="powering-on"), AfterJob.SUCCEEDED),
        (False, seen(status="ERROR"), AfterJob.JOB_FAILED),
        (False, BEFORE, AfterJob.JOB_FAILED),
        (None, DONE, AfterJob.SUCCEEDED),
        (None, seen(status="ERROR"), AfterJob.BROKEN),
        (None, BEFORE, AfterJob.NOT_APPLIED),
        (None, seen(status="REBUILD", task_state="rebuilding"), AfterJob.WAIT),
        (None, seen(task_state="powering-on"), AfterJob.WAIT),
    ],
)
def test_after_the_job_the_server_has_the_last_word(
    job_succeeded: bool | None, server: ServerSnapshot, expected: AfterJob
) -> None:
    verdict = after_job_verdict(server, target_image=TARGET, job_succeeded=job_succeeded)
    assert verdict is expected
