"""The scheduler tick: find due work in the database and hand its ids to the workers.

The database is the only record of work. A tick claims free in-flight slots (pending ->
submitting), re-sends work whose message was lost (a lease on `dispatched_at` / `next_poll_at`),
and ends batches with nothing left to do. Every claim is a compare-and-set, so two ticks
running at once (a standby beat, a slow tick) do no harm: one of them simply finds less to do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.cloud.facts import SWEEP_INTERVAL_S, FactsCache
from orchestrator.db.bookkeeping import (
    erase_sealed_secrets,
    learn_job_seconds,
    lease_expired,
    lease_polls,
    lease_submits,
)
from orchestrator.db.models import Batch, BatchServer, wave_unsettled
from orchestrator.db.transitions import (
    BatchColumns,
    record_batch_transition,
    record_server_transitions,
)
from orchestrator.db.webhook_outbox import enqueue_wave_finished
from orchestrator.domain.approvals import BEFORE_START, ApprovalPolicy
from orchestrator.domain.rollout import WaveStatus, budget_spent, may_open_next_wave, pauses_after
from orchestrator.domain.spread import Candidate, SpreadRule, pick
from orchestrator.domain.states import (
    IN_FLIGHT_SERVER_STATES,
    BatchState,
    ServerState,
)
from orchestrator.domain.timing import expected_job_seconds
from orchestrator.domain.windows import window_state
from orchestrator.services.approvals import AWAITING_APPROVAL, awaiting_reason
from orchestrator.services.views import budget_view

POLL_CHUNK = 50
# Servers whose submissions one task handles concurrently (each still its own CAS and call).
SUBMIT_CHUNK = 25
# Claims wait for a list sweep no older than this (skip matching trusts facts up to 30 s old).
SWEEP_FRESH_FOR_CLAIMS_S = 15.0
# How long claims wait for a requested sweep before going ahead without it.
SWEEP_PATIENCE_S = 10.0
LEARNING_WINDOW = 200
CLAIM_CHUNK = 500
# With failure domains, the pending servers a claim looks through for ones whose domains have
# room (in submission order): enough for many domains, bounded for a 100,000-server batch.
DOMAIN_CLAIM_SCAN = 5000


class Dispatcher(Protocol):
    """Where ids of due work go (Celery in production, a list in tests)."""

    def submit(self, batch_server_ids: list[int]) -> None: ...

    def poll(self, batch_server_ids: list[int]) -> None: ...

    def probe(self, batch_server_ids: list[int]) -> None: ...

    def sweep(self, project_id: str, region: str) -> None: ...


@dataclass
class TickReport:
    claimed: int = 0
    submits_sent: int = 0
    polls_sent: int = 0
    probes_sent: int = 0
    sweeps_sent: int = 0
    cancelled: int = 0
    batches_finished: list[str] = field(default_factory=list)


def run_tick(
    sessions: sessionmaker[Session],
    dispatcher: Dispatcher,
    *,
    now: datetime,
    lease_s: float,
    call_timeout_s: float,
    facts: FactsCache | None = None,
) -> TickReport:
    report = TickReport()
    with sessions() as session:
        batch_ids = list(
            session.scalars(
                select(Batch.id).where(
                    Batch.state.in_(
                        [
                            BatchState.PENDING.value,
                            BatchState.RUNNING.value,
                            BatchState.PAUSED.value,
                        ]
                    )
                )
            )
        )
    sweeps = SweepPlanner(facts, dispatcher, report, now=now)
    for batch_id in batch_ids:
        _advance_batch(sessions, batch_id, report, now=now, sweeps=sweeps)
    sweeps.for_running_jobs()
    _send_due_submits(
        sessions, dispatcher, report, now=now, lease_s=lease_s, call_timeout_s=call_timeout_s
    )
    _send_due_polls(sessions, dispatcher, report, now=now, lease_s=lease_s)
    return report


class SweepPlanner:
    """Asks for list sweeps where they are cheaper than one server-details call per server:
    before a large batch claims slots (skip matching), and for finished jobs' server checks."""

    def __init__(
        self,
        facts: FactsCache | None,
        dispatcher: Dispatcher,
        report: TickReport,
        *,
        now: datetime,
    ) -> None:
        self._now = now.timestamp()
        self._facts = facts
        self._dispatcher = dispatcher
        self._report = report
        self._running: dict[tuple[str, str], int] = {}

    def _ask(
        self,
        project_id: str,
        region: str,
        needing: int,
        min_interval_s: float,
        interval_per_page: bool = False,
    ) -> bool:
        assert self._facts is not None
        if self._facts.worth_sweeping(
            project_id,
            region,
            servers_needing_facts=needing,
            min_interval_s=min_interval_s,
            interval_per_page=interval_per_page,
        ):
            self._facts.requested(project_id, region)
            self._dispatcher.sweep(project_id, region)
            self._report.sweeps_sent += 1
            return True
        return False

    def ready_to_claim(self, batch: Batch) -> bool:
        """False while a sweep that the next claims should use is on its way."""
        key = (batch.project_id, batch.region)
        self._running[key] = self._running.get(key, 0) + batch.n_running
        if self._facts is None or not batch.rollout_policy.skip_matching:
            return True
        swept_at = self._facts.swept_at(*key)
        if swept_at is not None and swept_at >= self._now - SWEEP_FRESH_FOR_CLAIMS_S:
            return True
        if self._facts.sweep_pending(*key, patience_s=SWEEP_PATIENCE_S):
            return False  # claims made now would each need a server-details call
        needing = batch.n_pending + batch.n_running
        return not self._ask(*key, needing=needing, min_interval_s=1.0)

    def for_running_jobs(self) -> None:
        if self._facts is None:
            return
        for key, running in self._running.items():
            if running:
                self._ask(
                    *key, needing=running, min_interval_s=SWEEP_INTERVAL_S, interval_per_page=True
                )


