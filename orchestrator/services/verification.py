"""The health gate (issue 14): where a server goes once its change is applied, the probes of a
`verifying` server, and what follows an unhealthy one (kept failed, or rolled back).

Probes are scheduled like polls: a verifying row's `next_poll_at` is when it is next probed,
the tick finds it and hands its id to a probe task, so a worker or scheduler restart loses
nothing. What the probes so far say is kept in the row (`health`), and the decision is
`domain.health.health_verdict` on the runtime's clock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from sqlalchemy import select

from orchestrator.cloud.models import Server
from orchestrator.db.bookkeeping import record_probes
from orchestrator.db.models import Batch, BatchServer
from orchestrator.db.transitions import ServerColumns, record_server_transition
from orchestrator.domain.health import (
    AfterChange,
    Health,
    HealthCheck,
    Probe,
    ProbeKind,
    ProbeLog,
    TargetError,
    Unhealthy,
    after_change,
    expand,
    health_verdict,
    when_unhealthy,
)
from orchestrator.domain.states import ServerState
from orchestrator.observability.logs import log_context
from orchestrator.runtime import Runtime

HEALTH_CHECK_FAILED = "health_check_failed"
MAX_CONCURRENT_PROBES = 64

log = logging.getLogger("reimage.verification")


@dataclass(frozen=True)
class Settlement:
    """How a server whose change the cloud shows applied is settled: its next state, the
    history reason, the columns written with it, and what its history row adds."""

    to: ServerState
    reason: str
    values: ServerColumns
    details: dict[str, Any] = field(default_factory=dict)


def settle_applied(
    rt: Runtime, row: BatchServer, batch: Batch, server: Server | None, *, reason: str
) -> Settlement:
    """The one rule for every path that sees a change applied (the poll after a job, the
    follow of a server without a job, the reconcile of a lost answer): `domain.health`'s
    `after_change` decides, this writes it down."""
    policy = batch.rollout_policy
    check = policy.health
    decision = after_change(phase=row.phase, gated=check is not None)
    if decision is AfterChange.SUCCEEDED:
        return Settlement(
            ServerState.SUCCEEDED, reason, {"error_code": None, "error_message": None}
        )
    if decision is AfterChange.ROLLED_BACK:
        message = (row.error_message or "the health gate failed") + (
            f"; rolled back to image {row.target_image}"
        )
        return Settlement(
            ServerState.FAILED,
            "rolled_back",
            {"error_code": HEALTH_CHECK_FAILED, "error_message": message},
            {"rolled_back_to": row.target_image, "observed_by": reason},
        )
    assert check is not None
    now = rt.clock()
    target, target_error = None, None
    if server is not None:
        try:
            target = expand(
                check.kind, check.target, server.probe_target(), rt.settings.health_allowed_hosts
            )
        except TargetError as exc:
            target_error = str(exc)
    else:
        target_error = "the server's addresses are unknown"
    health = {
        "kind": check.kind.value,
        "target": target,
        "target_error": target_error,
        "ended_at": now.timestamp(),
        "log": ProbeLog().as_dict(),
    }
    first_probe = now + timedelta(seconds=0 if target_error else check.initial_delay_s)
    return Settlement(
        ServerState.VERIFYING,
        reason,
        {"health": health, "next_poll_at": first_probe, "error_code": None, "error_message": None},
        {
            "health_check": {
                "kind": check.kind.value,
                "target": _printable(target),
                "error": target_error,
            },
            "first_probe_at": first_probe.isoformat(),
        },
    )


async def probe_servers(rt: Runtime, batch_server_ids: list[int]) -> dict[str, int]:
    """Probe every listed verifying server that is due (one event loop, many at once)."""
    with rt.sessions() as session:
        rows = list(
            session.scalars(
                select(BatchServer).where(
                    BatchServer.id.in_(batch_server_ids),
                    BatchServer.state == ServerState.VERIFYING.value,
                )
            )
        )
        batches = {
            b.id: b
            for b in session.scalars(select(Batch).where(Batch.id.in_({r.batch_id for r in rows})))
        }
    outcomes: dict[str, int] = {}
    if not rows:
        return outcomes
    limit = asyncio.Semaphore(MAX_CONCURRENT_PROBES)
    async with rt.http.probes() as http:

        async def one(row: BatchServer) -> str:
            async with limit:
                with log_context(batch_id=row.batch_id, server_id=row.server_id):
                    return await probe_one(rt, http, row, batches[row.batch_id])

        for outcome in await asyncio.gather(*(one(r) for r in rows)):
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


async def probe_one(
    rt: Runtime, http: aiohttp.ClientSession, row: BatchServer, batch: Batch
) -> str:
    """Look at one verifying server: probe it when a probe is due, then act on the verdict."""
    check = batch.rollout_policy.health
    health = dict(row.health or {})
    if check is None:  # the policy cannot change, so this is a row from a test's hand
        return _end(rt, row, ServerState.SUCCEEDED, "no_health_check", {}, {})
    if health.get("target_error") or not health.get("target"):
        why = str(health.get("target_error") or "no probe target")
        return _unhealthy(rt, row, batch, check, health, f"cannot probe: {why}")
    ended_at = float(health["ended_at"])
    probes = ProbeLog.from_dict(health.get("log"))
    now = rt.clock().timestamp()
    verdict = health_verdict(check, ended_at=ended_at, now=now, probes=probes)
    probed = False
    due = verdict.next_probe_at
    if verdict.health is Health.PROBE_DUE and due is not None and due <= now:
        probed = True
        probe = await run_probe(http, check, str(health["target"]), at=now)
        probes = probes.after(probe)
        health["log"] = probes.as_dict()
        verdict = health_verdict(
            check, ended_at=ended_at, now=rt.clock().timestamp(), probes=probes
        )
    if verdict.health is Health.HEALTHY:
        summary = _summary(health, probes, ended_at)
        return _end(rt, row, ServerState.SUCCEEDED, "healthy", {"health": health}, summary)
    if verdict.health is Health.UNHEALTHY:
        last = probes.last.detail if probes.last else "no probe answered"
        why = (
            f"not healthy {check.deadline_s:.0f} s after the change: {probes.count} probe(s), "
            f"{probes.streak} healthy in a row of {check.successes} needed; last: {last}"
        )
        return _unhealthy(rt, row, batch, check, health, why)
    assert verdict.next_probe_at is not None
    with rt.sessions() as session:
        record_probes(
            session,
            row.id,
            health=health,
            next_probe_at=datetime.fromtimestamp(verdict.next_probe_at, UTC),
            now=rt.clock(),
        )
        session.commit()
    return "probed" if probed else "not_due"


async def run_probe(
    http: aiohttp.ClientSession, check: HealthCheck, target: str, *, at: float
) -> Probe:
    """One probe: an HTTP GET (2xx is healthy, redirects not followed) or a TCP connect."""
    started = time.monotonic()
    try:
        if check.kind is ProbeKind.HTTP:
            timeout = aiohttp.ClientTimeout(total=check.timeout_s)
            async with http.get(target, timeout=timeout, allow_redirects=False) as answer:
                await answer.read()
                healthy, detail = 200 <= answer.status < 300, f"HTTP {answer.status}"
        else:
            host, _, port = target.rpartition(":")
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host.strip("[]"), int(port)), timeout=check.timeout_s
            )
            writer.close()
            healthy, detail = True, "connected"
    except TimeoutError:
        healthy, detail = False, f"no answer within {check.timeout_s:g} s"
    except (aiohttp.ClientError, OSError) as exc:
        healthy, detail = False, f"{type(exc).__name__}: {exc}"[:200]
    return Probe(at=at, healthy=healthy, detail=detail, duration_s=time.monotonic() - started)


def _summary(health: dict[str, Any], probes: ProbeLog, ended_at: float) -> dict[str, Any]:
    """What the history keeps of a health gate: count, last status or error, timings."""
    first = probes.first_healthy_at
    return {
        "target": _printable(health.get("target")),
        "probes": probes.count,
        "healthy_probes": probes.healthy_count,
        "last": probes.last.as_dict() if probes.last else None,
        "healthy_after_s": round(first - ended_at, 3) if first is not None else None,
    }


def _printable(target: object) -> str | None:
    """A probe URL without its query string (which could carry a token of the user's)."""
    if not isinstance(target, str):
        return None
    parts = urlsplit(target)
    return parts._replace(query="", fragment="").geturl() if parts.scheme else target


def _unhealthy(
    rt: Runtime,
    row: BatchServer,
    batch: Batch,
    check: HealthCheck,
    health: dict[str, Any],
    why: str,
) -> str:
    policy = batch.rollout_policy
    rollback_image = rollback_image_of(row)
    decision = when_unhealthy(on_unhealthy=policy.on_unhealthy, rollback_image=rollback_image)
    ended_at = float(health.get("ended_at") or rt.clock().timestamp())
    summary = {
        **_summary(health, ProbeLog.from_dict(health.get("log")), ended_at),
        "why": why,
        "deadline_s": check.deadline_s,
    }
    if decision is Unhealthy.ROLL_BACK:
        assert rollback_image is not None
        now = rt.clock()
        values: ServerColumns = {
            "health": health,
            "phase": "rollback",
            "target_image": rollback_image,
            "call_started_at": None,
            "outcome_unknown": False,
            "dispatched_at": None,
            "next_attempt_at": now,
            "facts_not_before": now,
            "retries": 0,
            "job_result": None,
            "next_poll_at": None,
            "error_code": HEALTH_CHECK_FAILED,
            "error_message": why,
        }
        with rt.sessions() as session:
            moved = record_server_transition(
                session,
                row.id,
                expected=ServerState.VERIFYING,
                to=ServerState.SUBMITTING,
                reason="rollback_started",
                now=now,
                values=values,
                details={**summary, "rollback_to": rollback_image, "from_image": row.target_image},
            )
            session.commit()
        if moved:
            log.warning("health gate failed: rolling back", extra={"code": HEALTH_CHECK_FAILED})
        return "rollback_started"
    message = why
    if decision is Unhealthy.NOWHERE_TO_GO:
        message += "; not rolled back: no previous image is recorded"
    return _end(
        rt,
        row,
        ServerState.FAILED,
        HEALTH_CHECK_FAILED,
        {"health": health, "error_code": HEALTH_CHECK_FAILED, "error_message": message},
        summary,
    )


def rollback_image_of(row: BatchServer) -> str | None:
    """Where a rollback takes the server: its backup image when one was made and still exists
    (it restores the data too), else the image it ran before the change."""
    backup = row.backup or {}
    if backup.get("image_id") and backup.get("status") == "active":
        return str(backup["image_id"])
    return row.previous_image


def _end(
    rt: Runtime,
    row: BatchServer,
    to: ServerState,
    reason: str,
    values: ServerColumns,
    details: dict[str, Any],
) -> str:
    now = rt.clock()
    with rt.sessions() as session:
        moved = record_server_transition(
            session,
            row.id,
            expected=ServerState.VERIFYING,
            to=to,
            reason=reason,
            now=now,
            values={**values, "next_poll_at": None},
            details=details,
        )
        session.commit()
    if moved:
        log.info("health gate ended", extra={"state": to.value, "reason": reason})
    return reason
