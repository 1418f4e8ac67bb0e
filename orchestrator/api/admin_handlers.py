"""Admin endpoints: API tokens (create shows the token once; only hashes are kept) and the
audit log with its filters."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime

from aiohttp import web

from orchestrator.api import token_cache
from orchestrator.api.handlers import json_body, limit_param, object_with
from orchestrator.api.jsonbody import json_response
from orchestrator.api.keys import PRINCIPAL, RUNTIME
from orchestrator.api.schemas import RequestInvalid
from orchestrator.services import audit
from orchestrator.services import tokens as tokens_service

_ACTION = re.compile(r"[a-z]+\.[a-z]+|unknown")
_ALLOWED_TOKEN_FIELDS = frozenset({"name", "role", "projects"})


async def list_tokens(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    items = await asyncio.to_thread(tokens_service.list_tokens, rt.sessions)
    return json_response({"items": items})


async def create_token(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    body = object_with(await json_body(request), _ALLOWED_TOKEN_FIELDS)
    created = await asyncio.to_thread(
        tokens_service.create_token,
        rt.sessions,
        name=body.get("name"),
        role=body.get("role"),
        projects=body.get("projects"),
        created_by=request[PRINCIPAL].name,
        now=rt.clock(),
    )
    return json_response({**created.view, "token": created.token}, status=201)


async def revoke_token(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    view = await asyncio.to_thread(
        tokens_service.revoke_token, rt.sessions, request.match_info["token"], now=rt.clock()
    )
    token_cache.forget_all()
    return json_response(view)


def _time(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise RequestInvalid("invalid request", {name: "an ISO 8601 time"}) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _short(request: web.Request, name: str, pattern: re.Pattern[str] | None = None) -> str | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if len(raw) > 64 or (pattern is not None and not pattern.fullmatch(raw)):
        raise RequestInvalid("invalid request", {name: "not a valid value"})
    return raw


async def list_audit(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    outcome = _short(request, "outcome")
    if outcome is not None and outcome not in ("ok", "denied", "error"):
        raise RequestInvalid("invalid request", {"outcome": "one of ok, denied, error"})
    page = await asyncio.to_thread(
        audit.list_audit,
        rt.sessions,
        actor=_short(request, "actor"),
        action=_short(request, "action", _ACTION),
        batch_id=_short(request, "batch_id"),
        outcome=outcome,
        since=_time(request, "since"),
        until=_time(request, "until"),
        limit=limit_param(request, 100, 1000),
        cursor=request.query.get("cursor"),
    )
    return json_response(page)
