"""HTTP handlers: parse the request, call one service, map the result. No SQL, no cloud calls."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import logging
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from aiohttp import web

from orchestrator.api.jsonbody import encode, encoded_response, json_response
from orchestrator.api.keys import (
    AUDIT_BATCH,
    AUDIT_PROJECT,
    PRINCIPAL,
    READ_EXECUTOR,
    REDIS,
    RUNTIME,
)
from orchestrator.api.read_cache import READ_CACHE
from orchestrator.api.schemas import BatchRequest, RequestInvalid, parse_batch_request
from orchestrator.domain.access import Principal
from orchestrator.domain.states import BatchState, ServerState
from orchestrator.errors import Forbidden, NotFound
from orchestrator.ids import canonical_uuid
from orchestrator.services import (
    approvals,
    batches,
    control,
    exports,
    health,
    intake,
    rollbacks,
)
from orchestrator.services.batches import NewBatch

log = logging.getLogger("reimage.api")
T = TypeVar("T")
SERVICE_TIMEOUT_S = 20.0
_SERVER_PREFIX = re.compile(r"[0-9a-f-]{1,36}")
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# What `state` and `order` may be, listed once rather than per request.
BATCH_STATES = tuple(s.value for s in BatchState)
SERVER_STATES = tuple(s.value for s in ServerState)
ORDERS = ("newest", "oldest")


async def _in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn` on the default executor (see `_on_thread`)."""
    return await _on_thread(None, fn, *args, **kwargs)


async def _on_thread(
    executor: ThreadPoolExecutor | None, fn: Callable[..., T], *args: Any, **kwargs: Any
) -> T:
    """`fn` on one of `executor`'s threads (None: the default one), in this request's context
    (its log fields), as asyncio.to_thread runs it."""
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    # A database that hangs must give the caller a 503, not a request that never ends.
    # (asyncio.timeout, not wait_for: wait_for wraps the call in one more task.)
    async with asyncio.timeout(SERVICE_TIMEOUT_S):
        return await asyncio.get_running_loop().run_in_executor(executor, call)


async def _read(
    request: web.Request, fn: Callable[..., Any], *args: Any, **kwargs: Any
) -> web.Response:
    """A hot GET's answer, through this process's read cache (after the scope checks: the
    caller's project scope is part of the key)."""
    principal: Principal = request[PRINCIPAL]
    scope = None if principal.projects is None else tuple(sorted(principal.projects))
    key = (request.path, request.query_string, scope)

    async def compute() -> bytes:
        return encode(await _on_thread(request.app[READ_EXECUTOR], fn, *args, **kwargs))

    return encoded_response(await request.app[READ_CACHE].answer(key, compute))


def _new_batch(parsed: BatchRequest) -> NewBatch:
    """The validated request as the services take it."""
    return NewBatch(
        project_id=parsed.project_id,
        region=parsed.region,
        servers=tuple(parsed.servers),
        cloud_init=parsed.cloud_init,
        os_change=parsed.public_os_change(),
        policy=parsed.policy.model_dump(mode="json"),
        on_conflict=parsed.on_conflict,
        fingerprint=parsed.canonical_fingerprint(),
        secrets=parsed.secrets(),
        selector=parsed.selector.model_dump(mode="json") if parsed.selector else None,
        notify_url=parsed.notify_url,
    )


async def whoami(request: web.Request) -> web.Response:
    """The caller as the API sees it: what the web page and CLI show, and what they may offer."""
    principal: Principal = request[PRINCIPAL]
    return json_response(
        {
            "name": principal.name,
            "role": principal.role.value,
            "projects": principal.project_filter(),
        }
    )


