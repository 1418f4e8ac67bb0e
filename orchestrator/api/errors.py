"""One middleware maps every expected failure to a JSON error body and an HTTP status."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from orchestrator.api.jsonbody import json_response
from orchestrator.api.schemas import RequestInvalid
from orchestrator.cloud.errors import EcsError, Retryable
from orchestrator.errors import Conflict, Forbidden, NotFound, ServiceError, Unavailable
from orchestrator.services.backups import BackupQuota
from orchestrator.services.batches import IdempotencyMismatch, RequestInvalidError
from orchestrator.services.cursors import BadCursor
from orchestrator.services.preflight import Abandoned, FactsUnavailable, Incompatible
from orchestrator.services.tokens import TokenInvalid

log = logging.getLogger("reimage.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def json_error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return json_response(error_body(code, message, **extra), status=status)


UNAVAILABLE = (Unavailable, OperationalError, PoolTimeout, TimeoutError)


# Service errors with their own status; the first group carries its details in the body.
_WITH_DETAILS: tuple[tuple[type[ServiceError], int], ...] = (
    (Conflict, 409),
    (Incompatible, 422),
    (BackupQuota, 422),
    (IdempotencyMismatch, 422),
)
_PLAIN: tuple[tuple[type[ServiceError], int], ...] = (
    (Forbidden, 403),
    (NotFound, 404),
    (FactsUnavailable, 503),
    (Abandoned, 499),  # nobody reads it: the caller closed its connection (nginx's 499)
)


def response_for(exc: Exception) -> web.Response | None:
    """The answer for an expected failure; None for a bug (left to aiohttp's 500)."""
    if isinstance(exc, RequestInvalid | RequestInvalidError):
        return json_error(400, exc.code, exc.message, fields=dict(exc.fields))
    if isinstance(exc, BadCursor):
        return json_error(400, exc.code, exc.message, fields={"cursor": exc.message})
    if isinstance(exc, TokenInvalid):
        return json_error(400, exc.code, exc.message, fields=dict(exc.fields))
    for kind, status in _WITH_DETAILS:
        if isinstance(exc, kind):
            return json_error(status, exc.code, exc.message, **exc.details)
    for kind, status in _PLAIN:
        if isinstance(exc, kind):
            return json_error(status, exc.code, exc.message)
    if isinstance(exc, ServiceError):
        return json_error(400, exc.code, exc.message)
    if isinstance(exc, UNAVAILABLE) or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
        log.warning("unavailable: %s", type(exc).__name__)
        return json_error(503, "unavailable", "a backing service is unreachable; try again")
    if isinstance(exc, Retryable):
        return json_error(
            503, "cloud_unavailable", f"the cloud is busy: {exc}", cloud_code=exc.code
        )
    if isinstance(exc, EcsError):
        # The cloud refused pre-flight's reads for this batch's project (credentials that do not
        # cover it, a project the account lacks, a permission it has not): the request cannot
        # be served for that project, which is the caller's field, not a fault of ours (a 5xx).
        return json_error(
            422,
            "cloud_refused",
            f"the cloud refused to show this project's servers: {exc}",
            cloud_code=exc.code,
            fields={
                "project_id": "the cloud refuses it with the configured credentials "
                f"({exc.code}); check the project id, or ORCH_CREDENTIALS_FILE"
            },
        )
    return None


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            return json_error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
        raise
    except Exception as exc:
        response = response_for(exc)
        if response is None:
            raise
        return response
