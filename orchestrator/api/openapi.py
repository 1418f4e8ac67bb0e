"""The OpenAPI 3.1 document, built from the route table (routes.py: paths, roles, bodies,
answers) and the pydantic models that validate requests and shape responses; the query
parameters the handlers read are described here once each. schemathesis
(tests/integration/test_openapi.py) holds the running API to the document."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from orchestrator import __version__
from orchestrator.api import responses as r
from orchestrator.api.route_spec import Answer, RouteSpec
from orchestrator.api.schemas import BatchRequest
from orchestrator.domain.states import BatchState, ServerState
from orchestrator.ids import UUID_PATTERN

REF = "#/components/schemas/{model}"

_BATCH_LINKS = {
    "GetBatch": "get_batch",
    "ListServers": "list_batch_servers",
    "ListWebhooks": "list_batch_webhooks",
    "Pause": "pause_batch",
    "Resume": "resume_batch",
    "Cancel": "cancel_batch",
    "Retry": "retry_batch",
    "Rollback": "rollback_batch",
    "Approve": "approve_batch",
    "Reject": "reject_batch",
}

_ERRORS = {
    400: "invalid request: `error.fields` maps each field path to a reason",
    401: "no valid bearer token",
    403: "the token's role or project scope does not allow this",
    404: "no such resource, or not in the token's projects",
    409: "conflicts with the current state",
    413: "the body is larger than ORCH_MAX_BODY_BYTES",
    422: "Idempotency-Key reused with a different body; or servers pre-flight finds "
    "incompatible with `policy.on_incompatible` reject (`incompatible_servers`: "
    "`error.servers` lists each with its codes, `error.codes` counts them); or more backups "
    "needed than the IMS image quota leaves (`backup_quota`, with the numbers); or the cloud "
    "refuses pre-flight's reads for the project (`cloud_refused`, with `cloud_code` and "
    "`error.fields.project_id`)",
    429: "too many bad tokens from this address",
    503: "a backing service (or the cloud, for pre-flight) is unreachable; try again",
}

_QUERY: dict[str, tuple[dict[str, Any], str]] = {
    "limit": ({"type": "integer", "minimum": 1}, "page size"),
    "cursor": ({"type": "string"}, "next_cursor of the previous page"),
    "state": ({"type": "string", "enum": [s.value for s in ServerState]}, "only this state"),
    "server": (
        {"type": "string", "pattern": "^[0-9a-fA-F-]{1,36}$"},
        "only servers whose id starts with this",
    ),
    "state@batch": (
        {"type": "string", "enum": [s.value for s in BatchState]},
        "only batches in this state",
    ),
    "q": (
        {"type": "string", "maxLength": 64},
        "only batches whose id or submitter (token name) starts with this",
    ),
    "order": ({"type": "string", "enum": ["newest", "oldest"]}, "newest first (default)"),
    "code": (
        {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"},
        "only servers with this error code (e.g. Ecs.0202)",
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


def _component_schemas(routes: Sequence[RouteSpec]) -> dict[str, Any]:
    bodies = [spec.body for spec in routes if spec.body is not None]
    models: list[type[BaseModel]] = [BatchRequest, r.ErrorResponse, *bodies]
    models += [model for spec in routes for answer in spec.answers for model in answer.models]
    unique = list(dict.fromkeys(models))
    mode = {BatchRequest, *bodies}
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


def _answer(answer: Answer) -> dict[str, Any]:
    if answer.models:
        return {"description": answer.description, "content": _content(list(answer.models))}
    schema = {"type": answer.body_type}
    return {"description": answer.description, "content": {answer.media: {"schema": schema}}}


def _operation(spec: RouteSpec) -> dict[str, Any]:
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
            # "state@batch": the parameter `state`, described as the batch list takes it.
            {
                "name": n.split("@")[0],
                "in": "query",
                "required": False,
                "schema": s,
                "description": d,
            }
            for n, (s, d) in ((n, _QUERY[n]) for n in spec.query)
        ],
        "responses": {str(answer.status): _answer(answer) for answer in spec.answers},
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
    if spec.body is not None:
        operation["requestBody"] = {
            "required": spec.body_required,
            "content": {"application/json": {"schema": _ref(spec.body)}},
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
            "schemas": _component_schemas(routes),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }
