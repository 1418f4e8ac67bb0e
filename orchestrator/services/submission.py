"""Submitting one server's changeos exactly once, and reconciling when an outcome is unknown.

The order is the guarantee (DESIGN.md invariant 3): the server is read and its rate token
taken first; then the attempt is recorded and committed, with the server as it looked and in
the same statement as the batch's pause/cancel/budget check; then the call goes out at once.
A row whose call started but whose outcome never arrived is never sent again blindly: the
server is read, and a new call goes out only when it is exactly as it was before the call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiohttp
from sqlalchemy import ColumnElement, bindparam, select

from orchestrator.cloud.client import EcsClient
from orchestrator.cloud.errors import ConfigError, EcsError, OutcomeUnknown, Rejected, Retryable
from orchestrator.cloud.models import OsChange, Server
from orchestrator.db.bookkeeping import release_dispatch
from orchestrator.db.models import BATCHES_TABLE, Batch, BatchServer
from orchestrator.db.transitions import (
    Condition,
    ServerColumns,
    ServerGuard,
    record_server_transition,
)
from orchestrator.domain.backups import needs_backup
from orchestrator.domain.preflight import Judgement, Verdict
from orchestrator.domain.rollout import allowed_failures, budget_spent
from orchestrator.domain.states import TERMINAL_BATCH_STATES, BatchState, ServerState
from orchestrator.domain.timing import first_poll_delay_s, retry_delay_s
from orchestrator.domain.verdicts import Reconcile, ServerSnapshot, reconcile_verdict
from orchestrator.domain.windows import window_state
from orchestrator.observability.logs import log_context
from orchestrator.runtime import Runtime
from orchestrator.services import preflight
from orchestrator.services.backups import start_backup
from orchestrator.services.control import config_error_reason, pause_for_config_error
from orchestrator.services.sealing import SealError, unseal
from orchestrator.services.send_checks import judge_before_send
from orchestrator.services.verification import HEALTH_CHECK_FAILED, settle_applied

# With backoff capped at two minutes, about an hour of trying before a server is given up.
MAX_SUBMIT_RETRIES = 30
# Calls sent for one server whose outcomes were each lost, yet the server showed no change:
# past this many, something is wrong that a person should look at.
MAX_ATTEMPTS = 10

log = logging.getLogger("reimage.submission")


@dataclass(frozen=True)
class Loaded:
    row: BatchServer
    batch: Batch


def load(rt: Runtime, batch_server_id: int) -> Loaded | None:
    with rt.sessions() as session:
        row = session.get(BatchServer, batch_server_id)
        if row is None:
            return None
        return Loaded(row, session.get_one(Batch, row.batch_id))


def load_many(rt: Runtime, batch_server_ids: list[int]) -> dict[int, Loaded]:
    """The task's rows and their batches, in two statements rather than two per row. A batch
    read once for the task may be a moment old; what decides a send (pause, cancel, budget) is
    read again in the statement that records it (`_batch_may_send`)."""
    with rt.sessions() as session:
        rows = list(
            session.scalars(select(BatchServer).where(BatchServer.id.in_(batch_server_ids)))
        )
        batch_ids = {r.batch_id for r in rows}
        batches = {b.id: b for b in session.scalars(select(Batch).where(Batch.id.in_(batch_ids)))}
    return {row.id: Loaded(row, batches[row.batch_id]) for row in rows}


async def submit_servers(rt: Runtime, batch_server_ids: list[int]) -> dict[str, int]:
    """Advance several servers at once (concurrent HTTP, one event loop); count outcomes."""
    outcomes: dict[str, int] = {}
    loaded = load_many(rt, batch_server_ids)
    for outcome in await asyncio.gather(
        *(submit_server(rt, i, loaded=loaded.get(i)) for i in batch_server_ids)
    ):
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


async def submit_server(rt: Runtime, batch_server_id: int, *, loaded: Loaded | None = None) -> str:
    """Advance one `submitting` server by one step; answer what was done (for logs and tests).
    `loaded`: the row and its batch as just read (`load_many`), else read here."""
    loaded = loaded if loaded is not None else load(rt, batch_server_id)
    if loaded is None or loaded.row.state != ServerState.SUBMITTING.value:
        return "not_submitting"
    row, batch = loaded.row, loaded.batch
    now = rt.clock()
    if row.next_attempt_at is not None and row.next_attempt_at > now:
        _release_dispatch(rt, row.id)
        return "not_due"
    with log_context(batch_id=batch.id, server_id=row.server_id):
        async with rt.http.cloud() as http:
            client = rt.ecs_client(http, project_id=batch.project_id, region=batch.region)
            if row.call_started_at is not None:
                return await reconcile(rt, client, row, batch)
            return await _send_changeos(rt, http, client, row, batch)


def _release_dispatch(rt: Runtime, row_id: int) -> None:
    with rt.sessions() as session:
        release_dispatch(session, row_id)
        session.commit()


def _stop_before_sending(rt: Runtime, row: BatchServer, batch: Batch) -> str | None:
    """An early look at pause, cancel and the error budget, before any cloud call is spent on
    the server. The guarantee is the compare-and-set that records the send (`_batch_may_send`);
    this is also how a server that lost that compare-and-set to a pause is put back."""
    now = rt.clock()
    if row.phase == "rollback":
        # A rollback is the way out of a failed health gate: an abort, a cancel or a spent
        # budget (which that failure may itself have spent) does not stop it; a pause does,
        # as it stops every call (DESIGN.md invariant 6), and the tick hands it out again.
        if batch.state != BatchState.RUNNING.value:
            _release_dispatch(rt, row.id)
            return "rollback_waits_for_resume"
        return None
    over_budget = batch.abort_reason is not None or budget_spent(
        batch.budget_used, batch.rollout_policy.max_failures, batch.total
    )
    with rt.sessions() as session:
        if batch.cancel_requested or over_budget or batch.state in TERMINAL_BATCH_STATES:
            reason = "error_budget" if over_budget else "cancelled"
            record_server_transition(
                session,
                row.id,
                expected=ServerState.SUBMITTING,
                to=ServerState.CANCELLED,
                reason=reason,
                now=now,
                guard={"call_started_at": None},
                details={"failed_so_far": batch.n_failed} if over_budget else {},
            )
            session.commit()
            return reason
        closed = not window_state(batch.rollout_policy.window_list, now).open
        if batch.state != BatchState.RUNNING.value or closed:
            record_server_transition(
                session,
                row.id,
                expected=ServerState.SUBMITTING,
                to=ServerState.PENDING,
                reason="released_window_closed" if closed else "released_paused",
                now=now,
                guard={"call_started_at": None},
                values={"dispatched_at": None, "next_attempt_at": None},
                details={"pause_reason": batch.pause_reason},
            )
            session.commit()
            return "released"
    return None


# The send's batch condition, by (rollback, with an error budget): built once, with bound values.
_MAY_SEND: dict[tuple[bool, bool], ColumnElement[bool]] = {}


def _batch_may_send(batch: Batch, row: BatchServer) -> Condition:
    """The batch, as it is when the send is recorded: running, not cancelled, not aborted and
    within its error budget (DESIGN.md invariant 6: no send can follow a committed pause).
    A rollback needs only the first: it is what a spent budget calls for."""
    rollback = row.phase == "rollback"
    allowed = None if rollback else allowed_failures(batch.rollout_policy.max_failures, batch.total)
    shape = (rollback, allowed is not None)
    clause = _MAY_SEND.get(shape)
    if clause is None:
        # The table's columns, not the mapped class's: an ORM attribute anywhere in the
        # statement sends the whole compare-and-set through the ORM's bulk-update path.
        c = BATCHES_TABLE.c
        conditions: list[ColumnElement[bool]] = [
            c.id == bindparam("may_send_batch_id"),
            c.state == BatchState.RUNNING.value,
        ]
        if not rollback:
            conditions += [c.cancel_requested.is_(False), c.abort_reason.is_(None)]
            if allowed is not None:
                conditions.append(c.n_failed + c.n_rolling_back <= bindparam("may_send_allowed"))
        clause = _MAY_SEND[shape] = select(c.id).where(*conditions).exists()
    params: dict[str, Any] = {"may_send_batch_id": batch.id}
    if allowed is not None:
        params["may_send_allowed"] = allowed
    return Condition(("batch_may_send", *shape), clause, params)


def _os_change(rt: Runtime, row: BatchServer, batch: Batch) -> OsChange:
    body = dict(batch.os_change)
    metadata = {str(k): str(v) for k, v in (body.get("metadata") or {}).items()}
    adminpass = None
    if batch.sealed_secrets is not None:
        key = rt.settings.secret_key.get_secret_value() if rt.settings.secret_key else ""
        secrets = unseal(key, batch.sealed_secrets)
        adminpass = secrets.get("adminpass")
        if "user_data" in secrets:
            metadata["user_data"] = secrets["user_data"]
    return OsChange(
        # Confirmed (or chosen, for per-architecture images) by the pre-flight check.
        imageid=row.image_for(batch.os_change),
        keyname=body.get("keyname"),
        userid=body.get("userid"),
        adminpass=adminpass,
        metadata=metadata,
        mode=body.get("mode"),
        is_auto_pay=body.get("isAutoPay"),
    )


def token_deadline_s(rt: Runtime) -> float:
    """How long a task may wait for the changeos's rate token before it hands the server back
    (unsent) to the tick: half the lease, so a task seldom holds a row the tick has already
    handed to another worker. When it does, nothing is recorded yet, and the compare-and-set
    that records the send lets only one of them send."""
    return max(1.0, rt.settings.task_lease_s / 2)


async def _send_changeos(
    rt: Runtime, http: aiohttp.ClientSession, client: EcsClient, row: BatchServer, batch: Batch
) -> str:
    stopped = _stop_before_sending(rt, row, batch)
    if stopped:
        return stopped
    try:
        change = _os_change(rt, row, batch)
    except SealError as exc:
        pause_for_config_error(rt, batch.id, f"secrets unreadable: {exc}")
        _release(rt, row, "config_error", {"error": str(exc)})
        return "config_error"
    looked = await _look_before_sending(rt, http, client, row, batch, change)
    if isinstance(looked, str):
        return looked
    before, image_id = looked
    if needs_backup(batch.rollout_policy.backup, phase=row.phase, backup=row.backup):
        # The system disk is saved first (policy.backup); the changeos goes once the image is
        # active, on a later step that reads and judges the server again.
        ims = rt.ims_client(http, project_id=batch.project_id, region=batch.region)
        return await start_backup(
            rt,
            ims,
            row,
            batch,
            before,
            may_send=_batch_may_send(batch, row),
            token_deadline_s=token_deadline_s(rt),
        )
    change = dataclasses.replace(change, imageid=image_id)
    # The rate token BEFORE the attempt is recorded: whatever the wait, it happens while the
    # row still says "nothing sent", so nothing that can take unbounded time sits between the
    # record and the send (DESIGN.md invariant 3).
    if not await client.take_rate_token(within_s=token_deadline_s(rt)):
        _release_dispatch(rt, row.id)
        return "rate_wait_expired"
    # Record the attempt and commit BEFORE the call. The guard makes this the one place where
    # two tasks holding the same id can race; exactly one of them wins and sends, and only
    # while the batch may send (read in the same statement).
    started = rt.clock()
    won = _settle(
        rt,
        row.id,
        to=ServerState.SUBMITTING,
        reason="changeos_sent",
        now=started,
        guard={"call_started_at": None, "attempt": row.attempt},
        condition=_batch_may_send(batch, row),
        values={
            "attempt": row.attempt + 1,
            "call_started_at": started,
            "before_call": before.as_dict(),
            "facts_not_before": None,
            "target_image": image_id,
            # Where a rollback would take it: the image it runs now (a rollback's own send
            # keeps the image it is undoing, so an on-demand rollback of it goes forward).
            **({"previous_image": before.image_id} if row.phase == "change" else {}),
        },
        details={
            "attempt": row.attempt + 1,
            "imageid": change.imageid,
            "api": "v2" if batch.cloud_init else "v1",
            "before_call": before.as_dict(),
            "phase": row.phase,
            **_previous_image_facts(row, before),
        },
    )
    if not won:
        return _after_lost_send(rt, row)
    attempt = row.attempt + 1
    try:
        job_id = await client.change_os(
            row.server_id, change, cloud_init=batch.cloud_init, token_taken=True
        )
    except OutcomeUnknown as exc:
        _log_refused(exc, attempt)
        return _record_unknown(rt, row, attempt, exc)
    except Retryable as exc:
        _log_refused(exc, attempt)
        return _schedule_retry(rt, row, attempt, exc, after_call=True)
    except ConfigError as exc:
        _log_refused(exc, attempt)
        pause_for_config_error(rt, batch.id, config_error_reason(exc))
        _release(rt, row, "config_error", exc.as_details(), guard_attempt=attempt)
        return "config_error"
    except Rejected as exc:
        _log_refused(exc, attempt)
        return _fail(rt, row, exc, reason="rejected", attempt=attempt)
    log.info("server submitted", extra={"job_id": job_id, "attempt": attempt})
    now = rt.clock()
    poll_in = first_poll_delay_s(batch.rollout_policy.poll_interval_s, batch.expected_job_s)
    _settle(
        rt,
        row.id,
        to=ServerState.RUNNING,
        reason="accepted",
        now=now,
        guard={"attempt": attempt},
        values={
            "job_id": job_id,
            "job_status": "INIT",
            "call_started_at": None,
            "outcome_unknown": False,
            "submitted_at": now,
            "dispatched_at": None,
            "next_poll_at": now + timedelta(seconds=poll_in),
            "error_code": None,
            "error_message": None,
        },
        details={"job_id": job_id, "attempt": attempt},
    )
    return "accepted"


def _previous_image_facts(row: BatchServer, before: ServerSnapshot) -> dict[str, Any]:
    """The image the server runs before its change, with the architecture and firmware
    pre-flight read of it at submission (when it was the same image): what a rollback needs."""
    if row.phase != "change":
        return {}
    facts = row.facts or {}
    same = facts.get("image_id") == before.image_id
    return {
        "previous_image": {
            "id": before.image_id,
            "architecture": facts.get("image_architecture") if same else None,
            "firmware": facts.get("image_firmware") if same else None,
        }
    }


def _after_lost_send(rt: Runtime, row: BatchServer) -> str:
    """The compare-and-set that records the send did not match: another task sent first, or
    the batch stopped (paused, cancelled, over budget) since this task read it."""
    fresh = load(rt, row.id)
    if fresh is None or fresh.row.state != ServerState.SUBMITTING.value:
        return "lost_race"
    if fresh.row.call_started_at is not None or fresh.row.attempt != row.attempt:
        return "lost_race"
    stopped = _stop_before_sending(rt, fresh.row, fresh.batch)
    if stopped:
        return stopped
    _release_dispatch(rt, row.id)  # the batch may send again (resumed meanwhile): next tick
    return "not_sent"


def _log_refused(exc: EcsError, attempt: int) -> None:
    """The cloud's code and class only: its message may quote our request, never a secret."""
    level = logging.INFO if isinstance(exc, Retryable) else logging.WARNING
    log.log(
        level,
        "changeos refused",
        extra={"code": exc.code, "error_class": type(exc).__name__, "attempt": attempt},
    )


