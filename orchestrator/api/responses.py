"""What the API answers, as pydantic models: they exist to describe the responses in the
OpenAPI document (the services build plain dicts), and the schemathesis run in CI checks every
answer against them, so a view that drifts from its description fails the build."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from orchestrator.domain.preflight import CODES, Verdict
from orchestrator.domain.states import BatchState, ServerState

Time = str  # ISO 8601 UTC, e.g. "2026-11-27T08:21:58.756494Z"


class _Open(BaseModel):
    # Responses may grow fields; clients must ignore what they do not know.
    model_config = ConfigDict(extra="allow")


# The stable codes, documented as an enum (the schemathesis run checks answers against it).
_CODE_ENUM: dict[str, JsonValue] = {"enum": list[JsonValue](CODES)}


class Reason(_Open):
    """Why pre-flight judged a server so; README "Pre-flight" says each rule's source."""

    code: str = Field(
        description="; ".join(f"`{code}`: {meaning}" for code, meaning in CODES.items()),
        json_schema_extra=_CODE_ENUM,
    )
    message: str
    facts: dict[str, Any] = Field(description="the facts the rule used (sizes, architectures...)")
    blocking: bool = Field(description="false: a warning, the verdict stays submit")


class IncompatibleServer(_Open):
    server_id: str
    codes: list[str] = Field(json_schema_extra={"items": _CODE_ENUM})
    reasons: list[Reason]


class ErrorDetail(_Open):
    code: str = Field(
        description="machine-readable, e.g. invalid_request, not_found, conflict, "
        "incompatible_servers (422), backup_quota (422), preflight_unavailable (503)"
    )
    message: str
    fields: dict[str, str] | None = Field(None, description="field path -> reason (400 only)")
    codes: dict[str, int] | None = Field(
        None, description="incompatible_servers: how many servers have each blocking code"
    )
    servers: list[IncompatibleServer] | None = Field(
        None, description="incompatible_servers: each server with its blocking reasons"
    )
    backup_quota: dict[str, int] | None = Field(
        None,
        description="backup_quota (422): backups needed, and the IMS quota, used and left",
    )


class ErrorResponse(_Open):
    error: ErrorDetail


class Health(_Open):
    status: str
    checks: dict[str, str] | None = None


class ErrorBudget(_Open):
    allowed: int | None
    used: int
    left: int | None


class WaveView(_Open):
    wave: int
    size: int
    counts: dict[str, int]


class FailureGroup(_Open):
    state: ServerState
    code: str
    count: int
    message: str | None = Field(description="the message of the group's first server")


class BatchView(_Open):
    id: str
    state: BatchState
    project_id: str
    region: str
    cloud_init: bool
    os_change: dict[str, Any] = Field(description="the change, without adminpass or user_data")
    policy: dict[str, Any]
    total: int
    counts: dict[ServerState, int]
    broken: int
    rolling_back: int = Field(
        description="in flight back to their previous image after a failed health gate "
        "(counted against the error budget)"
    )
    kind: Literal["change", "rollback"] = Field(
        description="rollback: each server back to its own recorded image (parent_id: the "
        "batch it undoes)"
    )
    domains: dict[str, Any] | None = Field(
        None,
        description="failure domains (policy.spread, waves_by): `sizes` {kind: {value: "
        "servers}}, `wave_labels` (the domain of each wave, with waves_by)",
    )
    current_wave: int | None
    waves_total: int | None
    max_in_flight: int | None
    error_budget: ErrorBudget
    waiting_for_window: bool = Field(
        False, description="outside its maintenance windows: nothing new is sent"
    )
    window_opens_at: Time | None = Field(None, description="the next window's opening")
    pause_reason: str | None
    paused_by: str | None
    cancel_requested: bool
    abort_reason: str | None
    selector: dict[str, Any] | None
    parent_id: str | None
    has_secrets: bool
    created_at: Time
    updated_at: Time
    finished_at: Time | None
    waves: list[WaveView] | None = Field(None, description="only on GET of one batch")
    approvals: dict[str, Any] | None = Field(
        None,
        description="only on GET of one batch: `waiting` (the gate waited on, approvals had "
        "and needed) and `decisions` (who approved or refused which gate, when, why)",
    )
    approval_gate: int | None = Field(
        None, description="paused for approvals: 0 before the first wave, k after wave k"
    )
    failure_codes: list[FailureGroup] | None = Field(
        None,
        description="only on GET of one batch: failed, skipped and cancelled servers grouped "
        "by state and error code, biggest group first",
    )


class ServerVerdict(_Open):
    server_id: str
    verdict: Verdict
    image_id: str | None = Field(description="the image this server would be sent")
    reasons: list[Reason]
    exists: bool
    probe_target: str | None = Field(
        None, description="with policy.health_check: what this server's probe would reach"
    )
    probe_error: str | None = Field(
        None, description="with policy.health_check: why this server could not be probed"
    )
    domains: dict[str, str] | None = Field(
        None, description="with policy.spread or waves_by: its failure domains"
    )
    domains_unknown: list[str] | None = Field(
        None, description="the kinds whose value is unknown: the server is its own domain"
    )


class DryRunReport(_Open):
    dry_run: Literal[True]
    total: int
    plan: dict[str, Any]
    verdicts: dict[Verdict, int]
    codes: dict[str, int] = Field(description="servers per reason code")
    cloud_calls: dict[str, int] = Field(description="calls the dry run made, by kind, and total")
    conflicts: list[dict[str, str]]
    servers: list[ServerVerdict]
    backup_quota: dict[str, int | bool] | None = Field(
        None, description="with policy.backup: backups needed, IMS quota, used, left, enough"
    )


class BatchPage(_Open):
    items: list[BatchView]
    next_cursor: str | None


class ServerView(_Open):
    server_id: str
    state: ServerState
    wave: int | None
    attempt: int
    job_id: str | None
    job_status: str | None
    image_id: str | None = Field(description="the image it is (or was) changed to")
    facts: dict[str, Any] | None = Field(description="what pre-flight saw at submission")
    domains: dict[str, str] | None = Field(
        None,
        description="its failure domains {kind: value}; unknown ones are `unknown:<server id>`",
    )
    phase: Literal["change", "rollback"] = Field(
        description="rollback: the health gate failed and the server is sent back"
    )
    previous_image: str | None = Field(
        description="the image it ran before this batch's change (recorded with the send)"
    )
    health: dict[str, Any] | None = Field(
        description="the health gate: probe target, when the change ended, the probes so far "
        "(count, healthy in a row, the last one's status or error and timings)"
    )
    backup: dict[str, Any] | None = Field(
        description="the backup image made before the change: name, job, image id, status"
    )
    error_code: str | None
    error_message: str | None
    broken: bool
    submitted_at: Time | None
    finished_at: Time | None
    updated_at: Time


class ServerPage(_Open):
    items: list[ServerView]
    next_cursor: str | None


class HistoryRow(_Open):
    batch_id: str
    server_id: str
    from_state: str | None
    to_state: str
    at: Time
    reason: str
    attempt: int
    job_id: str | None
    details: dict[str, Any] = Field(description="the cloud's words: error code, message, job")


class HistoryPage(_Open):
    items: list[HistoryRow]
    next_cursor: str | None


class WebhookAttemptView(_Open):
    attempt: int
    at: Time
    status_code: int | None
    error: str | None
    duration_ms: int | None


class WebhookDeliveryView(_Open):
    id: int
    batch_id: str
    url: str
    event: str
    state: str
    attempt_count: int
    next_attempt_at: Time | None
    last_status: int | None
    last_error: str | None
    created_at: Time
    delivered_at: Time | None
    payload: dict[str, Any]
    attempts: list[WebhookAttemptView]


class WebhookPage(_Open):
    items: list[WebhookDeliveryView]
    counts: dict[str, int] | None = None


class WhoAmI(_Open):
    name: str
    role: Literal["viewer", "operator", "approver", "admin"]
    projects: list[str] | None = Field(description="null: every project")


class TokenView(_Open):
    id: str
    name: str
    role: Literal["viewer", "operator", "approver", "admin"]
    projects: list[str] | None
    token_prefix: str
    created_at: Time
    created_by: str
    last_used_at: Time | None
    revoked_at: Time | None


class TokenCreated(TokenView):
    token: str = Field(description="shown only in this answer; only its hash is kept")


class TokenList(_Open):
    items: list[TokenView]


class TokenRequest(BaseModel):
    """`POST /api/v1/tokens` (validated by services/tokens.py; described here)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.@-]{1,64}$")
    role: Literal["viewer", "operator", "approver", "admin"]
    projects: list[str] | None = Field(None, description="null: every project")


class AuditView(_Open):
    id: int
    at: Time
    actor: str
    role: str | None
    action: str
    method: str
    path: str
    batch_id: str | None
    project_id: str | None
    remote_addr: str | None
    status: int
    outcome: Literal["ok", "denied", "error"]
    details: dict[str, Any]


class AuditPage(_Open):
    items: list[AuditView]
    next_cursor: str | None


class PauseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(None, max_length=500)


class RetryRequest(BaseModel):
    """`POST .../retry`: which states to take again, and what to change for the new batch."""

    model_config = ConfigDict(extra="forbid")
    states: list[Literal["failed", "cancelled", "skipped", "succeeded"]] | None = Field(
        None, description='default: ["failed"]'
    )
    os_change: dict[str, Any] | None = None
    policy: dict[str, Any] | None = None
    cloud_init: bool | None = None
    on_conflict: Literal["reject", "skip"] | None = None
    notify_url: str | None = None


class RollbackRequest(BaseModel):
    """`POST .../rollback`: which servers go back (by id or by state; neither: every server the
    batch sent a change to), the login for the old OS, and the rollout controls."""

    model_config = ConfigDict(extra="forbid")
    servers: list[str] | None = Field(None, min_length=1)
    states: list[Literal["failed", "cancelled", "skipped", "succeeded"]] | None = Field(
        None, min_length=1
    )
    os_change: dict[str, Any] | None = Field(
        None, description="keyname, adminpass, userid, metadata, mode: never an image"
    )
    policy: dict[str, Any] | None = None
    on_conflict: Literal["reject", "skip"] | None = None
    notify_url: str | None = None


class ApprovalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    comment: str | None = Field(None, max_length=500)


class EmptyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
