"""The Celery app of reimage (`celery -A workers worker` finds `app` here)."""

from workers.app import app

__all__ = ["app"]
