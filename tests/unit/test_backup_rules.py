"""The backup decisions (domain/backups): who needs one, what IMS's answers mean, the quota,
and when an image may be deleted (issue 14, part 3)."""

from __future__ import annotations

from orchestrator.domain.backups import (
    BackupProgress,
    backup_name,
    judge_image_job,
    judge_listed_image,
    may_delete,
    needs_backup,
    quota_problem,
)
from orchestrator.domain.health import AfterChange, Unhealthy, after_change, when_unhealthy

POLICY = {"mode": "image", "retention_s": 60}


def test_a_change_needs_a_backup_until_its_image_is_active_a_rollback_never() -> None:
    assert needs_backup(POLICY, phase="change", backup=None)
    assert needs_backup(POLICY, phase="change", backup={"status": "creating"})
    assert not needs_backup(POLICY, phase="change", backup={"status": "active"})
    assert not needs_backup(POLICY, phase="rollback", backup=None)
    assert not needs_backup(None, phase="change", backup=None)


def test_names_are_unique_per_batch_and_server_and_fit_ims_rules() -> None:
    batch, server = "6c17bfca-5307-4b55-9a53-2f1c3f0d6a01", "1b6f3f5e-4d0c-4f55-9a53-2f1c3f0d6a01"
    name = backup_name(batch, server)
    assert name == "reimage-6c17bfca-1b6f3f5e-4d0c-4f55-9a53-2f1c3f0d6a01"
    assert len(name) <= 128 and all(c.isalnum() or c in "-_. " for c in name)


def test_what_the_ims_job_and_the_image_say() -> None:
    done = judge_image_job(status="SUCCESS", image_id="i-1", code=None, reason=None)
    assert (done.progress, done.image_id) == (BackupProgress.ACTIVE, "i-1")
    failed = judge_image_job(status="FAIL", image_id=None, code="IMG.0006", reason="disk error")
    assert (failed.progress, failed.code, failed.message) == (
        BackupProgress.FAILED,
        "IMG.0006",
        "disk error",
    )
    assert judge_image_job(status="RUNNING", image_id=None, code=None, reason=None).progress is (
        BackupProgress.WAITING
    )
    assert judge_listed_image(None, None).progress is BackupProgress.NOT_FOUND
    assert judge_listed_image("saving", "i-2").progress is BackupProgress.WAITING
    assert judge_listed_image("killed", "i-2").progress is BackupProgress.FAILED
    assert judge_listed_image("active", "i-2").image_id == "i-2"


def test_the_quota_refuses_only_when_more_are_needed_than_left() -> None:
    assert quota_problem(needed=3, left=3, quota=10, used=7) is None
    assert quota_problem(needed=4, left=3, quota=10, used=7) == {
        "needed": 4,
        "left": 3,
        "quota": 10,
        "used": 7,
    }


def test_an_image_is_deleted_only_when_expired_and_its_server_is_not_in_flight() -> None:
    assert may_delete(expired=True, server_active=False)
    assert not may_delete(expired=True, server_active=True)
    assert not may_delete(expired=False, server_active=False)


def test_after_a_change_and_after_an_unhealthy_gate() -> None:
    assert after_change(phase="change", gated=False) is AfterChange.SUCCEEDED
    assert after_change(phase="change", gated=True) is AfterChange.VERIFY
    assert after_change(phase="rollback", gated=True) is AfterChange.ROLLED_BACK
    assert when_unhealthy(on_unhealthy="keep", rollback_image="i") is Unhealthy.KEEP
    assert when_unhealthy(on_unhealthy="rollback", rollback_image="i") is Unhealthy.ROLL_BACK
    assert when_unhealthy(on_unhealthy="rollback", rollback_image=None) is (Unhealthy.NOWHERE_TO_GO)
