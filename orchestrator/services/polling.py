"""Following cloud jobs to their end: many jobs polled concurrently in one task.

A running server with a job id is followed through the job API. One without (reconciled after a
lost answer, or whose job the cloud already purged) is followed through the server itself.
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from orchestrator.cloud.client import EcsClient
from orchestrator.cloud.errors import ConfigError, JobGone, Rejected, Retryable
from orchestrator.cloud.facts import SERVERS_PER_PAGE_WORTH_IT
from orchestrator.cloud.models import Job, Server
from orchestrator.db.bookkeeping import reschedule_poll
from orchestrator.db.models import Batch, BatchServer
from orchestrator.db.transitions import ServerColumns, record_server_transition
from orchestrator.domain.states import ServerState
from orchestrator.domain.timing import (
    check_server_at_once,
    follow_up_floor_s,
    job_duration_s,
    next_poll_delay_s,
    retry_delay_s,
)
from orchestrator.domain.verdicts import AfterJob, after_job_verdict
from orchestrator.observability.logs import log_context
from orchestrator.runtime import Runtime
from orchestrator.services.backups import follow_backups
from orchestrator.services.control import config_error_reason, pause_for_config_error
from orchestrator.services.verification import settle_applied

MAX_CONCURRENT_POLLS = 32
# A finished job's server check waits this long at most for a list sweep, asking again so often.
MAX_WAIT_FOR_SWEEP_S = 15.0
SWEEP_RETRY_S = 1.5

log = logging.getLogger("reimage.polling")


async def poll_servers(rt: Runtime, batch_server_ids: list[int]) -> dict[str, int]:
    """Poll every listed running server's job once, and every backing-up server's backup
    image; answer how many ended in each outcome."""
    with rt.sessions() as session:
        found = list(
            session.scalars(
                select(BatchServer).where(
                    BatchServer.id.in_(batch_server_ids),
                    BatchServer.state.in_(
                        [ServerState.RUNNING.value, ServerState.BACKING_UP.value]
                    ),
                )
            )
        )
        batches = {
            b.id: b
            for b in session.scalars(select(Batch).where(Batch.id.in_({r.batch_id for r in found})))
        }
    outcomes: dict[str, int] = {}
    rows = [r for r in found if r.state == ServerState.RUNNING.value]
    backing_up = [r for r in found if r.state == ServerState.BACKING_UP.value]
    for outcome in await follow_backups(rt, backing_up, batches) if backing_up else []:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    if not rows:
        return outcomes
    limit = asyncio.Semaphore(MAX_CONCURRENT_POLLS)
    async with rt.http.cloud() as http:
        clients: dict[tuple[str, str], EcsClient] = {}

        async def one(row: BatchServer) -> str:
            batch = batches[row.batch_id]
            key = (batch.project_id, batch.region)
            if key not in clients:
                clients[key] = rt.ecs_client(http, project_id=key[0], region=key[1])
            async with limit:
                with log_context(batch_id=batch.id, server_id=row.server_id, job_id=row.job_id):
                    return await poll_one(rt, clients[key], row, batch)

        for outcome in await asyncio.gather(*(one(r) for r in rows)):
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


async def poll_one(rt: Runtime, client: EcsClient, row: BatchServer, batch: Batch) -> str:
    policy = batch.rollout_policy
    timeout_s = float(policy.job_timeout_s)
    now = rt.clock()
    # Timed out only if the cloud still says the job runs: a poll that came late (workers
    # down, scheduler stalled) must not fail a server whose job already ended.
    overdue = row.submitted_at is not None and now - row.submitted_at > timedelta(seconds=timeout_s)
    try:
        if row.job_result is not None:  # the job ended earlier; only the server check is left
            return await _check_server_after(rt, client, row, batch)
        if row.job_id:
            try:
                job = await client.show_job(row.job_id)
            except JobGone as exc:
                return await _follow_server(
                    rt, client, row, batch, {"job_gone": exc.as_details()}, overdue=overdue
                )
            if job.is_final:
                _note_job_result(rt, row, job)
                return await _check_server_after(rt, client, row, batch)
            if overdue and not job.is_final:
                return _timed_out(rt, row, timeout_s, job)
            return _apply_job(rt, row, batch, job)
        return await _follow_server(rt, client, row, batch, {}, overdue=overdue)
    except Retryable as exc:
        delay = retry_delay_s(row.polls, retry_after_s=exc.retry_after_s, rng=random.Random())
        _reschedule(rt, row, delay, (exc.code, exc.message))
        return "poll_retry"
    except ConfigError as exc:
        pause_for_config_error(rt, batch.id, config_error_reason(exc))
        _reschedule(rt, row, 30.0, (exc.code, exc.message))
        return "config_error"
    except Rejected as exc:
        return _end(
            rt,
            row,
            ServerState.FAILED,
            "poll_rejected",
            exc.as_details(),
            error=(exc.code, exc.message),
        )


def _timed_out(rt: Runtime, row: BatchServer, timeout_s: float, job: Job) -> str:
    return _end(
        rt,
        row,
        ServerState.FAILED,
        "timeout",
        {"job_timeout_s": timeout_s, "job": job.body},
        error=("Timeout", f"the job had not ended after {timeout_s:.0f} s"),
        job_status=job.status,
        job=job,
    )


def _job_failure(job: Job) -> tuple[str, str]:
    parts = [job.fail_reason, *job.sub_job_errors]
    # The cloud often repeats the same reason in the job and its sub-job: say it once.
    return job.error_code or "JobFailed", "; ".join(dict.fromkeys(p for p in parts if p)) or (
        "job failed"
    )


def _note_job_result(rt: Runtime, row: BatchServer, job: Job) -> None:
    """Remember the final job body and when we saw it, so the server check neither needs the
    job again (the cloud purges jobs a day after they end) nor trusts facts older than it.
    It is written with what the check decides (its next look or its end), in the same
    statement; should this task die first, the next poll asks the job again."""
    row.job_result = {"job": job.body, "seen_at": rt.clock().timestamp()}
    row.job_status = job.status


async def _server_after_job(
    rt: Runtime, client: EcsClient, row: BatchServer, batch: Batch, seen_at: float
) -> Server | None:
    """The server as it is since its job ended: from a list sweep when the batch is big enough
    for sweeps to pay and not in its tail (None: wait for the next one), else from the
    server-details API."""
    if rt.facts is not None:
        server = rt.facts.lookup(
            batch.project_id, batch.region, row.server_id, observed_after=seen_at
        )
        if server is not None:
            return server
        pages = rt.facts.project_pages(batch.project_id, batch.region) or 1
        facts = rt.facts
        worth = (
            batch.n_running >= pages * SERVERS_PER_PAGE_WORTH_IT
            and not check_server_at_once(
                pending=batch.n_pending,
                running=batch.n_running,
                rate=rt.cloud_rate(),
                next_sweep_in_s=lambda: facts.next_sweep_in(batch.project_id, batch.region),
            )
            and not facts.sweeps_refused(batch.project_id, batch.region)
        )
        if worth and rt.clock().timestamp() - seen_at < MAX_WAIT_FOR_SWEEP_S:
            facts.want(batch.project_id, batch.region)
            return None
    return await client.show_server(row.server_id)


async def _check_server_after(
    rt: Runtime, client: EcsClient, row: BatchServer, batch: Batch
) -> str:
    """A job's word is checked against the server: SUCCESS with the server in ERROR, or not
    on the target image, is a failure; a server left in ERROR is flagged broken."""
    assert row.job_result is not None
    job = Job.from_body(row.job_result.get("job") or {})
    server = await _server_after_job(rt, client, row, batch, float(row.job_result["seen_at"]))
    if server is None:
        _reschedule(rt, row, SWEEP_RETRY_S)
        return "awaiting_sweep"
    seen = server.snapshot()
    verdict = after_job_verdict(
        seen, target_image=row.image_for(batch.os_change), job_succeeded=job.succeeded
    )
    details = {"job": job.body, "server": seen.as_dict()}
    if verdict is AfterJob.WAIT:
        _reschedule(rt, row, batch.rollout_policy.poll_interval_s)
        return "server_still_rebuilding"
    if verdict is AfterJob.JOB_FAILED:
        return _end(
            rt,
            row,
            ServerState.FAILED,
            "job_failed",
            details,
            error=_job_failure(job),
            job_status=job.status,
            broken=seen.is_error,
            job=job,
        )
    if verdict is AfterJob.BROKEN:
        return _end(
            rt,
            row,
            ServerState.FAILED,
            "broken_after_success",
            details,
            error=("ServerError", "the job succeeded but the server is in ERROR"),
            job_status=job.status,
            broken=True,
            job=job,
        )
    if verdict is AfterJob.WRONG_IMAGE:
        return _end(
            rt,
            row,
            ServerState.FAILED,
            "not_on_target_image",
            details,
            error=(
                "ImageMismatch",
                f"the job succeeded but the server runs image {seen.image_id}",
            ),
            job_status=job.status,
            job=job,
        )
    return _applied(
        rt, row, batch, server, "job_succeeded", details, job_status=job.status, job=job
    )


def _applied(
    rt: Runtime,
    row: BatchServer,
    batch: Batch,
    server: Server,
    reason: str,
    details: dict[str, Any],
    *,
    job_status: str | None = None,
    job: Job | None = None,
) -> str:
    """The cloud shows the change applied: succeeded, verifying (the health gate), or, for a
    rollback, failed back on its previous image (`settle_applied` decides for every path)."""
    settlement = settle_applied(rt, row, batch, server, reason=reason)
    return _end(
        rt,
        row,
        settlement.to,
        settlement.reason,
        {**details, **settlement.details},
        job_status=job_status,
        job=job,
        extra=settlement.values,
    )


def _apply_job(rt: Runtime, row: BatchServer, batch: Batch, job: Job) -> str:
    """A job still running (final ones go through the server check)."""
    floor = follow_up_floor_s(
        pending=batch.n_pending, running=batch.n_running, rate=rt.cloud_rate()
    )
    delay = next_poll_delay_s(
        row.polls + 1, batch.rollout_policy.poll_interval_s, batch.expected_job_s, floor_s=floor
    )
    if job.status != row.job_status:
        now = rt.clock()
        with rt.sessions() as session:
            record_server_transition(
                session,
                row.id,
                expected=ServerState.RUNNING,
                to=ServerState.RUNNING,
                reason="job_status_changed",
                now=now,
                values={
                    "job_status": job.status,
                    "polls": row.polls + 1,
                    "next_poll_at": now + timedelta(seconds=delay),
                },
                details={"job_status": job.status, "previous": row.job_status},
            )
            session.commit()
        return "job_progress"
    _reschedule(rt, row, delay)
    return "job_pending"


async def _follow_server(
    rt: Runtime,
    client: EcsClient,
    row: BatchServer,
    batch: Batch,
    why: dict[str, Any],
    *,
    overdue: bool = False,
) -> str:
    server = await client.show_server(row.server_id)
    seen = server.snapshot()
    verdict = after_job_verdict(
        seen, target_image=row.image_for(batch.os_change), job_succeeded=None
    )
    details = {**why, "server": seen.as_dict()}
    if verdict is AfterJob.WAIT and seen.is_rebuilding and overdue:
        return _end(
            rt,
            row,
            ServerState.FAILED,
            "timeout",
            details,
            error=("Timeout", "the server was still rebuilding at the job timeout"),
        )
    if verdict is AfterJob.WAIT:
        _reschedule(rt, row, batch.rollout_policy.poll_interval_s)
        return "server_rebuilding" if seen.is_rebuilding else "server_busy"
    if verdict is AfterJob.BROKEN:
        return _end(
            rt,
            row,
            ServerState.FAILED,
            "server_error",
            details,
            error=("ServerError", "server is in ERROR after the change"),
            broken=True,
        )
    if verdict is AfterJob.SUCCEEDED:
        return _applied(rt, row, batch, server, "reconciled_applied", details)
    return _end(
        rt,
        row,
        ServerState.FAILED,
        "reconciled_not_applied",
        details,
        error=("NotApplied", "server is idle and still on its old image"),
    )


def _end(
    rt: Runtime,
    row: BatchServer,
    to: ServerState,
    reason: str,
    details: dict[str, Any],
    *,
    error: tuple[str, str] | None = None,
    job_status: str | None = None,
    broken: bool = False,
    job: Job | None = None,
    extra: ServerColumns | None = None,
) -> str:
    """End a running server's job (to a final state, or to `verifying`); `job` (its final
    answer, when one came) gives its duration; `extra` columns are written last."""
    now = rt.clock()
    values: ServerColumns = {"polls": row.polls + 1, "next_poll_at": None, "broken": broken}
    if job is not None:
        values["job_seconds"] = job_duration_s(job.begin_time, job.end_time)
    if job_status:
        values["job_status"] = job_status
    if error:
        values["error_code"], values["error_message"] = error
    if row.job_result is not None:  # noted by this poll, or kept by an earlier one
        values["job_result"] = row.job_result
        values.setdefault("job_status", row.job_status)
    values.update(extra or {})
    with rt.sessions() as session:
        moved = record_server_transition(
            session,
            row.id,
            expected=ServerState.RUNNING,
            to=to,
            reason=reason,
            now=now,
            values=values,
            details={**details, "broken": True} if broken else details,
        )
        session.commit()
    if moved:
        log.info(
            "job ended",
            extra={"state": to.value, "reason": reason, "code": values.get("error_code")},
        )
        if job is not None and rt.metrics is not None:
            # Noticed when the final job body was first seen (kept before the server check).
            seen = (row.job_result or {}).get("seen_at")
            noticed = datetime.fromtimestamp(float(seen), UTC) if seen else now
            rt.metrics.job_ended(job, noticed_at=noticed, submitted_at=row.submitted_at)
    return to.value


def _reschedule(
    rt: Runtime, row: BatchServer, delay_s: float, error: tuple[str, str] | None = None
) -> None:
    now: datetime = rt.clock()
    with rt.sessions() as session:
        reschedule_poll(
            session,
            row.id,
            polls=row.polls + 1,
            next_poll_at=now + timedelta(seconds=delay_s),
            now=now,
            error=error,
            job_result=row.job_result,
            job_status=row.job_status,
        )
        session.commit()
