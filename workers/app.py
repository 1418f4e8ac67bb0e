"""Celery app: Redis broker, settings that keep messages safe (DESIGN.md invariant 4), queues.

Messages carry ids only; the database is the record of work. Tasks are acked late and
re-queued when a worker dies, and prefetch is one, so a killed worker strands at most the task
it held, which the tick re-sends after its lease anyway.
"""

from __future__ import annotations

import sys
from datetime import timedelta

from celery import Celery
from celery.signals import setup_logging
from kombu import Exchange, Queue

from orchestrator.config import Settings, SettingsError, load_settings
from orchestrator.observability.logs import configure_logging

SUBMIT_QUEUE = "reimage.submit"
POLL_QUEUE = "reimage.poll"
TICK_QUEUE = "reimage.tick"
# Webhook sends wait on other people's servers (up to 10 s each): never in front of a tick.
WEBHOOK_QUEUE = "reimage.webhooks"
ALL_QUEUES = (SUBMIT_QUEUE, POLL_QUEUE, TICK_QUEUE, WEBHOOK_QUEUE)
WEBHOOK_INTERVAL_S = 2.0


def create_celery_app(settings: Settings) -> Celery:
    app = Celery("reimage", broker=settings.broker_url, include=["workers.tasks"])
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=SUBMIT_QUEUE,
        # One direct exchange per queue, so a message lands in exactly one queue.
        task_queues=[
            Queue(name, Exchange(name, type="direct"), routing_key=name) for name in ALL_QUEUES
        ],
        task_default_exchange=SUBMIT_QUEUE,
        task_default_routing_key=SUBMIT_QUEUE,
        task_routes={
            "reimage.submit_servers": {"queue": SUBMIT_QUEUE, "routing_key": SUBMIT_QUEUE},
            "reimage.poll_jobs": {"queue": POLL_QUEUE, "routing_key": POLL_QUEUE},
            # Probes wait like polls (on a due time) and are as light: the same queue.
            "reimage.probe_health": {"queue": POLL_QUEUE, "routing_key": POLL_QUEUE},
            # Sweeps are few and others wait on them: the short tick queue, not behind polls.
            "reimage.sweep_facts": {"queue": TICK_QUEUE, "routing_key": TICK_QUEUE},
            "reimage.tick": {"queue": TICK_QUEUE, "routing_key": TICK_QUEUE},
            "reimage.deliver_webhooks": {"queue": WEBHOOK_QUEUE, "routing_key": WEBHOOK_QUEUE},
            # A few IMS deletes now and then: beside the webhooks, off the hot queues.
            "reimage.sweep_backups": {"queue": WEBHOOK_QUEUE, "routing_key": WEBHOOK_QUEUE},
        },
        # Far above the longest task (one HTTP call, or one round of polls): a message is
        # redelivered only when its worker really vanished.
        broker_transport_options={"visibility_timeout": 3600},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        beat_scheduler="workers.leader:LeaderScheduler",
        reimage_redis_url=settings.client_redis_url,
        beat_schedule={
            "reimage-tick": {
                "task": "reimage.tick",
                "schedule": timedelta(seconds=settings.tick_seconds),
                # A tick nobody ran in time is worthless: the next one does the same work.
                "options": {"expires": max(1.0, settings.tick_seconds * 5)},
            },
            "reimage-webhooks": {
                "task": "reimage.deliver_webhooks",
                "schedule": timedelta(seconds=WEBHOOK_INTERVAL_S),
                # The next run sends whatever a dropped one would have: no backlog of runs.
                "options": {"expires": WEBHOOK_INTERVAL_S * 5},
            },
            "reimage-backup-retention": {
                "task": "reimage.sweep_backups",
                "schedule": timedelta(seconds=settings.backup_sweep_s),
                "options": {"expires": settings.backup_sweep_s * 5},
            },
        },
    )
    return app


def _settings_or_exit() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        print(f"reimage: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


_app: Celery | None = None


def get_app() -> Celery:
    """The process's Celery app, built from the settings the first time it is asked for (not
    when this module is imported: importing reads no environment and opens nothing)."""
    global _app
    if _app is None:
        _app = create_celery_app(_settings_or_exit())
    return _app


@setup_logging.connect
def _log_through_ours(**_: object) -> None:
    """Celery's own records (worker and beat) go through our handler: JSON, ids, redacted."""
    configure_logging(_settings_or_exit())