async def _look_before_sending(
    rt: Runtime,
    http: aiohttp.ClientSession,
    client: EcsClient,
    row: BatchServer,
    batch: Batch,
    change: OsChange,
) -> tuple[ServerSnapshot, str] | str:
    """Read the server just before the change and judge it again (pre-flight): skip one
    already on its image, wait while it is busy, fail one the change cannot work on without
    sending anything. Answers the snapshot an unknown outcome is settled against and the image
    to send, or what was done instead."""
    server = None
    if rt.facts is not None:  # a recent list sweep saves a call per server
        # Pre-flight may rely on a list sweep this recent; older facts mean a details call.
        observed_after = rt.clock().timestamp() - rt.settings.facts_max_age_s
        if row.facts_not_before is not None:
            observed_after = max(observed_after, row.facts_not_before.timestamp())
        server = rt.facts.lookup(
            batch.project_id, batch.region, row.server_id, observed_after=observed_after
        )
    try:
        if server is None:
            server = await client.show_server(row.server_id)
    except Retryable as exc:
        return _schedule_retry(rt, row, row.attempt, exc)
    except ConfigError as exc:
        pause_for_config_error(rt, batch.id, config_error_reason(exc))
        _release(rt, row, "config_error", exc.as_details())
        return "config_error"
    except Rejected as exc:
        return _fail(rt, row, exc, reason="preflight_rejected", attempt=row.attempt)
    request = preflight.change_request(
        batch.os_change,
        cloud_init=batch.cloud_init,
        skip_matching=batch.rollout_policy.skip_matching,
        has_adminpass=change.adminpass is not None,
        has_user_data="user_data" in change.metadata,
        image_id=row.target_image if _own_image(row, batch) else None,
    )
    try:
        judgement = await judge_before_send(
            rt,
            http,
            project_id=batch.project_id,
            region=batch.region,
            server=server,
            frozen=row.facts,
            request=request,
        )
    except Retryable as exc:
        return _schedule_retry(rt, row, row.attempt, exc)
    except EcsError as exc:
        # IMS, EVS or flavors refused us (credentials, an endpoint that is not the cloud's):
        # nothing can be judged, so nothing is sent until a person has looked.
        pause_for_config_error(rt, batch.id, f"pre-flight facts unreadable: {exc}")
        _release(rt, row, "config_error", exc.as_details())
        return "config_error"
    return _act_on_judgement(rt, row, server.snapshot(), judgement)