def _advance_batch(
    sessions: sessionmaker[Session],
    batch_id: str,
    report: TickReport,
    *,
    now: datetime,
    sweeps: SweepPlanner,
) -> None:
    with sessions() as session:
        batch = session.get_one(Batch, batch_id)
        state = BatchState(batch.state)
        if state is BatchState.PENDING:
            needed = _approvals_needed(batch, BEFORE_START)
            if needed:
                _await_approval(session, batch, BEFORE_START, needed, now=now)
                return
            record_batch_transition(
                session,
                batch_id,
                expected=state,
                to=BatchState.RUNNING,
                reason="started",
                actor="scheduler",
                now=now,
            )
            state = BatchState.RUNNING
            session.commit()
        _check_error_budget(session, batch, state, now=now)
        _learn_job_duration(session, batch)
        if batch.cancel_requested or batch.abort_reason:
            why = "error_budget" if batch.abort_reason else "cancelled"
            report.cancelled += _cancel_pending(session, batch_id, reason=why, now=now)
        elif (
            state is BatchState.RUNNING
            and _inside_window(session, batch, now=now)
            and _wave_open(session, batch, now=now)
            and sweeps.ready_to_claim(batch)
        ):
            report.claimed += _claim_slots(session, batch, now=now)
        session.refresh(batch)
        _finish_if_done(session, batch, report, now=now)


def _inside_window(session: Session, batch: Batch, *, now: datetime) -> bool:
    """New changeos only inside a maintenance window (servers in flight are followed to their
    end outside one). Outside, the batch shows the next opening, and a wave a closing window
    cut short goes on at that opening. Entering and leaving a wait are batch events."""
    windows = batch.rollout_policy.window_list
    if not windows:
        return True
    state = window_state(windows, now)
    opens_at = None if state.open else state.next_open
    if not state.open and opens_at is None:
        # The last window has closed for good (absolute ranges all past): a person decides.
        why = "no maintenance window opens again: cancel it, or retry its servers with new windows"
        record_batch_transition(
            session,
            batch.id,
            expected=BatchState.RUNNING,
            to=BatchState.PAUSED,
            reason="windows_over",
            actor="scheduler",
            now=now,
            values={"pause_reason": why, "paused_by": "policy", "window_opens_at": None},
        )
        session.commit()
        return False
    if opens_at != batch.window_opens_at and (state.open or opens_at is not None):
        record_batch_transition(
            session,
            batch.id,
            expected=BatchState(batch.state),
            to=BatchState(batch.state),
            reason="window_opened" if state.open else "waiting_for_window",
            actor="scheduler",
            now=now,
            values={"window_opens_at": opens_at},
            details={
                "next_open": opens_at.isoformat() if opens_at else None,
                "closes_at": state.closes_at.isoformat() if state.closes_at else None,
            },
        )
        session.commit()
        session.refresh(batch)
    return state.open


