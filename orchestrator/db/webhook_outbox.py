"""The webhook outbox: delivery rows written in the transaction of the change they report.

Nothing is sent here. A row per target URL (the batch's notify_url and the configured global
URL, each once) lands or vanishes with the state change itself, so an event is never lost to
a crash between "changed" and "told", and a slow receiver never holds up the change.
Payloads carry ids, states and counts only: never os_change, adminpass, user_data or tokens.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.db.models import Batch, BatchWaveCount, WebhookDelivery
from orchestrator.domain.states import BatchState, DeliveryState, ServerState

# Where a process's session factory carries ORCH_NOTIFY_URL, so the one transition function
# can address it without settings being threaded through every caller.
GLOBAL_URL_INFO = "reimage.webhooks.notify_url"

BATCH_STATE_CHANGED = "batch.state_changed"
WAVE_FINISHED = "wave.finished"


def configure_global_url(sessions: sessionmaker[Session], url: str | None) -> None:
    """Make every session of `sessions` also notify `url` (ORCH_NOTIFY_URL) of each event."""
    info = dict(sessions.kw.get("info") or {})
    info[GLOBAL_URL_INFO] = url
    sessions.configure(info=info)


def enqueue_batch_event(
    session: Session,
    batch_id: str,
    *,
    previous: BatchState | None,
    state: BatchState,
    reason: str,
    now: datetime,
) -> int:
    """Queue `batch.state_changed` for each target URL; answers how many rows were written."""
    batch = _batch_row(session, batch_id)
    counts = {s.value: int(getattr(batch, f"n_{s.value}")) for s in ServerState}
    payload = _payload(
        BATCH_STATE_CHANGED,
        batch,
        state=state.value,
        previous_state=previous.value if previous else None,
        wave=batch.current_wave,
        counts=counts,
        total=batch.total,
        reason=reason,
        now=now,
    )
    return _insert(session, batch, payload, now)


def enqueue_wave_finished(session: Session, batch_id: str, *, wave: int, now: datetime) -> int:
    """Queue `wave.finished` with that wave's own counts and size for each target URL."""
    batch = _batch_row(session, batch_id)
    rows = session.execute(
        select(BatchWaveCount.state, BatchWaveCount.n).where(
            BatchWaveCount.batch_id == batch_id, BatchWaveCount.wave == wave
        )
    ).all()
    counts = {s.value: 0 for s in ServerState}
    for name, n in rows:
        counts[name] = int(n)
    payload = _payload(
        WAVE_FINISHED,
        batch,
        state=batch.state,
        previous_state=None,
        wave=wave,
        counts=counts,
        total=sum(counts.values()),
        reason="wave_ended",
        now=now,
    )
    return _insert(session, batch, payload, now)


def _batch_row(session: Session, batch_id: str) -> Any:
    # Columns, not the entity: the caller's session may hold a stale Batch it has not refreshed.
    return session.execute(
        select(
            Batch.id,
            Batch.project_id,
            Batch.region,
            Batch.state,
            Batch.notify_url,
            Batch.current_wave,
            Batch.total,
            *(getattr(Batch, f"n_{s.value}") for s in ServerState),
        ).where(Batch.id == batch_id)
    ).one()


def _payload(
    event: str,
    batch: Any,
    *,
    state: str,
    previous_state: str | None,
    wave: int,
    counts: dict[str, int],
    total: int,
    reason: str,
    now: datetime,
) -> dict[str, Any]:
    # delivery_id is added when sent: it is the row's own id, unknown before the insert.
    return {
        "event": event,
        "batch_id": batch.id,
        "project_id": batch.project_id,
        "region": batch.region,
        "state": state,
        "previous_state": previous_state,
        "wave": wave,
        "counts": counts,
        "total": total,
        "at": now.isoformat().replace("+00:00", "Z"),
        "reason": reason,
    }


def targets(session: Session, batch_url: str | None) -> list[str]:
    """The batch's own URL and the global one, each once, in that order."""
    found: list[str] = []
    for url in (batch_url, session.info.get(GLOBAL_URL_INFO)):
        if isinstance(url, str) and url and url not in found:
            found.append(url)
    return found


def _insert(session: Session, batch: Any, payload: dict[str, Any], now: datetime) -> int:
    urls = targets(session, batch.notify_url)
    if urls:
        session.execute(
            insert(WebhookDelivery),
            [
                {
                    "batch_id": batch.id,
                    "url": url,
                    "event": payload["event"],
                    "payload": payload,
                    "state": DeliveryState.PENDING.value,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                }
                for url in urls
            ],
        )
    return len(urls)


def claim_delivery(
    session: Session, delivery_id: int, *, attempts: int, now: datetime, lease_s: float
) -> tuple[str, str, dict[str, Any]] | None:
    """Take a due pending delivery for one more attempt (a compare-and-set on its attempt count,
    leased for `lease_s`); answers its url, event and payload, or None when someone else did."""
    claimed = session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.state == DeliveryState.PENDING.value,
            WebhookDelivery.attempts == attempts,
            WebhookDelivery.next_attempt_at <= now,
        )
        .values(attempts=attempts + 1, next_attempt_at=now + timedelta(seconds=lease_s))
        .returning(WebhookDelivery.url, WebhookDelivery.event, WebhookDelivery.payload)
        .execution_options(synchronize_session=False)
    ).one_or_none()
    if claimed is None:
        return None
    url, event, payload = claimed
    return str(url), str(event), dict(payload)