def _own_image(row: BatchServer, batch: Batch) -> bool:
    """The server is sent its own image, not the batch's: a rollback (automatic, or a batch
    of kind rollback, each server back to its own recorded image)."""
    return row.target_image is not None and (row.phase == "rollback" or batch.kind == "rollback")


def _act_on_judgement(
    rt: Runtime, row: BatchServer, seen: ServerSnapshot, judgement: Judgement
) -> tuple[ServerSnapshot, str] | str:
    reasons = [reason.as_dict() for reason in judgement.reasons]
    verdict = judgement.verdict
    if row.phase == "rollback" and verdict in (Verdict.SKIP, Verdict.WILL_FAIL):
        return _rollback_not_sent(rt, row, seen, judgement, reasons)
    if verdict is Verdict.SKIP:
        _settle(
            rt,
            row.id,
            to=ServerState.SKIPPED,
            reason="already_on_image",
            now=rt.clock(),
            guard={"call_started_at": None, "attempt": row.attempt},
            values={"dispatched_at": None, "target_image": judgement.image_id},
            details={"server": seen.as_dict(), "reasons": reasons},
        )
        return "skipped"
    if verdict is Verdict.WAIT:
        busy = Retryable(code="ServerBusy", message=f"server is {seen.status}/{seen.task_state}")
        return _schedule_retry(rt, row, row.attempt, busy, details={"server": seen.as_dict()})
    if verdict is Verdict.UNKNOWN:
        unknown = Retryable(
            code="PreflightUnknown",
            message="a fact pre-flight needs: " + ", ".join(judgement.codes),
        )
        return _schedule_retry(rt, row, row.attempt, unknown, details={"reasons": reasons})
    first = judgement.first_blocking
    if verdict is Verdict.WILL_FAIL and first is not None:
        _settle(
            rt,
            row.id,
            to=ServerState.FAILED,
            reason="preflight_failed",
            now=rt.clock(),
            guard={"call_started_at": None, "attempt": row.attempt},
            values={
                "dispatched_at": None,
                "error_code": first.code,
                "error_message": first.message,
            },
            details={"server": seen.as_dict(), "reasons": reasons, "changeos_sent": False},
        )
        return "preflight_failed"
    assert judgement.image_id is not None
    return seen, judgement.image_id