def _learn_job_duration(session: Session, batch: Batch) -> None:
    """The batch's own recent jobs say when to ask about the next ones."""
    durations = list(
        session.scalars(
            select(BatchServer.job_seconds)
            .where(
                BatchServer.batch_id == batch.id,
                BatchServer.state.in_([ServerState.SUCCEEDED.value, ServerState.FAILED.value]),
                BatchServer.job_seconds.is_not(None),
            )
            .order_by(BatchServer.id.desc())
            .limit(LEARNING_WINDOW)
        )
    )
    expected = expected_job_seconds([float(d) for d in durations if d is not None])
    if expected is not None and expected != batch.expected_job_s:
        learn_job_seconds(session, batch.id, expected)
        session.commit()
        session.refresh(batch)


def _check_error_budget(
    session: Session, batch: Batch, state: BatchState, *, now: datetime
) -> None:
    """SSM MaxErrors: once spent, nothing new is submitted and the batch will end aborted."""
    if batch.abort_reason or batch.cancel_requested:
        return
    if not budget_spent(batch.budget_used, batch.rollout_policy.max_failures, batch.total):
        return
    record_batch_transition(
        session,
        batch.id,
        expected=state,
        to=state,
        reason="error_budget_spent",
        actor="scheduler",
        now=now,
        values={"abort_reason": "error_budget"},
        where=[Batch.abort_reason.is_(None)],
        details={
            "failed": batch.n_failed,
            "rolling_back": batch.n_rolling_back,
            "budget": budget_view(batch),
        },
    )
    session.commit()
    session.refresh(batch)


def _wave_open(session: Session, batch: Batch, *, now: datetime) -> bool:
    """Whether servers of `batch.current_wave` may be claimed; moves to the next wave when the
    current one has ended, after its bake time or through a manual gate (a pause)."""
    # Read from the counts kept with every transition: counting the wave's rows cost a scan of
    # the wave (58 ms a tick for a 90,000-server wave), growing with the batch.
    unsettled = session.scalar(select(wave_unsettled(batch.id, batch.current_wave)))
    if unsettled or batch.current_wave >= batch.waves_total:
        return True
    policy = batch.rollout_policy
    if batch.wave_ended_at is None:
        ended = record_batch_transition(
            session,
            batch.id,
            expected=BatchState.RUNNING,
            to=BatchState.RUNNING,
            reason="wave_ended",
            actor="scheduler",
            now=now,
            values={"wave_ended_at": now},
            where=[Batch.current_wave == batch.current_wave, Batch.wave_ended_at.is_(None)],
            details={"wave": batch.current_wave},
        )
        if ended:
            enqueue_wave_finished(session, batch.id, wave=batch.current_wave, now=now)
        session.commit()
        session.refresh(batch)
        if batch.wave_ended_at is None:
            return False  # the batch moved meanwhile (paused, or another tick): next tick
    following: BatchColumns = {"current_wave": batch.current_wave + 1, "wave_ended_at": None}
    needed = _approvals_needed(batch, batch.current_wave)
    if needed:
        _await_approval(session, batch, batch.current_wave, needed, now=now, values=following)
        return False
    if pauses_after(batch.current_wave, policy.pause_after_waves, batch.waves_total):
        why = f"manual gate after wave {batch.current_wave}: resume to start the next"
        record_batch_transition(
            session,
            batch.id,
            expected=BatchState.RUNNING,
            to=BatchState.PAUSED,
            reason="wave_gate",
            actor="scheduler",
            now=now,
            values={**following, "pause_reason": why, "paused_by": "policy"},
            details={"wave": batch.current_wave},
        )
        session.commit()
        return False
    status = WaveStatus(batch.current_wave, 0, batch.wave_ended_at)
    if not may_open_next_wave(status, policy.wave_delay_s, now):
        return False
    record_batch_transition(
        session,
        batch.id,
        expected=BatchState.RUNNING,
        to=BatchState.RUNNING,
        reason="wave_started",
        actor="scheduler",
        now=now,
        values=following,
        where=[Batch.current_wave == batch.current_wave],
        details={"wave": batch.current_wave + 1},
    )
    session.commit()
    session.refresh(batch)
    return True


def _approvals_needed(batch: Batch, gate: int) -> int:
    policy = ApprovalPolicy.from_json(batch.policy.get("approvals"))
    if policy is None or (gate != BEFORE_START and gate >= batch.waves_total):
        return 0  # nothing follows the last wave: no gate after it
    return policy.needed(gate)