async def healthz(_: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks = await health.readiness(request.app[RUNTIME], request.app[REDIS])
    ready = all(v == "ok" for v in checks.values())
    return json_response(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
    )


def _flag(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false").lower()
    if raw not in ("true", "1", "false", "0"):
        raise RequestInvalid("invalid request", {name: "true or false"})
    return raw in ("true", "1")


async def json_body(request: web.Request, *, optional: bool = False) -> Any:
    if optional and not request.can_read_body:
        return {}
    try:
        return await request.json(loads=json.loads)
    except ValueError:
        raise RequestInvalid("the body is not valid JSON", {"body": "not valid JSON"}) from None


async def _submit(request: web.Request, parsed: BatchRequest) -> web.Response:
    principal = request[PRINCIPAL]
    request[AUDIT_PROJECT] = parsed.project_id
    if not principal.sees(parsed.project_id):
        raise Forbidden(f"this token may not act on project {parsed.project_id}")
    dry_run = _flag(request, "dry_run")
    taken = await intake.take_in(
        request.app[RUNTIME],
        _new_batch(parsed),
        selector=parsed.selector,
        dry_run=dry_run,
        idempotency_key=_idempotency_key(request, dry_run),
        parent_id=None,
        actor=principal.name,
        run_blocking=_in_thread,
        abandoned=_client_gone(request),
    )
    return _taken(taken, dry_run)


def _client_gone(request: web.Request) -> Callable[[], bool]:
    """Whether the caller has closed its connection (a dry run then stops reading the cloud,
    so the fleet's rate budget is not spent for nobody)."""

    def gone() -> bool:
        transport = request.transport
        return transport is None or transport.is_closing()

    return gone


def _idempotency_key(request: web.Request, dry_run: bool) -> str | None:
    key = None if dry_run else request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= 200:
        raise RequestInvalid("invalid request", {"Idempotency-Key": "1 to 200 characters"})
    return key


def _taken(taken: intake.Intake, dry_run: bool) -> web.Response:
    if dry_run:
        return json_response(taken.body)
    return json_response(taken.body, status=202 if taken.created else 200)


def _parse(request: web.Request, payload: Any) -> BatchRequest:
    settings = request.app[RUNTIME].settings
    return parse_batch_request(
        payload,
        secret_key_configured=settings.secret_key is not None,
        max_servers=settings.max_servers_per_batch,
        notify_allowed_hosts=settings.notify_allowed_hosts,
        health_allowed_hosts=settings.health_allowed_hosts,
        accepts_region=settings.accepts_region,
    )


async def create_batch(request: web.Request) -> web.Response:
    return await _submit(request, _parse(request, await json_body(request)))


async def pause_batch(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    batch_id = await _visible_batch_id(request)
    body = object_with(await json_body(request, optional=True), {"reason"})
    reason = body.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > 500):
        raise RequestInvalid("invalid request", {"reason": "a string of at most 500 characters"})
    view = await _in_thread(
        control.pause_batch,
        rt.sessions,
        batch_id,
        actor=_actor(request),
        reason=reason,
        now=rt.clock(),
    )
    return json_response(view)


async def resume_batch(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    batch_id = await _visible_batch_id(request)
    object_with(await json_body(request, optional=True), set())
    view = await _in_thread(
        control.resume_batch, rt.sessions, batch_id, actor=_actor(request), now=rt.clock()
    )
    return json_response(view)


async def cancel_batch(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    batch_id = await _visible_batch_id(request)
    object_with(await json_body(request, optional=True), set())
    view = await _in_thread(
        control.cancel_batch, rt.sessions, batch_id, actor=_actor(request), now=rt.clock()
    )
    return json_response(view)


def _comment(body: dict[str, Any]) -> str | None:
    comment = body.get("comment")
    if comment is not None and (not isinstance(comment, str) or len(comment) > 500):
        raise RequestInvalid("invalid request", {"comment": "a string of at most 500 characters"})
    return comment


async def _decide(request: web.Request, decide: Callable[..., dict[str, Any]]) -> web.Response:
    """One approver's decision (approve or reject) on the gate the batch waits on."""
    rt = request.app[RUNTIME]
    batch_id = await _visible_batch_id(request)
    comment = _comment(object_with(await json_body(request, optional=True), {"comment"}))
    view = await _in_thread(
        decide, rt.sessions, batch_id, principal=_actor(request), comment=comment, now=rt.clock()
    )
    return json_response(view)


async def approve_batch(request: web.Request) -> web.Response:
    """One approver's approval of the gate the batch waits on (never the submitter's)."""
    return await _decide(request, approvals.approve)


async def reject_batch(request: web.Request) -> web.Response:
    """Refuse the gate the batch waits on: the batch is cancelled."""
    return await _decide(request, approvals.reject)


def _child(request: web.Request, dry_run: bool) -> intake.Child:
    """A batch made from this one is validated like a submission, under the caller's name."""

    def parse(payload: dict[str, Any]) -> NewBatch:
        parsed = _parse(request, payload)
        request[AUDIT_PROJECT] = parsed.project_id
        return _new_batch(parsed)

    return intake.Child(
        parse=parse,
        dry_run=dry_run,
        idempotency_key=_idempotency_key(request, dry_run),
        actor=request[PRINCIPAL].name,
        run_blocking=_in_thread,
    )


async def retry_batch(request: web.Request) -> web.Response:
    """A new batch (child of this one) of the servers in the given states, same change unless
    overridden."""
    parent_id = await _visible_batch_id(request)
    body = object_with(await json_body(request, optional=True), batches.RETRY_FIELDS)
    dry_run = _flag(request, "dry_run")
    rt = request.app[RUNTIME]
    taken = await intake.take_in_retry(rt, parent_id, body, _child(request, dry_run))
    return _taken(taken, dry_run)


async def rollback_batch(request: web.Request) -> web.Response:
    """A new batch of kind rollback (child of this one): each server asked for goes back to
    its own recorded image, with the rollout controls of any batch."""
    parent_id = await _visible_batch_id(request)
    body = object_with(await json_body(request, optional=True), rollbacks.ROLLBACK_FIELDS)
    dry_run = _flag(request, "dry_run")
    rt = request.app[RUNTIME]
    taken = await intake.take_in_rollback(rt, parent_id, body, _child(request, dry_run))
    return _taken(taken, dry_run)


def limit_param(request: web.Request, default: int = 100, maximum: int = 1000) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise RequestInvalid("invalid request", {"limit": f"an integer from 1 to {maximum}"})
    return int(raw)


def _actor(request: web.Request) -> str:
    """Who did it, in history rows and batch events: the token's name."""
    return request[PRINCIPAL].name


def object_with(body: Any, allowed: set[str] | frozenset[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise RequestInvalid("invalid request", {"body": "must be a JSON object"})
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise RequestInvalid("invalid request", {name: "unknown field" for name in unknown})
    return body


def _batch_id(request: web.Request) -> str:
    batch_id = canonical_uuid(request.match_info["batch_id"])
    if batch_id is None:
        # Said as such (as a server id is): "no such batch" sent people looking for one.
        raise RequestInvalid("invalid request", {"batch_id": "not a batch UUID"})
    request[AUDIT_BATCH] = batch_id
    return batch_id


async def _visible_batch_id(request: web.Request) -> str:
    """The batch of the URL, if the caller's projects include it; otherwise 404, exactly as for
    a batch that does not exist, so that a scoped token cannot learn other projects' batches."""
    batch_id = _batch_id(request)
    principal: Principal = request[PRINCIPAL]
    if principal.projects is None and request.method == "GET":
        return batch_id  # an unscoped read needs no lookup; the service answers 404 itself
    project = await _in_thread(batches.batch_project, request.app[RUNTIME].read_sessions, batch_id)
    if project is None or not principal.sees(project):
        raise NotFound("no such batch")
    request[AUDIT_PROJECT] = project
    return batch_id


async def list_batches(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    state = _choice(request, "state", BATCH_STATES)
    order = _choice(request, "order", ORDERS) or "newest"
    search = request.query.get("q") or None
    if search is not None and len(search) > 64:
        raise RequestInvalid("invalid request", {"q": "at most 64 characters"})
    return await _read(
        request,
        batches.list_batches,
        rt.read_sessions,
        projects=request[PRINCIPAL].project_filter(),
        limit=limit_param(request, 50, 500),
        cursor=request.query.get("cursor"),
        state=state,
        search=search,
        oldest_first=order == "oldest",
    )


def _choice(request: web.Request, name: str, allowed: tuple[str, ...]) -> str | None:
    """A query parameter that must be one of `allowed` (absent or empty: None)."""
    value = request.query.get(name) or None
    if value is not None and value not in allowed:
        raise RequestInvalid("invalid request", {name: "one of " + ", ".join(allowed)})
    return value


def _code(request: web.Request) -> str | None:
    code = request.query.get("code") or None
    if code is not None and not _ERROR_CODE.fullmatch(code):
        raise RequestInvalid(
            "invalid request", {"code": "an error code: 1-64 of A-Z a-z 0-9 _ . -"}
        )
    return code


async def get_batch(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    batch_id = await _visible_batch_id(request)
    return await _read(request, batches.get_batch, rt.read_sessions, batch_id)


async def list_batch_servers(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    batch_id = await _visible_batch_id(request)
    state = _choice(request, "state", SERVER_STATES)
    code = _code(request)
    server_prefix = request.query.get("server", "").lower() or None
    if server_prefix is not None and not _SERVER_PREFIX.fullmatch(server_prefix):
        raise RequestInvalid(
            "invalid request", {"server": "up to 36 characters of a server UUID (0-9, a-f, -)"}
        )
    return await _read(
        request,
        batches.list_batch_servers,
        rt.read_sessions,
        batch_id,
        state=state,
        code=code,
        server_prefix=server_prefix,
        limit=limit_param(request),
        cursor=request.query.get("cursor"),
    )


async def export_batch_servers(request: web.Request) -> web.StreamResponse:
    """The batch's servers as a CSV download (all, one state or one code), streamed."""
    rt = request.app[RUNTIME]
    batch_id = await _visible_batch_id(request)
    state = _choice(request, "state", SERVER_STATES)
    code = _code(request)
    chunks = await _in_thread(
        exports.servers_csv, rt.read_sessions, batch_id, state=state, code=code
    )
    name = "-".join(p for p in ("batch", batch_id, state, code) if p)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{name}.csv"',
        }
    )
    await response.prepare(request)
    while (chunk := await _in_thread(next, chunks, None)) is not None:
        await response.write(chunk)
    await response.write_eof()
    return response


async def server_history(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    server_id = canonical_uuid(request.match_info["server_id"])
    if server_id is None:
        raise RequestInvalid("invalid request", {"server_id": "not a server UUID"})
    return await _read(
        request,
        batches.server_history,
        rt.read_sessions,
        server_id,
        projects=request[PRINCIPAL].project_filter(),
        limit=limit_param(request, 1000, 10000),
        cursor=request.query.get("cursor"),
    )