def _rollback_not_sent(
    rt: Runtime,
    row: BatchServer,
    seen: ServerSnapshot,
    judgement: Judgement,
    reasons: list[dict[str, Any]],
) -> str:
    """A rollback that needs no call (the server already runs its previous image) or that the
    cloud would refuse (pre-flight): it ends failed all the same, saying which."""
    first = judgement.first_blocking
    if judgement.verdict is Verdict.SKIP:
        reason, outcome = "rolled_back", f"already on image {row.target_image}"
    else:
        assert first is not None
        reason, outcome = "rollback_not_sent", f"rollback not sent: {first.code}: {first.message}"
    _settle(
        rt,
        row.id,
        to=ServerState.FAILED,
        reason=reason,
        now=rt.clock(),
        guard={"call_started_at": None, "attempt": row.attempt},
        values={
            "dispatched_at": None,
            "error_code": HEALTH_CHECK_FAILED,
            "error_message": f"{row.error_message or 'the health gate failed'}; {outcome}",
        },
        details={"server": seen.as_dict(), "reasons": reasons, "changeos_sent": False},
    )
    return reason


def _settle(
    rt: Runtime,
    row_id: int,
    *,
    to: ServerState,
    reason: str,
    now: datetime,
    guard: ServerGuard | None = None,
    where: Sequence[ColumnElement[bool]] = (),
    condition: Condition | None = None,
    values: ServerColumns | None = None,
    details: dict[str, Any] | None = None,
) -> bool:
    """One compare-and-set from `submitting`, in its own transaction."""
    with rt.sessions() as session:
        moved = record_server_transition(
            session,
            row_id,
            expected=ServerState.SUBMITTING,
            to=to,
            reason=reason,
            now=now,
            guard=guard,
            where=where,
            condition=condition,
            values=values,
            details=details,
        )
        session.commit()
    return moved