def _await_approval(
    session: Session,
    batch: Batch,
    gate: int,
    needed: int,
    *,
    now: datetime,
    values: BatchColumns | None = None,
) -> None:
    """Stop at an approval gate: paused, until enough distinct people other than the
    submitter approve (POST .../approve), or one refuses (the batch is cancelled)."""
    record_batch_transition(
        session,
        batch.id,
        expected=BatchState(batch.state),
        to=BatchState.PAUSED,
        reason=AWAITING_APPROVAL,
        actor="scheduler",
        now=now,
        values={
            **(values or {}),
            "pause_reason": awaiting_reason(gate, 0, needed),
            "paused_by": "policy",
            "approval_gate": gate,
        },
        details={"gate": gate, "needed": needed},
    )
    session.commit()


def _claim_slots(session: Session, batch: Batch, *, now: datetime) -> int:
    policy = batch.rollout_policy
    limit = policy.in_flight_limit(batch.total)
    free = limit - batch.in_flight
    if free <= 0 or batch.n_pending == 0:
        return 0
    pending = (
        select(BatchServer.id, BatchServer.domains)
        .where(
            BatchServer.batch_id == batch.id,
            BatchServer.state == ServerState.PENDING.value,
            BatchServer.wave == batch.current_wave,
        )
        .order_by(BatchServer.position)
    )
    rules = policy.spread_rules
    if not rules:
        ids = [row_id for row_id, _ in session.execute(pending.limit(min(free, CLAIM_CHUNK)))]
    else:
        ids = _claims_within_domains(session, batch, pending, rules, min(free, CLAIM_CHUNK))
    claimed = record_server_transitions(
        session,
        ids,
        expected=ServerState.PENDING,
        to=ServerState.SUBMITTING,
        reason="slot_claimed",
        now=now,
        values={"dispatched_at": None, "next_attempt_at": now},
        details={"wave": batch.current_wave},
    )
    session.commit()
    return len(claimed)


def _claims_within_domains(
    session: Session,
    batch: Batch,
    pending: Select[tuple[int, dict[str, Any] | None]],
    rules: list[SpreadRule],
    free: int,
) -> list[int]:
    """The pending servers that fit every failure-domain limit, counting the batch's servers
    in flight (from their claim until they are terminal, health gate included). The batch row
    is locked first (PostgreSQL), so two ticks cannot both fill the same domain's last slot."""
    session.execute(select(Batch.id).where(Batch.id == batch.id).with_for_update())
    in_flight = session.scalars(
        select(BatchServer.domains).where(
            BatchServer.batch_id == batch.id,
            BatchServer.state.in_([s.value for s in IN_FLIGHT_SERVER_STATES]),
        )
    )
    candidates = [
        Candidate(row_id, domains or {})
        for row_id, domains in session.execute(pending.limit(DOMAIN_CLAIM_SCAN))
    ]
    sizes = (batch.domains or {}).get("sizes") or {}
    return pick(candidates, [d or {} for d in in_flight], rules, sizes, free)


def _cancel_pending(session: Session, batch_id: str, *, reason: str, now: datetime) -> int:
    ids = list(
        session.scalars(
            select(BatchServer.id).where(
                BatchServer.batch_id == batch_id, BatchServer.state == ServerState.PENDING.value
            )
        )
    )
    cancelled = 0
    for start in range(0, len(ids), CLAIM_CHUNK):
        cancelled += len(
            record_server_transitions(
                session,
                ids[start : start + CLAIM_CHUNK],
                expected=ServerState.PENDING,
                to=ServerState.CANCELLED,
                reason=reason,
                now=now,
            )
        )
        session.commit()
    return cancelled


