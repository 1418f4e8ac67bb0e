"""Typed keys for what the application holds."""

from __future__ import annotations

import redis.asyncio as aioredis
from aiohttp import web

from orchestrator.runtime import Runtime

RUNTIME = web.AppKey("runtime", Runtime)
REDIS = web.AppKey("redis", aioredis.Redis)