def _record_unknown(rt: Runtime, row: BatchServer, attempt: int, exc: EcsError) -> str:
    now = rt.clock()
    _settle(
        rt,
        row.id,
        to=ServerState.SUBMITTING,
        reason="outcome_unknown",
        now=now,
        guard={"attempt": attempt},
        values={
            "outcome_unknown": True,
            "dispatched_at": None,
            "next_attempt_at": now + timedelta(seconds=rt.settings.reconcile_grace_s),
            "error_code": exc.code,
            "error_message": exc.message,
        },
        details=exc.as_details(),
    )
    return "outcome_unknown"


def _schedule_retry(
    rt: Runtime,
    row: BatchServer,
    attempt: int,
    exc: Retryable,
    details: dict[str, Any] | None = None,
    *,
    after_call: bool = False,
) -> str:
    """Try the same server later. `after_call`: a changeos was refused (throttled, busy): the
    next send must look at the server again rather than at facts from before this one."""
    if row.retries + 1 > MAX_SUBMIT_RETRIES:
        return _fail(rt, row, exc, reason="retries_exhausted", attempt=attempt)
    now = rt.clock()
    delay = retry_delay_s(row.retries, retry_after_s=exc.retry_after_s, rng=random.Random())
    _settle(
        rt,
        row.id,
        to=ServerState.SUBMITTING,
        reason="retry_scheduled",
        now=now,
        guard={"attempt": attempt},
        values={
            "call_started_at": None,
            "outcome_unknown": False,
            "dispatched_at": None,
            "retries": row.retries + 1,
            "next_attempt_at": now + timedelta(seconds=delay),
            "error_code": exc.code,
            "error_message": exc.message,
            **({"facts_not_before": now} if after_call else {}),
        },
        details={**exc.as_details(), **(details or {}), "retry_in_s": round(delay, 3)},
    )
    return "retry_scheduled"


