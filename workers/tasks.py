"""Celery tasks: thin wrappers that take ids and call one service function each, then hand on
what is due next (the next looks due soon, a tick when a server ended: issue 17 part 3).

A worker process runs every task's coroutine on one event loop of its own (`run`), made on its
first task after the fork and kept for its lifetime, so the cloud session on it (its pool of
keep-alive TLS connections, `orchestrator.cloud.http_session`) serves every server of every
task; the sessions are closed and the loop with them when the process exits.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

import redis
from celery import shared_task
from celery.signals import worker_process_init, worker_process_shutdown

from orchestrator.config import load_settings
from orchestrator.db.webhook_outbox import configure_global_url
from orchestrator.domain.states import TERMINAL_SERVER_STATES
from orchestrator.observability.logs import log_context
from orchestrator.runtime import Runtime
from orchestrator.services.backups import sweep_expired_backups
from orchestrator.services.dispatch import run_tick
from orchestrator.services.follow_ups import (
    ended_a_wave,
    follow_up_horizon_s,
    take_awaiting_sweep,
    take_follow_ups,
)
from orchestrator.services.polling import poll_servers
from orchestrator.services.submission import submit_servers
from orchestrator.services.sweep import sweep_facts
from orchestrator.services.tick_kicks import KICKED_TICK_EXPIRES_S, kick_tick, run_kicked
from orchestrator.services.verification import probe_servers
from orchestrator.services.webhooks import deliver_due

log = logging.getLogger("reimage.worker")

WEBHOOKS_PER_RUN = 200
# Longer than a run normally takes; a run that outlives it lets the next one start (harmless).
WEBHOOK_RUN_LOCK_S = 120
_runtime: Runtime | None = None
_runtime_pid: int | None = None
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid: int | None = None
T = TypeVar("T")


def runtime() -> Runtime:
    """One runtime per worker process, built after the fork (engines must not cross a fork)."""
    global _runtime, _runtime_pid
    if _runtime is None or _runtime_pid != os.getpid():
        _runtime = Runtime.build(load_settings(), buffered_metrics=True)
        configure_global_url(_runtime.sessions, _runtime.settings.notify_url)
        _runtime_pid = os.getpid()
    return _runtime


def redis_client(rt: Runtime) -> redis.Redis:
    """The runtime's Redis client (one per process), or one for this call when it has none."""
    return rt.redis if rt.redis is not None else redis.Redis.from_url(rt.settings.client_redis_url)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a task's coroutine on this process's loop, as `asyncio.run` would but for the loop
    (and the connections on it) that stays: what the coroutine left running is cancelled."""
    global _loop, _loop_pid
    if _loop is None or _loop_pid != os.getpid() or _loop.is_closed():
        _loop = asyncio.new_event_loop()  # a loop inherited through a fork is not ours to use
        _loop_pid = os.getpid()
    loop = _loop
    runtime().http.keep_on(loop)
    try:
        return loop.run_until_complete(coro)
    finally:
        _cancel_leftovers(loop)
        _flush_metrics()


def _flush_metrics() -> None:
    """The task's figures in one round trip (the worker's metrics are buffered)."""
    if _runtime is not None and _runtime_pid == os.getpid() and _runtime.metrics is not None:
        _runtime.metrics.flush()


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    leftovers = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in leftovers:
        task.cancel()
    if leftovers:
        loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))


def _close_loop() -> None:
    """At the process's exit: the kept sessions closed (their connections said goodbye), then
    the loop."""
    global _loop
    loop, _loop = _loop, None
    if loop is None or _loop_pid != os.getpid() or loop.is_closed():
        return
    try:
        if _runtime is not None:
            loop.run_until_complete(_runtime.http.close())
        loop.run_until_complete(loop.shutdown_asyncgens())
    except Exception:  # exiting anyway; the kernel closes what is left
        log.debug("closing the worker loop failed", exc_info=True)
    finally:
        loop.close()


atexit.register(_close_loop)


@worker_process_init.connect
def _reset_after_fork(**_: object) -> None:
    global _runtime, _loop
    _runtime = None
    _loop = None


@worker_process_shutdown.connect
def _close_at_shutdown(**_: object) -> None:
    _flush_metrics()
    _close_loop()


class CeleryDispatcher:
    def submit(self, batch_server_ids: list[int]) -> None:
        submit_servers_task.apply_async(args=(batch_server_ids,))

    def poll(self, batch_server_ids: list[int]) -> None:
        poll_jobs_task.apply_async(args=(batch_server_ids,))

    def probe(self, batch_server_ids: list[int]) -> None:
        probe_health_task.apply_async(args=(batch_server_ids,))

    def sweep(self, project_id: str, region: str) -> None:
        sweep_facts_task.apply_async(args=(project_id, region))


@shared_task(name="reimage.submit_servers")
def submit_servers_task(batch_server_ids: list[int]) -> dict[str, int]:
    outcomes = run(submit_servers(runtime(), batch_server_ids))
    log.info("submit n=%d outcomes=%s", len(batch_server_ids), outcomes)
    _after_task(batch_server_ids, outcomes)
    return outcomes


@shared_task(name="reimage.poll_jobs")
def poll_jobs_task(batch_server_ids: list[int]) -> dict[str, int]:
    outcomes = run(poll_servers(runtime(), batch_server_ids))
    log.info("poll n=%d outcomes=%s", len(batch_server_ids), outcomes)
    _after_task(batch_server_ids, outcomes)
    return outcomes


@shared_task(name="reimage.probe_health")
def probe_health_task(batch_server_ids: list[int]) -> dict[str, int]:
    outcomes = run(probe_servers(runtime(), batch_server_ids))
    log.info("probe n=%d outcomes=%s", len(batch_server_ids), outcomes)
    _after_task(batch_server_ids, outcomes)
    return outcomes


_ENDED = frozenset(state.value for state in TERMINAL_SERVER_STATES)
# Outcomes after which the tick has work at once: a server ended (its in-flight slot is free,
# its wave or batch may be done) or a rollback starts (it waits for a submit).
_TICK_WORTHY = frozenset(state.value for state in TERMINAL_SERVER_STATES) | {
    "rollback_started",
    "awaiting_sweep",  # the tick asks for the sweep as soon as one may be made
}


def _after_task(batch_server_ids: list[int], outcomes: dict[str, int]) -> None:
    """What a submit, poll or probe task hands on itself (issue 17 part 3): the next looks at
    its servers due soon, as messages due then, and a tick when one has work at once."""
    rt = runtime()
    now = rt.clock()
    if outcomes and _ENDED.issuperset(outcomes):  # all it looked at ended: no next look
        if _TICK_WORTHY.intersection(outcomes):
            _kick_after(batch_server_ids, outcomes)
        return
    try:
        follow_ups = take_follow_ups(
            rt.sessions,
            batch_server_ids,
            now=now,
            lease_s=rt.settings.task_lease_s,
            horizon_s=follow_up_horizon_s(rt.settings.tick_seconds),
        )
        for follow_up in follow_ups:
            task = probe_health_task if follow_up.kind == "probe" else poll_jobs_task
            countdown = max(0.0, (follow_up.due - now).total_seconds())
            task.apply_async(args=(follow_up.ids,), countdown=countdown)
    except Exception:  # the task's own work is done and recorded; the tick finds the rest
        log.warning("could not hand on the next looks; the tick will", exc_info=True)
    if _TICK_WORTHY.intersection(outcomes):
        _kick_after(batch_server_ids, outcomes)


def _kick_after(batch_server_ids: list[int], outcomes: dict[str, int]) -> None:
    """The tick a task's outcomes call for: at once when its ended servers were the last
    active ones of their wave (the next wave's gate, or the batch's end, waits for nothing
    else), else with the kicks' spacing."""
    at_once = False
    if _ENDED.intersection(outcomes):
        try:
            at_once = ended_a_wave(runtime().sessions, batch_server_ids)
        except Exception:  # a hint only: the spaced kick still comes
            log.warning("could not read whether a wave ended", exc_info=True)
    kick(urgent=at_once)


def kick(*, urgent: bool = False) -> None:
    """A tick now (see orchestrator.services.tick_kicks): queued unless one is queued already;
    `urgent`: without the spacing, and past a spaced tick queued."""
    kick_tick(redis_client(runtime()), _send_kicked_tick, at_once=urgent, past_queued=urgent)


def _send_kicked_tick(countdown_s: float) -> None:
    tick_task.apply_async(countdown=countdown_s, expires=KICKED_TICK_EXPIRES_S)


@shared_task(name="reimage.sweep_facts")
def sweep_facts_task(project_id: str, region: str) -> int:
    rt = runtime()
    seen = run(sweep_facts(rt, project_id, region))
    log.info("sweep %s/%s servers=%d", project_id, region, seen)
    # Ended jobs whose server checks wait for these facts are polled now (those polled since
    # the sweep before began: the others were handed on by it, and their polls are queued),
    # and claims that wait for them are made by a tick now.
    previous = rt.facts.previous_sweep_at(project_id, region) if rt.facts is not None else None
    for ids in take_awaiting_sweep(
        rt.sessions,
        project_id,
        region,
        now=rt.clock(),
        lease_s=rt.settings.task_lease_s,
        polled_since=datetime.fromtimestamp(previous, UTC) if previous is not None else None,
    ):
        poll_jobs_task.apply_async(args=(ids,))
    kick()
    return seen


@shared_task(name="reimage.deliver_webhooks")
def deliver_webhooks_task() -> dict[str, int]:
    """Send the webhook deliveries that are due. Overlapping runs would be safe (claims are
    compare-and-set), but one at a time keeps the control worker's other pool process free for
    ticks however slow a receiver is."""
    rt = runtime()
    lock = redis_client(rt).lock(
        "reimage:webhooks-lock", timeout=WEBHOOK_RUN_LOCK_S, blocking=False
    )
    if not lock.acquire(blocking=False):
        return {"delivered": 0, "retrying": 0, "failed": 0}
    try:
        report = deliver_due(rt, now=rt.clock(), limit=WEBHOOKS_PER_RUN)
    finally:
        with contextlib.suppress(redis.exceptions.LockError):
            lock.release()
    if report.sent:
        log.info("webhooks %s", report)
    return {"delivered": report.delivered, "retrying": report.retrying, "failed": report.failed}


@shared_task(name="reimage.sweep_backups")
def sweep_backups_task() -> int:
    """Delete backup images past their retention (overlapping runs are harmless: a deletion
    is recorded once, guarded on the image's expiry)."""
    rt = runtime()
    deleted = run(sweep_expired_backups(rt, now=rt.clock()))
    if deleted:
        log.info("backups deleted n=%d", deleted)
    return deleted


@shared_task(name="reimage.tick")
def tick_task() -> None:
    rt = runtime()
    client = redis_client(rt)
    # Overlapping ticks are harmless (every claim is a compare-and-set) but wasteful: skip
    # this one if another is still running anywhere (that one runs again if kicked meanwhile).
    # Short-lived: a worker killed mid-tick must not stall the scheduler for long, and a
    # tick that outlives its lock and overlaps the next one does no harm.
    lock = client.lock(
        "reimage:tick-lock", timeout=max(2.0, rt.settings.tick_seconds * 4), blocking=False
    )

    def unlock() -> None:
        with contextlib.suppress(redis.exceptions.LockError):
            lock.release()

    run_kicked(client, lambda: bool(lock.acquire(blocking=False)), unlock, lambda: _tick(rt))
    _flush_metrics()


def _tick(rt: Runtime) -> None:
    report = run_tick(
        rt.sessions,
        CeleryDispatcher(),
        now=rt.clock(),
        lease_s=rt.settings.task_lease_s,
        call_timeout_s=rt.settings.ecs_connect_timeout_s + rt.settings.ecs_read_timeout_s,
        facts=rt.facts,
    )
    if report.claimed or report.batches_finished:
        log.info("tick %s", report)
    for batch_id in report.batches_finished:
        with log_context(batch_id=batch_id):
            log.info("batch finished")
