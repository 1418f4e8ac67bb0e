"""The service layer's expected failures; the API maps each to one HTTP answer in one place."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    code = "error"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class NotFound(ServiceError):
    code = "not_found"


class Forbidden(ServiceError):
    """The caller is known but may not do this (a project outside its token's scope)."""

    code = "forbidden"


class Conflict(ServiceError):
    code = "conflict"


class Unavailable(ServiceError):
    """The database or Redis cannot be reached right now: try again later."""

    code = "unavailable"