def _fail(rt: Runtime, row: BatchServer, exc: EcsError, *, reason: str, attempt: int) -> str:
    now = rt.clock()
    _settle(
        rt,
        row.id,
        to=ServerState.FAILED,
        reason=reason,
        now=now,
        guard={"attempt": attempt},
        values={
            "call_started_at": None,
            "outcome_unknown": False,
            "dispatched_at": None,
            "error_code": exc.code,
            "error_message": exc.message,
        },
        details=exc.as_details(),
    )
    return "failed"


def _release(
    rt: Runtime,
    row: BatchServer,
    reason: str,
    details: dict[str, Any],
    guard_attempt: int | None = None,
) -> None:
    """Back to pending: known not applied, to be sent later (after a resume)."""
    guard: ServerGuard = {"attempt": guard_attempt} if guard_attempt is not None else {}
    _settle(
        rt,
        row.id,
        to=ServerState.PENDING,
        reason=reason,
        now=rt.clock(),
        guard=guard,
        details=details,
        values={
            "call_started_at": None,
            "outcome_unknown": False,
            "dispatched_at": None,
            "next_attempt_at": None,
            "before_call": None,
        },
    )


def call_window(rt: Runtime) -> timedelta:
    """How long a changeos call can possibly stay in flight before its client gives up."""
    settings = rt.settings
    return timedelta(seconds=settings.ecs_connect_timeout_s + settings.ecs_read_timeout_s + 5)


async def reconcile(rt: Runtime, client: EcsClient, row: BatchServer, batch: Batch) -> str:
    """A changeos went out and we do not know what became of it: ask the server itself."""
    now = rt.clock()
    assert row.call_started_at is not None
    if not row.outcome_unknown and row.call_started_at > now - call_window(rt):
        # Another worker may still be inside this call (a duplicated message): only once the
        # client's own timeouts have surely expired is the call known to be lost.
        _release_dispatch(rt, row.id)
        return "call_in_progress"
    try:
        server = await client.show_server(row.server_id)
    except Retryable as exc:
        _defer_reconcile(rt, row, exc.as_details())
        return "reconcile_deferred"
    except ConfigError as exc:
        pause_for_config_error(rt, batch.id, config_error_reason(exc))
        _defer_reconcile(rt, row, exc.as_details())
        return "config_error"
    except Rejected as exc:
        return _fail(rt, row, exc, reason="reconcile_failed", attempt=row.attempt)
    return _apply_reconcile(rt, row, batch, server)


