"""The Celery app of reimage: `celery -A workers ...` finds it as `workers.celery` (built on
first use: importing this package reads no settings and opens nothing)."""

from typing import Any

from workers.app import get_app


def __getattr__(name: str) -> Any:
    # `workers.app` is the module that builds it, so Celery looks for `celery` next.
    if name == "celery":
        return get_app()
    raise AttributeError(name)


__all__ = ["get_app"]
