"""How batches, servers and history rows look to API and CLI users (plain JSON-ready dicts)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row

from orchestrator.db.models import Batch, BatchServer, ServerHistory
from orchestrator.domain.rollout import allowed_failures
from orchestrator.domain.states import ServerState


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def batch_counts(batch: Batch) -> dict[str, int]:
    return {state.value: int(getattr(batch, f"n_{state.value}")) for state in ServerState}


def batch_view(batch: Batch) -> dict[str, Any]:
    return {
        "id": batch.id,
        "state": batch.state,
        "project_id": batch.project_id,
        "region": batch.region,
        "cloud_init": batch.cloud_init,
        "os_change": batch.os_change,
        "policy": batch.policy,
        "total": batch.total,
        "counts": batch_counts(batch),
        # Of the failed: how many were left broken (server in ERROR), not failed but safe.
        "broken": batch.n_broken,
        # Of the in flight: failed their health gate and being changed back to their
        # previous image (counted against the error budget already).
        "rolling_back": batch.n_rolling_back,
        "kind": batch.kind,
        # Failure domains: servers per domain value, and the domain of each wave (waves_by).
        "domains": batch.domains,
        "current_wave": batch.current_wave,
        "waves_total": batch.waves_total,
        "max_in_flight": batch.rollout_policy.in_flight_limit(batch.total),
        "error_budget": budget_view(batch),
        # Outside its maintenance windows: no new changeos before the next opening.
        "waiting_for_window": batch.window_opens_at is not None,
        "approval_gate": batch.approval_gate,
        "submitted_by": batch.submitted_by,
        "window_opens_at": iso(batch.window_opens_at),
        "pause_reason": batch.pause_reason,
        "paused_by": batch.paused_by,
        "cancel_requested": batch.cancel_requested,
        "abort_reason": batch.abort_reason,
        "selector": batch.selector,
        "parent_id": batch.parent_id,
        "notify_url": batch.notify_url,
        "has_secrets": batch.sealed_secrets is not None,
        "created_at": iso(batch.created_at),
        "updated_at": iso(batch.updated_at),
        "finished_at": iso(batch.finished_at),
    }


def budget_view(batch: Batch) -> dict[str, int | None]:
    allowed = allowed_failures(batch.rollout_policy.max_failures, batch.total)
    return {
        "allowed": allowed,
        "used": batch.budget_used,
        "left": None if allowed is None else max(0, allowed - batch.budget_used),
    }


def server_view(row: BatchServer | Row[Any]) -> dict[str, Any]:
    """One server row as the API shows it: an ORM object or a plain row of its columns."""
    return {
        "server_id": row.server_id,
        "state": row.state,
        "wave": row.wave,
        "attempt": row.attempt,
        "job_id": row.job_id,
        "job_status": row.job_status,
        # The image it is (or was) changed to, and the facts pre-flight judged it on.
        "image_id": row.target_image,
        "facts": row.facts,
        "domains": row.domains,
        "phase": row.phase,
        "previous_image": row.previous_image,
        # The health gate: the probe target, the probes so far (count, healthy in a row, the
        # last one's status or error), when the change ended.
        "health": row.health,
        "backup": row.backup,
        "error_code": row.error_code,
        "error_message": row.error_message,
        "broken": row.broken,
        "submitted_at": iso(row.submitted_at),
        "finished_at": iso(row.finished_at),
        "updated_at": iso(row.updated_at),
    }


def history_view(row: ServerHistory | Row[Any]) -> dict[str, Any]:
    return {
        "batch_id": row.batch_id,
        "server_id": row.server_id,
        "from_state": row.from_state,
        "to_state": row.to_state,
        "at": iso(row.at),
        "reason": row.reason,
        "attempt": row.attempt,
        "job_id": row.job_id,
        "details": row.details,
    }
