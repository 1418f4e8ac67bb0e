"""The route table: every endpoint with the role it needs, its audit action, how project scope
applies, the body it takes and what it answers. The app, the auth middleware, the OpenAPI
document and the authorization matrix test are all built from this one list."""

from __future__ import annotations

from aiohttp import web

from orchestrator.api import admin_handlers, docs, handlers, metrics_handler, webhook_handlers
from orchestrator.api import responses as r
from orchestrator.api.route_spec import Answer, RouteSpec
from orchestrator.api.schemas import BatchRequest
from orchestrator.domain.access import Role

VIEWER, OPERATOR, ADMIN = Role.VIEWER, Role.OPERATOR, Role.ADMIN
BATCH = "/api/v1/batches/{batch_id}"
THE_BATCH = Answer(200, "the batch", (r.BatchView,))
REPLAY_OR_DRY_RUN = Answer(
    200, "an Idempotency-Key replay, or the dry-run report", (r.BatchView, r.DryRunReport)
)

ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec(
        "GET",
        "/healthz",
        handlers.healthz,
        None,
        "Liveness",
        tag="health",
        answers=(Answer(200, "alive", (r.Health,)),),
    ),
    RouteSpec(
        "GET",
        "/readyz",
        handlers.readyz,
        None,
        "Readiness",
        tag="health",
        answers=(Answer(200, "ready", (r.Health,)), Answer(503, "not ready", (r.Health,))),
    ),
    RouteSpec(
        "GET",
        "/metrics",
        metrics_handler.metrics,
        None,
        "Prometheus metrics",
        tag="health",
        answers=(
            Answer(
                200,
                "Prometheus text format 0.0.4; aggregates only (no ids)",
                media="text/plain",
                body_type="string",
            ),
        ),
    ),
    RouteSpec(
        "GET",
        "/api/v1/openapi.json",
        docs.openapi_json,
        None,
        "This document",
        tag="docs",
        answers=(Answer(200, "OpenAPI 3.1", media="application/json"),),
    ),
    RouteSpec(
        "GET",
        "/api/v1/docs",
        docs.docs_page,
        None,
        "This document, to read",
        tag="docs",
        answers=(Answer(200, "the document as a web page", media="text/html", body_type="string"),),
    ),
    RouteSpec(
        "GET",
        "/api/v1/whoami",
        handlers.whoami,
        VIEWER,
        "The caller: token name, role and projects",
        tag="admin",
        answers=(Answer(200, "the caller", (r.WhoAmI,)),),
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
        body=BatchRequest,
        answers=(Answer(202, "accepted: the batch", (r.BatchView,)), REPLAY_OR_DRY_RUN),
    ),
    RouteSpec(
        "GET",
        "/api/v1/batches",
        handlers.list_batches,
        VIEWER,
        "List batches, newest first",
        scope="filter",
        query=("limit", "cursor"),
        answers=(Answer(200, "a page of batches", (r.BatchPage,)),),
    ),
    RouteSpec(
        "GET",
        BATCH,
        handlers.get_batch,
        VIEWER,
        "One batch",
        scope="batch",
        answers=(Answer(200, "the batch with its waves", (r.BatchView,)),),
    ),
    RouteSpec(
        "GET",
        BATCH + "/servers",
        handlers.list_batch_servers,
        VIEWER,
        "A batch's servers",
        scope="batch",
        query=("state", "server", "limit", "cursor"),
        answers=(Answer(200, "a page of servers", (r.ServerPage,)),),
    ),
    RouteSpec(
        "GET",
        BATCH + "/webhooks",
        webhook_handlers.list_batch_webhooks,
        VIEWER,
        "A batch's webhook deliveries and every attempt",
        scope="batch",
        query=("limit",),
        answers=(Answer(200, "deliveries", (r.WebhookPage,)),),
    ),
    RouteSpec(
        "POST",
        BATCH + "/pause",
        handlers.pause_batch,
        OPERATOR,
        "Pause a batch",
        scope="batch",
        action="batch.pause",
        body=r.PauseRequest,
        body_required=False,
        answers=(THE_BATCH,),
    ),
    RouteSpec(
        "POST",
        BATCH + "/resume",
        handlers.resume_batch,
        OPERATOR,
        "Resume a paused batch",
        scope="batch",
        action="batch.resume",
        body=r.EmptyRequest,
        body_required=False,
        answers=(THE_BATCH,),
    ),
    RouteSpec(
        "POST",
        BATCH + "/cancel",
        handlers.cancel_batch,
        OPERATOR,
        "Cancel a batch",
        scope="batch",
        action="batch.cancel",
        body=r.EmptyRequest,
        body_required=False,
        answers=(THE_BATCH,),
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
        body=r.RetryRequest,
        body_required=False,
        answers=(Answer(202, "the new batch", (r.BatchView,)), REPLAY_OR_DRY_RUN),
    ),
    RouteSpec(
        "POST",
        BATCH + "/rollback",
        handlers.rollback_batch,
        OPERATOR,
        "Roll a batch's servers back to their recorded images as a new batch",
        scope="batch",
        action="batch.rollback",
        creates_batch=True,
        query=("dry_run",),
        body=r.RollbackRequest,
        body_required=False,
        answers=(Answer(202, "the new batch, of kind rollback", (r.BatchView,)), REPLAY_OR_DRY_RUN),
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
        answers=(Answer(200, "history rows", (r.HistoryPage,)),),
    ),
    RouteSpec(
        "GET",
        "/api/v1/tokens",
        admin_handlers.list_tokens,
        ADMIN,
        "List API tokens (never the tokens themselves)",
        tag="admin",
        answers=(Answer(200, "tokens", (r.TokenList,)),),
    ),
    RouteSpec(
        "POST",
        "/api/v1/tokens",
        admin_handlers.create_token,
        ADMIN,
        "Create an API token (shown once)",
        action="token.create",
        tag="admin",
        body=r.TokenRequest,
        answers=(Answer(201, "the token, shown once", (r.TokenCreated,)),),
    ),
    RouteSpec(
        "DELETE",
        "/api/v1/tokens/{token}",
        admin_handlers.revoke_token,
        ADMIN,
        "Revoke an API token by name or id",
        action="token.revoke",
        tag="admin",
        answers=(Answer(200, "the revoked token", (r.TokenView,)),),
    ),
    RouteSpec(
        "GET",
        "/api/v1/audit",
        admin_handlers.list_audit,
        ADMIN,
        "The audit log, newest first",
        tag="admin",
        query=("actor", "action", "batch_id", "outcome", "since", "until", "limit", "cursor"),
        answers=(Answer(200, "audit rows, newest first", (r.AuditPage,)),),
    ),
)

ROUTE_SPECS: dict[tuple[str, str], RouteSpec] = {(r.method, r.path): r for r in ROUTES}


def route_defs() -> list[web.RouteDef]:
    return [web.route(r.method, r.path, r.handler) for r in ROUTES]
