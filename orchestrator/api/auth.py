"""Authentication, authorization and the audit trail of the API, as three middlewares.

- `audit_middleware` (outermost) writes one audit row per mutating request with its final
  status, whoever the caller was, including refused ones.
- `auth_middleware` finds the caller of every /api/ request (the bootstrap ORCH_API_TOKEN, or a
  stored token by its hash), slows down and then refuses an address that keeps presenting bad
  tokens, and checks the route's role. Project scope is checked by the handlers, which know
  which batch a request is about.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from typing import Any

from aiohttp import web

from orchestrator.api import token_cache
from orchestrator.api.errors import Handler, json_error
from orchestrator.api.keys import (
    AUDIT_BATCH,
    AUDIT_PROJECT,
    PRINCIPAL,
    REDIS,
    RUNTIME,
    SEEN_FAILURES,
)
from orchestrator.api.route_spec import RouteSpec
from orchestrator.api.routes import ROUTE_SPECS
from orchestrator.domain.access import TOKEN_PREFIX, Principal, Role, hash_token
from orchestrator.ids import canonical_uuid
from orchestrator.services import audit
from orchestrator.services import tokens as tokens_service

log = logging.getLogger("reimage.api.auth")

BOOTSTRAP_NAME = "bootstrap"
# Bad tokens from one address: each answer is delayed, and past ORCH_AUTH_FAILURE_LIMIT the
# address gets 429 until the window ends, valid token or not (a guesser must not learn when it
# guessed right). Online guessing of a 256-bit token is hopeless anyway; this keeps a
# scanner from using the API as a free oracle and keeps its noise out of the database.
FAILURE_DELAY_S = 0.2
FAILURE_WINDOW_S = 60
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


# How stale this process's view of an address's failure count may be (see `_failures`).
FAILURE_READ_S = 1.0
MAX_ADDRESSES = 10_000

_local_failures: dict[str, tuple[int, float]] = {}


def route_spec(request: web.Request) -> RouteSpec | None:
    resource = request.match_info.route.resource
    if resource is None:
        return None
    return ROUTE_SPECS.get((request.method, resource.canonical))


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def _principal_for(request: web.Request, token: str) -> Principal | None:
    rt = request.app[RUNTIME]
    bootstrap = rt.settings.api_token
    if bootstrap is not None and hmac.compare_digest(
        token.encode(), bootstrap.get_secret_value().encode()
    ):
        return Principal(BOOTSTRAP_NAME, Role.ADMIN, None)
    if not token.startswith(TOKEN_PREFIX) or len(token) > 100:
        return None
    key = hash_token(token)
    known, principal = token_cache.lookup(key)
    if not known:
        principal = await asyncio.to_thread(
            tokens_service.authenticate, rt.sessions, token, now=rt.clock()
        )
        token_cache.remember(key, principal)
    return principal


async def _failures(request: web.Request) -> int:
    """The address's bad tokens in the window, as Redis counts them over every API process,
    read at most once per FAILURE_READ_S: a Redis round trip on every request was a tenth of
    a hot read's cost. Another process's count is seen here within that lag; this process's
    own failures at once (see `_count_failure`)."""
    address = request.remote or "?"
    now = time.monotonic()
    seen = request.app[SEEN_FAILURES].get(address)
    if seen is not None and now - seen[1] < FAILURE_READ_S:
        return seen[0]
    try:
        value = await request.app[REDIS].get(f"reimage:authfail:{address}")
        count = int(value or 0)
    except Exception:  # Redis down: this process's own count still slows a guesser
        local, until = _local_failures.get(address, (0, 0.0))
        count = local if until > now else 0
    _remember_failures(request, address, count, now)
    return count


def _remember_failures(request: web.Request, address: str, count: int, now: float) -> None:
    seen = request.app[SEEN_FAILURES]
    if len(seen) >= MAX_ADDRESSES:
        seen.clear()
    seen[address] = (count, now)


async def _count_failure(request: web.Request) -> None:
    address = request.remote or "?"
    try:
        key = f"reimage:authfail:{address}"
        async with request.app[REDIS].pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, FAILURE_WINDOW_S, nx=True)
            counted, _ = await pipe.execute()
        _remember_failures(request, address, int(counted), time.monotonic())
    except Exception:
        count, until = _local_failures.get(address, (0, 0.0))
        if until <= time.monotonic():
            count, until = 0, time.monotonic() + FAILURE_WINDOW_S
        _local_failures[address] = (count + 1, until)


def _unauthorized() -> web.Response:
    response = json_error(401, "unauthorized", "a valid bearer token is required")
    response.headers["WWW-Authenticate"] = 'Bearer realm="reimage"'
    return response


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    spec = route_spec(request)
    if not request.path.startswith("/api/") or (spec is not None and spec.role is None):
        return await handler(request)
    if await _failures(request) >= request.app[RUNTIME].settings.auth_failure_limit:
        response = json_error(
            429, "too_many_failures", "too many bad tokens from this address; try again later"
        )
        response.headers["Retry-After"] = str(FAILURE_WINDOW_S)
        return response
    token = _bearer(request)
    principal = await _principal_for(request, token) if token else None
    if principal is None:
        await _count_failure(request)
        await asyncio.sleep(FAILURE_DELAY_S)
        return _unauthorized()
    request[PRINCIPAL] = principal
    # A route without a spec is an admin's until someone decides otherwise.
    needed = spec.role if spec is not None and spec.role is not None else Role.ADMIN
    if not principal.role.allows(needed):
        return json_error(403, "forbidden", f"this needs the {needed.value} role")
    return await handler(request)


def _created_batch(response: web.StreamResponse) -> tuple[str | None, str | None]:
    if not isinstance(response, web.Response) or response.status not in (200, 202):
        return None, None
    try:
        body = json.loads(response.body) if isinstance(response.body, bytes) else None
    except ValueError:
        return None, None
    if isinstance(body, dict) and isinstance(body.get("id"), str) and "project_id" in body:
        return body["id"], str(body["project_id"])
    return None, None


def _audit_entry(
    request: web.Request, status: int, response: web.StreamResponse | None
) -> dict[str, Any]:
    principal = request.get(PRINCIPAL)
    spec = route_spec(request)
    details: dict[str, Any] = {}
    # Refused before a handler ran, the batch is still the one the URL names.
    batch_id = request.get(AUDIT_BATCH) or canonical_uuid(request.match_info.get("batch_id"))
    project_id = request.get(AUDIT_PROJECT)
    if response is not None and spec is not None and spec.creates_batch:
        created, created_project = _created_batch(response)
        if created is not None:
            details["source_batch_id"] = batch_id
            batch_id, project_id = created, created_project
    if "dry_run" in request.query:
        details["dry_run"] = request.query["dry_run"]
    forwarded = request.headers.get("X-Forwarded-For")
    if forwarded:
        details["forwarded_for"] = forwarded[:200]
    return {
        "at": request.app[RUNTIME].clock(),
        "actor": principal.name if principal else "anonymous",
        "role": principal.role.value if principal else None,
        "action": spec.action if spec is not None and spec.action else "unknown",
        "method": request.method,
        "path": request.path[:512],
        "batch_id": batch_id,
        "project_id": project_id,
        "remote_addr": (request.remote or "")[:64] or None,
        "status": status,
        "outcome": "ok" if status < 400 else "denied" if status in (401, 403, 429) else "error",
        "details": details,
    }


@web.middleware
async def audit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method not in MUTATING or not request.path.startswith("/api/"):
        return await handler(request)
    status = 500
    response: web.StreamResponse | None = None
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        entry = _audit_entry(request, status, response)
        try:
            await asyncio.to_thread(audit.record, request.app[RUNTIME].sessions, entry)
        except Exception as exc:  # the request already happened; say loudly that it is unaudited
            log.error("audit row not written: %s %s (%s)", entry["action"], entry["status"], exc)
