"""Webhook delivery: claim due outbox rows, send them signed, record every attempt, retry with
backoff or give up; and the deliveries of a batch as users see them.

Signing key: ORCH_WEBHOOK_SECRET (its UTF-8 bytes). Without it, the key is derived from
ORCH_SECRET_KEY: the hex text of HKDF-SHA256(ORCH_SECRET_KEY, salt "reimage-webhooks-v1",
info "webhook-signing", 32 bytes), used as its UTF-8 bytes; `derived_webhook_secret` computes
it to hand to receivers. With neither set, deliveries go unsigned (one warning per process).

Order: deliveries of one batch to one URL go one at a time, oldest first; a later one waits
while an earlier one is pending (retrying), so a receiver sees a batch's events in order.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import exists, func, insert, select
from sqlalchemy.orm import Session, aliased, sessionmaker

from orchestrator.config import Settings
from orchestrator.db.models import Batch, WebhookAttempt, WebhookDelivery
from orchestrator.db.transitions import DeliveryColumns, record_delivery_transition
from orchestrator.db.webhook_outbox import claim_delivery
from orchestrator.domain.states import DeliveryState
from orchestrator.domain.webhooks import (
    BACKOFF_CAP_S,
    Verdict,
    canonical_body,
    full_jitter,
    host_allowed,
    retry_delay_s,
    signature,
    url_problem,
    verdict_for,
)
from orchestrator.errors import NotFound
from orchestrator.runtime import Runtime
from orchestrator.services.views import iso
from orchestrator.services.webhook_http import PostOutcome, post

log = logging.getLogger("reimage.webhooks")

USER_AGENT = "reimage-webhooks/1"
CONNECT_TIMEOUT_S = 3.0
TOTAL_TIMEOUT_S = 10.0
# A claimed row is due again after this long if its sender vanished mid-attempt.
CLAIM_LEASE_S = 60.0
# Sends in parallel, so one slow receiver does not hold up the others.
SEND_THREADS = 4
CANDIDATES = 16

PENDING = DeliveryState.PENDING.value

_warned_unsigned = False


def derived_webhook_secret(secret_key: str) -> str:
    """The signing secret used when ORCH_WEBHOOK_SECRET is unset (see the module docstring)."""
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"reimage-webhooks-v1", info=b"webhook-signing"
    ).derive(secret_key.encode())
    return derived.hex()


def signing_key(settings: Settings) -> bytes | None:
    if settings.webhook_secret is not None:
        return settings.webhook_secret.get_secret_value().encode()
    if settings.secret_key is not None:
        return derived_webhook_secret(settings.secret_key.get_secret_value()).encode()
    return None


@dataclass(frozen=True)
class Claimed:
    id: int
    attempt: int
    url: str
    event: str
    payload: dict[str, Any]


@dataclass
class DeliveryReport:
    delivered: int = 0
    retrying: int = 0
    failed: int = 0

    @property
    def sent(self) -> int:
        return self.delivered + self.retrying + self.failed


def deliver_due(
    rt: Runtime,
    *,
    now: datetime,
    limit: int = 100,
    jitter: Callable[[float], float] = full_jitter,
    threads: int = SEND_THREADS,
) -> DeliveryReport:
    """Send up to `limit` deliveries due at `now`, each claimed by compare-and-set first so two
    workers never send the same attempt; answers what became of them."""
    key = signing_key(rt.settings)
    _warn_unsigned_once(key)
    report = DeliveryReport()
    budget = _Budget(limit)
    lock = threading.Lock()

    def work() -> None:
        while budget.take():
            with rt.sessions() as session:
                claimed = _claim_one(session, now, rt.settings.webhook_max_attempts)
            if claimed is None:
                return
            verdict, final = _attempt(rt, claimed, key, now, jitter)
            with lock:
                if verdict is Verdict.DELIVERED:
                    report.delivered += 1
                elif final:
                    report.failed += 1
                else:
                    report.retrying += 1

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="reimage-webhook") as pool:
        for future in [pool.submit(work) for _ in range(threads)]:
            future.result()
    return report


class _Budget:
    def __init__(self, n: int) -> None:
        self._left = n
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            self._left -= 1
            return self._left >= 0


def _warn_unsigned_once(key: bytes | None) -> None:
    global _warned_unsigned
    if key is None and not _warned_unsigned:
        _warned_unsigned = True
        log.warning(
            "webhooks are sent unsigned: set ORCH_WEBHOOK_SECRET (or ORCH_SECRET_KEY) to sign them"
        )


def _claim_one(session: Session, now: datetime, max_attempts: int) -> Claimed | None:
    row = WebhookDelivery
    earlier = aliased(WebhookDelivery)
    # The oldest pending delivery of each (batch, url) only: the others wait their turn.
    first_in_line = ~exists().where(
        earlier.batch_id == row.batch_id,
        earlier.url == row.url,
        earlier.state == PENDING,
        earlier.id < row.id,
    )
    candidates = session.execute(
        select(row.id, row.attempts)
        .where(row.state == PENDING, row.next_attempt_at <= now, first_in_line)
        .order_by(row.next_attempt_at, row.id)
        .limit(CANDIDATES)
    ).all()
    for delivery_id, attempts in candidates:
        if attempts >= max_attempts:
            # Its last attempt was claimed by a sender that vanished before recording it.
            record_delivery_transition(
                session,
                delivery_id,
                to=DeliveryState.FAILED,
                attempts=attempts,
                values={"last_error": "no outcome recorded for the last attempt"},
            )
            session.commit()
            continue
        claimed = claim_delivery(
            session, delivery_id, attempts=attempts, now=now, lease_s=CLAIM_LEASE_S
        )
        session.commit()
        if claimed is not None:
            url, event, payload = claimed
            return Claimed(delivery_id, attempts + 1, url, event, payload)
    return None


def _attempt(
    rt: Runtime,
    claimed: Claimed,
    key: bytes | None,
    now: datetime,
    jitter: Callable[[float], float],
) -> tuple[Verdict, bool]:
    """Send one claimed attempt and record it; answers the verdict and whether it was final."""
    problem = url_problem(claimed.url)
    if problem is None and not host_allowed(claimed.url, rt.settings.notify_allowed_hosts):
        problem = "host not allowed"
    if problem is not None:
        outcome = PostOutcome(None, problem, 0)
        verdict = Verdict.REJECTED
    else:
        outcome = _send(claimed, key, now)
        verdict = verdict_for(outcome.status)
        if outcome.status is not None and verdict is Verdict.REJECTED:
            outcome = PostOutcome(outcome.status, f"HTTP {outcome.status}", outcome.duration_ms)
    final = verdict is not Verdict.RETRY or claimed.attempt >= rt.settings.webhook_max_attempts
    _record(rt.sessions, claimed, outcome, verdict, final, now, jitter)
    return verdict, final


def _send(claimed: Claimed, key: bytes | None, now: datetime) -> PostOutcome:
    body = canonical_body({**claimed.payload, "delivery_id": claimed.id})
    timestamp = int(now.timestamp())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Reimage-Event": claimed.event,
        "X-Reimage-Delivery": str(claimed.id),
        "X-Reimage-Timestamp": str(timestamp),
    }
    if key is not None:
        headers["X-Reimage-Signature"] = signature(key, timestamp, body)
    return post(
        claimed.url,
        body,
        headers,
        connect_timeout_s=CONNECT_TIMEOUT_S,
        total_timeout_s=TOTAL_TIMEOUT_S,
    )


def _record(
    sessions: sessionmaker[Session],
    claimed: Claimed,
    outcome: PostOutcome,
    verdict: Verdict,
    final: bool,
    now: datetime,
    jitter: Callable[[float], float],
) -> None:
    changes: DeliveryColumns = {"last_status": outcome.status, "last_error": outcome.error}
    to = DeliveryState.PENDING
    if verdict is Verdict.DELIVERED:
        to, changes["delivered_at"] = DeliveryState.DELIVERED, now
    elif final:
        to = DeliveryState.FAILED
    else:
        wait = retry_delay_s(claimed.attempt, jitter)
        if outcome.retry_after_s is not None:
            # The receiver said when to come back (429/503): not sooner, and never past the cap.
            wait = min(BACKOFF_CAP_S, max(wait, outcome.retry_after_s))
        changes["next_attempt_at"] = now + timedelta(seconds=wait)
    with sessions() as session:
        # Only the claimer of this attempt may settle it (the attempt count is the guard).
        record_delivery_transition(
            session, claimed.id, to=to, attempts=claimed.attempt, values=changes
        )
        session.execute(
            insert(WebhookAttempt).values(
                delivery_id=claimed.id,
                attempt=claimed.attempt,
                at=now,
                status_code=outcome.status,
                error=outcome.error,
                duration_ms=outcome.duration_ms,
            )
        )
        session.commit()
    log.info(
        "webhook delivery=%s attempt=%s event=%s status=%s error=%s verdict=%s",
        claimed.id,
        claimed.attempt,
        claimed.event,
        outcome.status,
        outcome.error,
        verdict.value if final or verdict is Verdict.DELIVERED else "retry",
    )


def delivery_counts(session: Session, batch_id: str) -> dict[str, int]:
    """How many of a batch's deliveries are pending, delivered and failed (gave up)."""
    counts = dict.fromkeys((s.value for s in DeliveryState), 0)
    for state, n in session.execute(
        select(WebhookDelivery.state, func.count())
        .where(WebhookDelivery.batch_id == batch_id)
        .group_by(WebhookDelivery.state)
    ):
        counts[state] = int(n)
    return counts


