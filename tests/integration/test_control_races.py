"""An operator's pause or cancel that races the tick (SQLite and PostgreSQL): the tick moves the
batch between the request's read and its compare-and-set, and the request is still carried out,
never answered 200 and dropped (a cancel sent right after the POST met the tick the API had just
kicked and was lost, test_rollout saw it)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

import orchestrator.services.control as control
from orchestrator.db.models import Batch
from orchestrator.db.transitions import record_batch_transition
from orchestrator.domain.states import BatchState
from orchestrator.errors import Conflict
from orchestrator.services.batches import create_batch
from tests.support.service_world import Spec, as_new_batch

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = create_engine(database_url)
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


def pending_batch(sessions: sessionmaker[Session]) -> str:
    created = create_batch(
        sessions,
        as_new_batch(Spec(("7c2f7a52-7a4b-4e3b-9d53-5b6a1c2b0a11",))),
        now=NOW,
        secret_key=None,
    )
    return str(created.batch["id"])


def start(sessions: sessionmaker[Session], batch_id: str) -> None:
    """What the tick does to a pending batch."""
    with sessions() as session:
        assert record_batch_transition(
            session,
            batch_id,
            expected=BatchState.PENDING,
            to=BatchState.RUNNING,
            reason="started",
            actor="scheduler",
            now=NOW,
        )
        session.commit()


def tick_moves_it_first(
    monkeypatch: pytest.MonkeyPatch, sessions: sessionmaker[Session], batch_id: str, times: int
) -> None:
    """The next `times` writes of the request find the batch moved by a tick just before."""
    real = control.record_batch_transition
    left = [times]

    def racing(session: Session, *args: Any, **kwargs: Any) -> bool:
        if left[0] > 0:
            left[0] -= 1
            with sessions() as other:
                state = BatchState(other.get_one(Batch, batch_id).state)
            nxt = BatchState.RUNNING if state is BatchState.PENDING else BatchState.PAUSED
            with sessions() as other:
                record_batch_transition(
                    other,
                    batch_id,
                    expected=state,
                    to=nxt,
                    reason="started",
                    actor="scheduler",
                    now=NOW,
                )
                other.commit()
        return real(session, *args, **kwargs)

    monkeypatch.setattr(control, "record_batch_transition", racing)


def test_a_cancel_that_meets_the_tick_is_carried_out(
    monkeypatch: pytest.MonkeyPatch, sessions: sessionmaker[Session]
) -> None:
    batch_id = pending_batch(sessions)
    tick_moves_it_first(monkeypatch, sessions, batch_id, times=1)
    view = control.cancel_batch(sessions, batch_id, actor="ops", now=NOW)
    assert view["state"] == "running" and view["cancel_requested"] is True


def test_a_pause_that_meets_the_tick_is_carried_out(
    monkeypatch: pytest.MonkeyPatch, sessions: sessionmaker[Session]
) -> None:
    batch_id = pending_batch(sessions)
    tick_moves_it_first(monkeypatch, sessions, batch_id, times=1)
    view = control.pause_batch(sessions, batch_id, actor="ops", reason="dashboards", now=NOW)
    assert view["state"] == "paused" and view["pause_reason"] == "dashboards"


def test_a_batch_that_never_holds_still_is_a_conflict_not_a_silent_200(
    monkeypatch: pytest.MonkeyPatch, sessions: sessionmaker[Session]
) -> None:
    batch_id = pending_batch(sessions)
    start(sessions, batch_id)
    real = control.record_batch_transition
    monkeypatch.setattr(control, "record_batch_transition", lambda *a, **k: False)
    with pytest.raises(Conflict, match="try again"):
        control.cancel_batch(sessions, batch_id, actor="ops", now=NOW)
    monkeypatch.setattr(control, "record_batch_transition", real)
    with sessions() as session:
        assert session.get_one(Batch, batch_id).cancel_requested is False
