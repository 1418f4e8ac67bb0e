"""HTTP handler for a batch's webhook deliveries and their attempts (read only)."""

from __future__ import annotations

from aiohttp import web

from orchestrator.api.handlers import _in_thread, _visible_batch_id, limit_param
from orchestrator.api.jsonbody import json_response
from orchestrator.api.keys import RUNTIME
from orchestrator.services import webhooks


async def list_batch_webhooks(request: web.Request) -> web.Response:
    """`GET /api/v1/batches/{batch_id}/webhooks`: newest first, each with its attempts."""
    rt = request.app[RUNTIME]
    # The same scope check as every batch route: another project's batch is a 404.
    batch_id = await _visible_batch_id(request)
    page = await _in_thread(
        webhooks.list_deliveries, rt.read_sessions, batch_id, limit=limit_param(request, 100, 1000)
    )
    return json_response(page)