def list_deliveries(
    sessions: sessionmaker[Session], batch_id: str, *, limit: int
) -> dict[str, Any]:
    """A batch's deliveries, newest first, each with its attempts (oldest first)."""
    with sessions() as session:
        if session.scalar(select(Batch.id).where(Batch.id == batch_id)) is None:
            raise NotFound(f"batch {batch_id} does not exist")
        deliveries = list(
            session.scalars(
                select(WebhookDelivery)
                .where(WebhookDelivery.batch_id == batch_id)
                .order_by(WebhookDelivery.id.desc())
                .limit(limit)
            )
        )
        attempts: dict[int, list[dict[str, Any]]] = {d.id: [] for d in deliveries}
        if deliveries:
            for attempt in session.scalars(
                select(WebhookAttempt)
                .where(WebhookAttempt.delivery_id.in_(list(attempts)))
                .order_by(WebhookAttempt.id)
            ):
                attempts[attempt.delivery_id].append(_attempt_view(attempt))
        return {
            "items": [_delivery_view(d, attempts[d.id]) for d in deliveries],
            "counts": delivery_counts(session, batch_id),
        }


def _delivery_view(row: WebhookDelivery, attempts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": row.id,
        "batch_id": row.batch_id,
        "url": row.url,
        "event": row.event,
        "state": row.state,
        "attempt_count": row.attempts,
        "next_attempt_at": iso(row.next_attempt_at) if row.state == PENDING else None,
        "last_status": row.last_status,
        "last_error": row.last_error,
        "created_at": iso(row.created_at),
        "delivered_at": iso(row.delivered_at),
        "payload": {**row.payload, "delivery_id": row.id},
        "attempts": attempts,
    }


def _attempt_view(row: WebhookAttempt) -> dict[str, Any]:
    return {
        "attempt": row.attempt,
        "at": iso(row.at),
        "status_code": row.status_code,
        "error": row.error,
        "duration_ms": row.duration_ms,
    }