def _finish_if_done(session: Session, batch: Batch, report: TickReport, *, now: datetime) -> None:
    state = BatchState(batch.state)
    if state.is_terminal:
        return
    # Every server's change was accepted or settled: nobody needs the secrets any more (with
    # rollbacks on, not before every health gate has passed: a rollback is a changeos too).
    unsent = batch.n_pending + batch.n_submitting + batch.n_backing_up
    if batch.rollout_policy.rolls_back:
        unsent += batch.n_running + batch.n_verifying
    if unsent == 0 and batch.sealed_secrets is not None:
        erase_sealed_secrets(session, batch.id)
        session.commit()
    if batch.n_pending + batch.in_flight > 0:
        return
    if batch.abort_reason:
        final = BatchState.ABORTED
    elif batch.cancel_requested:
        final = BatchState.CANCELLED
    elif batch.n_failed > 0:
        final = BatchState.PARTIALLY_FAILED
    else:
        final = BatchState.SUCCEEDED
    details: dict[str, Any] = {
        "counts": {s.value: int(getattr(batch, f"n_{s.value}")) for s in ServerState}
    }
    if batch.wave_ended_at is None:
        # The last wave (or the one a cancel cut short) ends with the batch; it is told first.
        enqueue_wave_finished(session, batch.id, wave=batch.current_wave, now=now)
    if record_batch_transition(
        session,
        batch.id,
        expected=state,
        to=final,
        reason=batch.abort_reason or "all_settled",
        actor="scheduler",
        now=now,
        details=details,
    ):
        report.batches_finished.append(batch.id)
        session.commit()
    else:
        session.rollback()  # someone else ended it, and told of its last wave


def _send_due_submits(
    sessions: sessionmaker[Session],
    dispatcher: Dispatcher,
    report: TickReport,
    *,
    now: datetime,
    lease_s: float,
    call_timeout_s: float,
) -> None:
    """Submitting rows with no task on them: due (re)tries, due reconciles, calls cut short."""
    stale_call = now - timedelta(seconds=call_timeout_s + lease_s)
    due = or_(
        # nothing sent yet, or a retry whose time has come
        (BatchServer.call_started_at.is_(None))
        & or_(BatchServer.next_attempt_at.is_(None), BatchServer.next_attempt_at <= now),
        # an unknown outcome whose grace period is over
        BatchServer.outcome_unknown.is_(True)
        & or_(BatchServer.next_attempt_at.is_(None), BatchServer.next_attempt_at <= now),
        # a call that started long ago and never reported back: the worker died mid-call
        BatchServer.call_started_at < stale_call,
    )
    with sessions() as session:
        ids = list(
            session.scalars(
                select(BatchServer.id)
                .where(
                    BatchServer.state == ServerState.SUBMITTING.value,
                    due,
                    lease_expired(BatchServer.dispatched_at, now, lease_s),
                )
                .order_by(BatchServer.id)
                .limit(5000)
            )
        )
        for start in range(0, len(ids), CLAIM_CHUNK):
            chunk = ids[start : start + CLAIM_CHUNK]
            taken_ids = lease_submits(session, chunk, now=now, lease_s=lease_s)
            session.commit()
            for first in range(0, len(taken_ids), SUBMIT_CHUNK):
                dispatcher.submit(taken_ids[first : first + SUBMIT_CHUNK])
            report.submits_sent += len(taken_ids)


def _send_due_polls(
    sessions: sessionmaker[Session],
    dispatcher: Dispatcher,
    report: TickReport,
    *,
    now: datetime,
    lease_s: float,
) -> None:
    """Running servers whose job is due a poll, backing-up ones whose image is, and verifying
    ones due a probe: all wait on `next_poll_at`, taken by pushing it one lease ahead."""
    with sessions() as session:
        due = session.execute(
            select(BatchServer.id, BatchServer.state)
            .where(
                BatchServer.state.in_(
                    [
                        ServerState.RUNNING.value,
                        ServerState.BACKING_UP.value,
                        ServerState.VERIFYING.value,
                    ]
                ),
                BatchServer.next_poll_at <= now,
            )
            .order_by(BatchServer.next_poll_at)
            .limit(5000)
        ).all()
        # A backup's image is followed by the poll task, like a job.
        polls = [row_id for row_id, state in due if state != ServerState.VERIFYING.value]
        probes = [row_id for row_id, state in due if state == ServerState.VERIFYING.value]
        report.polls_sent += _lease_and_send(session, polls, dispatcher.poll, now, lease_s)
        report.probes_sent += _lease_and_send(session, probes, dispatcher.probe, now, lease_s)


def _lease_and_send(
    session: Session,
    ids: list[int],
    send: Callable[[list[int]], None],
    now: datetime,
    lease_s: float,
) -> int:
    sent = 0
    for start in range(0, len(ids), POLL_CHUNK):
        taken = lease_polls(session, ids[start : start + POLL_CHUNK], now=now, lease_s=lease_s)
        session.commit()
        if taken:
            send(taken)
            sent += len(taken)
    return sent
