"""A task's next look at its own servers, sent by the task itself for the time it is due.

When a submit, poll or probe task leaves a server waiting on `next_poll_at` (the first poll of
a job just accepted, the next poll of a job still running, the next probe of a server being
verified, the next look at a backup image) and that time is near, the task hands the work on
itself, as a message due then, instead of leaving it for a tick to find up to a tick later
(issue 17 part 3: a job's end is seen within a second of the poll that could see it).

Handing on is a lease like the tick's (DESIGN.md invariant 4): `next_poll_at` is pushed past the
due time by a lease, so no tick sends the same look meanwhile; if the message is lost (its
worker died holding it), the tick finds the row again once the lease is over. The tick stays
the safety net; a follow-up sent twice (a tick that leased the row between our read and our
write) is one more read of a job, which is harmless.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import literal, select
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.db.bookkeeping import lease_ended_jobs, lease_polls_until
from orchestrator.db.models import Batch, BatchServer, wave_unsettled
from orchestrator.domain.states import TERMINAL_BATCH_STATES, ServerState

# Only looks due this soon are handed on (at least; two ticks when ticks are slower): there the
# tick's lateness (up to a tick) is a large share of the wait. A longer wait is left to the
# tick, whose chunks of 50 cost less per server than many small messages (`reimage bench` with
# 2,000 servers took 103 s instead of 91, with 42% more CPU, when every look within 10 s was
# handed on and sweeps came every second whatever their size), and a message held for long by
# a worker is lost with it if it dies.
FOLLOW_UP_HORIZON_S = 2.0
# Looks due within this of each other go out as one message (one task polls them together).
FOLLOW_UP_BUCKET_S = 0.25
FOLLOW_UP_CHUNK = 50

_LOOKED_AT = {
    ServerState.RUNNING.value: "poll",
    ServerState.BACKING_UP.value: "poll",  # a backup's image is followed by the poll task
    ServerState.VERIFYING.value: "probe",
}

Kind = Literal["poll", "probe"]


@dataclass(frozen=True)
class FollowUp:
    """One message to send: `kind` of look at `ids`, due at `due`."""

    kind: Kind
    due: datetime
    ids: list[int]


def follow_up_horizon_s(tick_seconds: float) -> float:
    return max(FOLLOW_UP_HORIZON_S, 2 * tick_seconds)


def take_follow_ups(
    sessions: sessionmaker[Session],
    batch_server_ids: Sequence[int],
    *,
    now: datetime,
    lease_s: float,
    horizon_s: float = FOLLOW_UP_HORIZON_S,
) -> list[FollowUp]:
    """Lease the listed servers whose next look is due within `horizon_s` and answer the
    messages to send for them, earliest first."""
    if not batch_server_ids:
        return []
    soon = now + timedelta(seconds=horizon_s)
    with sessions() as session:
        due = session.execute(
            select(BatchServer.id, BatchServer.state, BatchServer.next_poll_at).where(
                BatchServer.id.in_(batch_server_ids),
                BatchServer.state.in_(list(_LOOKED_AT)),
                # Ended jobs whose server check waits for a sweep too: each look that finds
                # no sweep yet kicks the tick that asks for one (leaving them to the sweep
                # alone stalled them for good when the tick could not sweep yet and no beat
                # came: test_event_driven).
                BatchServer.next_poll_at <= soon,
            )
        ).all()
        if not due:
            return []
        # Past every due time read, by a lease: the tick leaves these rows alone until the
        # message we send would surely have been handled.
        taken = set(
            lease_polls_until(
                session,
                [row_id for row_id, _, _ in due],
                due_by=soon,
                until=soon + timedelta(seconds=lease_s),
            )
        )
        session.commit()
    return group_follow_ups(
        [(row_id, state, at) for row_id, state, at in due if row_id in taken and at is not None]
    )


def group_follow_ups(
    due: Sequence[tuple[int, str, datetime]],
    *,
    bucket_s: float = FOLLOW_UP_BUCKET_S,
    chunk: int = FOLLOW_UP_CHUNK,
) -> list[FollowUp]:
    """Rows (id, state, due) as messages: one per kind and bucket of due times (each sent
    for its bucket's latest time, so none is looked at early), at most `chunk` ids each."""
    groups: dict[tuple[Kind, int], list[tuple[int, datetime]]] = {}
    for row_id, state, at in sorted(due, key=lambda item: item[2]):
        kind: Kind = "probe" if _LOOKED_AT.get(state) == "probe" else "poll"
        bucket = int(at.timestamp() // bucket_s)
        groups.setdefault((kind, bucket), []).append((row_id, at))
    follow_ups: list[FollowUp] = []
    for (kind, _), rows in groups.items():
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            follow_ups.append(FollowUp(kind, max(at for _, at in part), [i for i, _ in part]))
    return sorted(follow_ups, key=lambda follow_up: follow_up.due)


def take_awaiting_sweep(
    sessions: sessionmaker[Session],
    project_id: str,
    region: str,
    *,
    now: datetime,
    lease_s: float,
    chunk: int = FOLLOW_UP_CHUNK,
    polled_since: datetime | None = None,
) -> list[list[int]]:
    """After a list sweep of (project, region): lease the running servers whose job has ended
    and whose server check waits for such a sweep, and answer them in chunks to poll now,
    not when their next look was due (up to SWEEP_RETRY_S later)."""
    with sessions() as session:
        ids = lease_ended_jobs(
            session,
            project_id,
            region,
            until=now + timedelta(seconds=lease_s),
            polled_since=polled_since,
        )
        session.commit()
    ids.sort()
    return [ids[start : start + chunk] for start in range(0, len(ids), chunk)]


def ended_a_wave(sessions: sessionmaker[Session], batch_server_ids: Sequence[int]) -> bool:
    """Whether the batch of one of these servers (which just ended) has nothing active left in
    its current wave: its next wave's gate or its own end is then the tick's work, at once
    (read from the counts kept with every transition, not from the wave's rows)."""
    if not batch_server_ids:
        return False
    with sessions() as session:
        found = session.execute(
            select(literal(1))
            .where(
                Batch.id.in_(
                    select(BatchServer.batch_id).where(BatchServer.id.in_(batch_server_ids))
                ),
                Batch.state.not_in([state.value for state in TERMINAL_BATCH_STATES]),
                ~wave_unsettled(Batch.id, Batch.current_wave),
            )
            .limit(1)
        ).first()
    return found is not None
