"""The OpenAPI 3.1 document: paths, roles and summaries from the route table (routes.py), the
request and response schemas from the pydantic models that validate and shape them. What each
route answers, and the query parameters the handlers read, are declared here beside them, keyed
by route; schemathesis (tests/integration/test_openapi.py) holds the running API to them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from orchestrator import __version__
from orchestrator.api import responses as r
from orchestrator.api.route_spec import RouteSpec
from orchestrator.api.schemas import BatchRequest
from orchestrator.domain.states import ServerState
from orchestrator.ids import UUID_PATTERN

REF = "#/components/schemas/{model}"

_BODIES: dict[tuple[str, str], type[BaseModel]] = {
    ("POST", "/api/v1/batches"): BatchRequest,
    ("POST", "/api/v1/batches/{batch_id}/pause"): r.PauseRequest,
    ("POST", "/api/v1/batches/{batch_id}/resume"): r.EmptyRequest,
    ("POST", "/api/v1/batches/{batch_id}/cancel"): r.EmptyRequest,
    ("POST", "/api/v1/batches/{batch_id}/retry"): r.RetryRequest,
    ("POST", "/api/v1/tokens"): r.TokenRequest,
}
# The body is optional where the handler accepts none at all.
_OPTIONAL_BODIES = {"pause", "resume", "cancel", "retry"}

_SUCCESS: dict[tuple[str, str], dict[int, tuple[str, list[type[BaseModel]]]]] = {
    ("GET", "/healthz"): {200: ("alive", [r.Health])},
    ("GET", "/readyz"): {200: ("ready", [r.Health]), 503: ("not ready", [r.Health])},
    ("POST", "/api/v1/batches"): {
        202: ("accepted: the batch", [r.BatchView]),
        200: ("an Idempotency-Key replay, or the dry-run report", [r.BatchView, r.DryRunReport]),
    },
    ("GET", "/api/v1/batches"): {200: ("a page of batches", [r.BatchPage])},
    ("GET", "/api/v1/batches/{batch_id}"): {200: ("the batch with its waves", [r.BatchView])},
    ("GET", "/api/v1/batches/{batch_id}/servers"): {200: ("a page of servers", [r.ServerPage])},
    ("GET", "/api/v1/batches/{batch_id}/webhooks"): {200: ("deliveries", [r.WebhookPage])},
    ("POST", "/api/v1/batches/{batch_id}/pause"): {200: ("the batch", [r.BatchView])},
    ("POST", "/api/v1/batches/{batch_id}/resume"): {200: ("the batch", [r.BatchView])},
    ("POST", "/api/v1/batches/{batch_id}/cancel"): {200: ("the batch", [r.BatchView])},
    ("POST", "/api/v1/batches/{batch_id}/retry"): {
        202: ("the new batch", [r.BatchView]),
        200: ("an Idempotency-Key replay, or the dry-run report", [r.BatchView, r.DryRunReport]),
    },
    ("GET", "/api/v1/servers/{server_id}/history"): {200: ("history rows", [r.HistoryPage])},
    ("GET", "/api/v1/whoami"): {200: ("the caller", [r.WhoAmI])},
    ("GET", "/api/v1/tokens"): {200: ("tokens", [r.TokenList])},
    ("POST", "/api/v1/tokens"): {201: ("the token, shown once", [r.TokenCreated])},
    ("DELETE", "/api/v1/tokens/{token}"): {200: ("the revoked token", [r.TokenView])},
    ("GET", "/api/v1/audit"): {200: ("audit rows, newest first", [r.AuditPage])},
}

# Answers that are not JSON models: (media type, schema, description).
_OTHER: dict[tuple[str, str], tuple[str, dict[str, Any], str]] = {
    ("GET", "/metrics"): (
        "text/plain",
        {"type": "string"},
        "Prometheus text format 0.0.4; aggregates only (no ids)",
    ),
    ("GET", "/api/v1/openapi.json"): ("application/json", {"type": "object"}, "OpenAPI 3.1"),
    ("GET", "/api/v1/docs"): ("text/html", {"type": "string"}, "the document as a web page"),
}

_BATCH_LINKS = {
    "GetBatch": "get_batch",
    "ListServers": "list_batch_servers",
    "ListWebhooks": "list_batch_webhooks",
    "Pause": "pause_batch",
    "Resume": "resume_batch",
    "Cancel": "cancel_batch",
    "Retry": "retry_batch",
}

_ERRORS = {
    400: "invalid request: `error.fields` maps each field path to a reason",
    401: "no valid bearer token",
    403: "the token's role or project scope does not allow this",
    404: "no such resource, or not in the token's projects",
    409: "conflicts with the current state",
    413: "the body is larger than ORCH_MAX_BODY_BYTES",
    422: "Idempotency-Key reused with a different body",
    429: "too many bad tokens from this address",
    503: "a backing service is unreachable; try again",
}

_QUERY: dict[str, tuple[dict[str, Any], str]] = {
    "limit": ({"type": "integer", "minimum": 1}, "page size"),
    "cursor": ({"type": "string"}, "next_cursor of the previous page"),
    "state": ({"type": "string", "enum": [s.value for s in ServerState]}, "only this state"),
    "server": (
        {"type": "string", "pattern": "^[0-9a-fA-F-]{1,36}$"},
        "only servers whose id starts with this",
    ),
    "dry_run": ({"type": "boolean"}, "report what would happen; store and send nothing"),
    "actor": ({"type": "string", "maxLength": 64}, "token name"),
    "action": ({"type": "string", "pattern": "^([a-z]+\\.[a-z]+|unknown)$"}, "e.g. batch.pause"),
    "batch_id": ({"type": "string", "maxLength": 64}, "one batch"),
    "outcome": ({"type": "string", "enum": ["ok", "denied", "error"]}, "outcome"),
    "since": ({"type": "string", "format": "date-time"}, "at or after (ISO 8601)"),
    "until": ({"type": "string", "format": "date-time"}, "before (ISO 8601)"),
}

_PATH_PARAMS: dict[str, dict[str, Any]] = {
    "batch_id": {"type": "string", "format": "uuid", "pattern": f"^{UUID_PATTERN}$"},
    "server_id": {"type": "string", "format": "uuid", "pattern": f"^{UUID_PATTERN}$"},
    "token": {"type": "string", "pattern": "^[A-Za-z0-9_.@-]{1,64}$"},
}


def _component_schemas() -> dict[str, Any]:
    models: list[type[BaseModel]] = [BatchRequest, r.ErrorResponse]
    models += list(_BODIES.values())
    for statuses in _SUCCESS.values():
        for _, bodies in statuses.values():
            models += bodies
    unique = list(dict.fromkeys(models))
    mode = {BatchRequest, r.PauseRequest, r.RetryRequest, r.EmptyRequest, r.TokenRequest}
    _, schema = models_json_schema(
        [(m, "validation" if m in mode else "serialization") for m in unique],
        ref_template=REF,
    )
    return dict(schema.get("$defs", {}))


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _content(models: list[type[BaseModel]]) -> dict[str, Any]:
    schema = _ref(models[0]) if len(models) == 1 else {"anyOf": [_ref(m) for m in models]}
    return {"application/json": {"schema": schema}}


def _operation(spec: RouteSpec) -> dict[str, Any]:
    key = (spec.method, spec.path)
    role = f"Needs the **{spec.role.value}** role." if spec.role else "Public: no token."
    operation: dict[str, Any] = {
        "operationId": spec.handler.__name__,
        "summary": spec.summary,
        "description": role,
        "tags": [spec.tag],
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": schema}
            for name, schema in _PATH_PARAMS.items()
            if "{" + name + "}" in spec.path
        ]
        + [
            {"name": n, "in": "query", "required": False, "schema": s, "description": d}
            for n, (s, d) in ((n, _QUERY[n]) for n in spec.query)
        ],
        "responses": {
            str(status): {"description": text, "content": _content(models)}
            for status, (text, models) in _SUCCESS.get(key, {}).items()
        },
    }
    if key in _OTHER:
        media, schema, text = _OTHER[key]
        operation["responses"]["200"] = {
            "description": text,
            "content": {media: {"schema": schema}},
        }
    if spec.creates_batch and "202" in operation["responses"]:
        # Lets a client (and schemathesis' stateful phase) follow from a new batch to its routes.
        operation["responses"]["202"]["links"] = {
            name: {
                "operationId": target,
                "parameters": {"batch_id": "$response.body#/id"},
            }
            for name, target in _BATCH_LINKS.items()
        }
    if spec.creates_batch:
        operation["parameters"].append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 200},
            }
        )
    if key in _BODIES:
        optional = spec.path.rsplit("/", 1)[-1] in _OPTIONAL_BODIES
        operation["requestBody"] = {
            "required": not optional,
            "content": {"application/json": {"schema": _ref(_BODIES[key])}},
        }
    if spec.role is None:
        operation["security"] = []
    else:
        for status, text in _ERRORS.items():
            operation["responses"].setdefault(
                str(status), {"description": text, "content": _content([r.ErrorResponse])}
            )
    return operation


def openapi_document(routes: Sequence[RouteSpec]) -> dict[str, Any]:
    """The document of `routes` (the app builds it once from its route table)."""
    paths: dict[str, dict[str, Any]] = {}
    for spec in routes:
        paths.setdefault(spec.path, {})[spec.method.lower()] = _operation(spec)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "reimage",
            "version": __version__,
            "description": "Change the operating system of fleets of Huawei Cloud ECS servers, "
            "safely: batches, waves, pause/resume/cancel/retry, per-server history.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {
            "schemas": _component_schemas(),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }
