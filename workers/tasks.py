"""Celery tasks: thin wrappers that take ids and call one service function each."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

import redis
from celery import shared_task
from celery.signals import worker_process_init

from orchestrator.config import load_settings
from orchestrator.db.webhook_outbox import configure_global_url
from orchestrator.observability.logs import log_context
from orchestrator.runtime import Runtime
from orchestrator.services.backups import sweep_expired_backups
from orchestrator.services.dispatch import run_tick
from orchestrator.services.polling import poll_servers
from orchestrator.services.submission import submit_servers
from orchestrator.services.sweep import sweep_facts
from orchestrator.services.verification import probe_servers
from orchestrator.services.webhooks import deliver_due

log = logging.getLogger("reimage.worker")

WEBHOOKS_PER_RUN = 200
# Longer than a run normally takes; a run that outlives it lets the next one start (harmless).
WEBHOOK_RUN_LOCK_S = 120
_runtime: Runtime | None = None
_runtime_pid: int | None = None


def runtime() -> Runtime:
    """One runtime per worker process, built after the fork (engines must not cross a fork)."""
    global _runtime, _runtime_pid
    if _runtime is None or _runtime_pid != os.getpid():
        _runtime = Runtime.build(load_settings())
        configure_global_url(_runtime.sessions, _runtime.settings.notify_url)
        _runtime_pid = os.getpid()
    return _runtime


@worker_process_init.connect
def _reset_after_fork(**_: object) -> None:
    global _runtime
    _runtime = None


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
    outcomes = asyncio.run(submit_servers(runtime(), batch_server_ids))
    log.info("submit n=%d outcomes=%s", len(batch_server_ids), outcomes)
    return outcomes


@shared_task(name="reimage.poll_jobs")
def poll_jobs_task(batch_server_ids: list[int]) -> dict[str, int]:
    outcomes = asyncio.run(poll_servers(runtime(), batch_server_ids))
    log.info("poll n=%d outcomes=%s", len(batch_server_ids), outcomes)
    return outcomes


@shared_task(name="reimage.probe_health")
def probe_health_task(batch_server_ids: list[int]) -> dict[str, int]:
    outcomes = asyncio.run(probe_servers(runtime(), batch_server_ids))
    log.info("probe n=%d outcomes=%s", len(batch_server_ids), outcomes)
    return outcomes


@shared_task(name="reimage.sweep_facts")
def sweep_facts_task(project_id: str, region: str) -> int:
    seen = asyncio.run(sweep_facts(runtime(), project_id, region))
    log.info("sweep %s/%s servers=%d", project_id, region, seen)
    return seen


@shared_task(name="reimage.deliver_webhooks")
def deliver_webhooks_task() -> dict[str, int]:
    """Send the webhook deliveries that are due. Overlapping runs would be safe (claims are
    compare-and-set), but one at a time keeps the control worker's other pool process free for
    ticks however slow a receiver is."""
    rt = runtime()
    lock = redis.Redis.from_url(rt.settings.client_redis_url).lock(
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
    deleted = asyncio.run(sweep_expired_backups(rt, now=rt.clock()))
    if deleted:
        log.info("backups deleted n=%d", deleted)
    return deleted


@shared_task(name="reimage.tick")
def tick_task() -> None:
    rt = runtime()
    # Overlapping ticks are harmless (every claim is a compare-and-set) but wasteful: skip
    # this one if another is still running anywhere.
    # Short-lived: a worker killed mid-tick must not stall the scheduler for long, and a
    # tick that outlives its lock and overlaps the next one does no harm.
    lock = redis.Redis.from_url(rt.settings.client_redis_url).lock(
        "reimage:tick-lock", timeout=max(2.0, rt.settings.tick_seconds * 4), blocking=False
    )
    if not lock.acquire(blocking=False):
        return
    try:
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
    finally:
        with contextlib.suppress(redis.exceptions.LockError):
            lock.release()