def _apply_reconcile(rt: Runtime, row: BatchServer, batch: Batch, server: Server) -> str:
    now = rt.clock()
    seen = server.snapshot()
    before = ServerSnapshot.from_dict(row.before_call) if row.before_call else None
    verdict = reconcile_verdict(before, seen, target_image=row.image_for(batch.os_change))
    details = verdict.details(before, seen)
    # Only the call we examined may be settled by what we saw.
    same_call: ServerGuard = {"attempt": row.attempt, "call_started_at": row.call_started_at}
    settled: ServerColumns = {
        "call_started_at": None,
        "outcome_unknown": False,
        "dispatched_at": None,
    }
    outcome = verdict.outcome
    if outcome is Reconcile.WAIT:
        _defer_reconcile(rt, row, details)
        return "reconcile_deferred"
    if outcome is Reconcile.RUNNING:
        poll_s = batch.rollout_policy.poll_interval_s
        _settle(
            rt,
            row.id,
            to=ServerState.RUNNING,
            reason="reconciled_in_progress",
            now=now,
            guard=same_call,
            values={
                **settled,
                "submitted_at": row.call_started_at,
                "job_status": None,
                "next_poll_at": now + timedelta(seconds=poll_s),
            },
            details=details,
        )
        return "reconciled_running"
    if outcome is Reconcile.SUCCEEDED:
        # Applied: succeeded, or verifying first, or (a rollback) failed back where it was.
        settlement = settle_applied(rt, row, batch, server, reason="reconciled_applied")
        _settle(
            rt,
            row.id,
            to=settlement.to,
            reason=settlement.reason,
            now=now,
            guard=same_call,
            values={**settled, **settlement.values},
            details={**details, **settlement.details},
        )
        return f"reconciled_{settlement.to.value}"
    if outcome is Reconcile.RESEND:
        if row.attempt >= MAX_ATTEMPTS:
            code, message = "attempts_exhausted", f"{row.attempt} calls, none known to land"
            return _settle_failed(rt, row, same_call, "attempts_exhausted", code, message, details)
        # Exactly as before the call: it did not land. The next send reads the server again.
        _settle(
            rt,
            row.id,
            to=ServerState.SUBMITTING,
            reason="reconciled_not_applied",
            now=now,
            guard=same_call,
            values={**settled, "next_attempt_at": now, "facts_not_before": now},
            details=details,
        )
        return "reconciled_resend"
    if outcome is Reconcile.BROKEN:
        message = "the lost call landed: the server is on the target image but in ERROR"
        return _settle_failed(
            rt, row, same_call, "reconciled_broken", "ServerError", message, details, broken=True
        )
    changed = ", ".join(verdict.changed) or "no snapshot from before the call"
    message = (
        f"the answer to changeos attempt {row.attempt} was lost and the server changed since "
        f"({changed}); it is not sent again: retry the server to send it"
    )
    code = "outcome_unknown_server_changed"
    return _settle_failed(rt, row, same_call, code, code, message, details, broken=seen.is_error)


def _settle_failed(
    rt: Runtime,
    row: BatchServer,
    same_call: ServerGuard,
    reason: str,
    code: str,
    message: str,
    details: dict[str, Any],
    *,
    broken: bool = False,
) -> str:
    _settle(
        rt,
        row.id,
        to=ServerState.FAILED,
        reason=reason,
        now=rt.clock(),
        guard=same_call,
        values={
            "call_started_at": None,
            "outcome_unknown": False,
            "dispatched_at": None,
            "error_code": code,
            "error_message": message,
            "broken": broken,
        },
        details={**details, "broken": True} if broken else details,
    )
    return "reconciled_failed"


def _defer_reconcile(rt: Runtime, row: BatchServer, details: dict[str, Any]) -> None:
    """Look at the server again later; the row keeps its unknown outcome meanwhile."""
    now = rt.clock()
    _settle(
        rt,
        row.id,
        to=ServerState.SUBMITTING,
        reason="reconcile_deferred",
        now=now,
        guard={"attempt": row.attempt, "call_started_at": row.call_started_at},
        values={
            "outcome_unknown": True,
            "dispatched_at": None,
            "next_attempt_at": now + timedelta(seconds=max(5.0, rt.settings.reconcile_grace_s)),
        },
        details=details,
    )
