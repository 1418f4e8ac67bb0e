"""Typed keys for what the application holds."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web

from orchestrator.domain.access import Principal
from orchestrator.runtime import Runtime

RUNTIME = web.AppKey("runtime", Runtime)
# Built once from the route table when the app is made.
OPENAPI = web.AppKey("openapi", dict[str, Any])
DOCS_PAGE = web.AppKey("docs_page", str)
REDIS = web.AppKey("redis", aioredis.Redis)
# The few threads of the hot GETs (orchestrator.api.app.READ_THREADS), apart from the default
# executor that runs everything else, so that slow writes never hold up a read.
READ_EXECUTOR = web.AppKey("read_executor", ThreadPoolExecutor)
# Asks for a tick now (orchestrator.api.kick); absent in apps built without one (tests).
KICK: web.AppKey[Callable[[], None]] = web.AppKey("kick")
# This process's recent view of bad-token counts per address: {address: (count, when read)}.
SEEN_FAILURES = web.AppKey("seen_failures", dict[str, tuple[int, float]])
# The caller of a request, set by the auth middleware for every /api/ request it lets through.
PRINCIPAL = web.RequestKey("principal", Principal)
# What a request turned out to be about, set by the handlers for the audit row.
AUDIT_BATCH = web.RequestKey("audit_batch", str)
AUDIT_PROJECT = web.RequestKey("audit_project", str)
