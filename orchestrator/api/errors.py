"""One middleware maps every expected failure to a JSON error body and an HTTP status."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from orchestrator.api.schemas import RequestInvalid
from orchestrator.errors import Conflict, NotFound, ServiceError, Unavailable
from orchestrator.services.batches import BadCursor, IdempotencyMismatch

log = logging.getLogger("reimage.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def json_error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response(error_body(code, message, **extra), status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            return json_error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
        raise
    except RequestInvalid as exc:
        return json_error(400, exc.code, exc.message, fields=dict(exc.fields))
    except BadCursor as exc:
        return json_error(400, exc.code, exc.message, fields={"cursor": exc.message})
    except NotFound as exc:
        return json_error(404, exc.code, exc.message)
    except Conflict as exc:
        return json_error(409, exc.code, exc.message, **exc.details)
    except IdempotencyMismatch as exc:
        return json_error(422, exc.code, exc.message, **exc.details)
    except (Unavailable, OperationalError, PoolTimeout, TimeoutError) as exc:
        log.warning("unavailable: %s", type(exc).__name__)
        return json_error(503, "unavailable", "a backing service is unreachable; try again")
    except DBAPIError as exc:
        if exc.connection_invalidated:
            return json_error(503, "unavailable", "the database connection was lost; try again")
        raise
    except ServiceError as exc:
        return json_error(400, exc.code, exc.message)
