"""The route table: every endpoint with the role it needs, its audit action and how project scope
applies. The app, the auth middleware, the OpenAPI document and the authorization matrix test are
all built from this one list, so they cannot disagree."""

from __future__ import annotations

from aiohttp import web

from orchestrator.api import admin_handlers, docs, handlers, metrics_handler, webhook_handlers
from orchestrator.api.route_spec import RouteSpec
from orchestrator.domain.access import Role

VIEWER, OPERATOR, ADMIN = Role.VIEWER, Role.OPERATOR, Role.ADMIN
BATCH = "/api/v1/batches/{batch_id}"

ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec("GET", "/healthz", handlers.healthz, None, "Liveness", tag="health"),
    RouteSpec("GET", "/readyz", handlers.readyz, None, "Readiness", tag="health"),
    RouteSpec("GET", "/metrics", metrics_handler.metrics, None, "Prometheus metrics", tag="health"),
    RouteSpec("GET", "/api/v1/openapi.json", docs.openapi_json, None, "This document", tag="docs"),
    RouteSpec("GET", "/api/v1/docs", docs.docs_page, None, "This document, to read", tag="docs"),
    RouteSpec(
        "GET",
        "/api/v1/whoami",
        handlers.whoami,
        VIEWER,
        "The caller: token name, role and projects",
        tag="admin",
    ),
    RouteSpec(
        "POST",
        "/api/v1/batches",
        handlers.create_batch,
        OPERATOR,
        "Submit a batch of servers to reimage",
        scope="create",
        action="batch.create",
        creates_batch=True,
        query=("dry_run",),
    ),
    RouteSpec(
        "GET",
        "/api/v1/batches",
        handlers.list_batches,
        VIEWER,
        "List batches, newest first",
        scope="filter",
        query=("limit", "cursor"),
    ),
    RouteSpec("GET", BATCH, handlers.get_batch, VIEWER, "One batch", scope="batch"),
    RouteSpec(
        "GET",
        BATCH + "/servers",
        handlers.list_batch_servers,
        VIEWER,
        "A batch's servers",
        scope="batch",
        query=("state", "server", "limit", "cursor"),
    ),
    RouteSpec(
        "GET",
        BATCH + "/webhooks",
        webhook_handlers.list_batch_webhooks,
        VIEWER,
        "A batch's webhook deliveries and every attempt",
        scope="batch",
        query=("limit",),
    ),
    RouteSpec(
        "POST",
        BATCH + "/pause",
        handlers.pause_batch,
        OPERATOR,
        "Pause a batch",
        scope="batch",
        action="batch.pause",
    ),
    RouteSpec(
        "POST",
        BATCH + "/resume",
        handlers.resume_batch,
        OPERATOR,
        "Resume a paused batch",
        scope="batch",
        action="batch.resume",
    ),
    RouteSpec(
        "POST",
        BATCH + "/cancel",
        handlers.cancel_batch,
        OPERATOR,
        "Cancel a batch",
        scope="batch",
        action="batch.cancel",
    ),
    RouteSpec(
        "POST",
        BATCH + "/retry",
        handlers.retry_batch,
        OPERATOR,
        "Retry a batch's failed or cancelled servers as a new batch",
        scope="batch",
        action="batch.retry",
        creates_batch=True,
        query=("dry_run",),
    ),
    RouteSpec(
        "GET",
        "/api/v1/servers/{server_id}/history",
        handlers.server_history,
        VIEWER,
        "A server's state history across batches",
        scope="filter",
        tag="servers",
        query=("limit", "cursor"),
    ),
    RouteSpec(
        "GET",
        "/api/v1/tokens",
        admin_handlers.list_tokens,
        ADMIN,
        "List API tokens (never the tokens themselves)",
        tag="admin",
    ),
    RouteSpec(
        "POST",
        "/api/v1/tokens",
        admin_handlers.create_token,
        ADMIN,
        "Create an API token (shown once)",
        action="token.create",
        tag="admin",
    ),
    RouteSpec(
        "DELETE",
        "/api/v1/tokens/{token}",
        admin_handlers.revoke_token,
        ADMIN,
        "Revoke an API token by name or id",
        action="token.revoke",
        tag="admin",
    ),
    RouteSpec(
        "GET",
        "/api/v1/audit",
        admin_handlers.list_audit,
        ADMIN,
        "The audit log, newest first",
        tag="admin",
        query=("actor", "action", "batch_id", "outcome", "since", "until", "limit", "cursor"),
    ),
)

ROUTE_SPECS: dict[tuple[str, str], RouteSpec] = {(r.method, r.path): r for r in ROUTES}


def route_defs() -> list[web.RouteDef]:
    return [web.route(r.method, r.path, r.handler) for r in ROUTES]
