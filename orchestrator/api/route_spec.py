"""What one route declares: method, path, handler, the role it needs, its audit action, how
project scope applies, its request body and its answers (the table itself is `routes.py`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel

from orchestrator.api.errors import Handler
from orchestrator.domain.access import Role

# How a route meets project scope: "batch" routes answer 404 for another project's batch;
# "create" answers 403 for a project outside the token's scope; "filter" lists only what the
# token may see; "none" has no project (tokens, audit, health).
Scope = Literal["batch", "create", "filter", "none"]


@dataclass(frozen=True)
class Answer:
    """One success answer of a route: a status, what it means, and its JSON models (or, for a
    route that answers no JSON model, its media type and the JSON type of its body)."""

    status: int
    description: str
    models: tuple[type[BaseModel], ...] = ()
    media: str = "application/json"
    body_type: str = "object"


@dataclass(frozen=True)
class RouteSpec:
    method: str
    path: str
    handler: Handler
    role: Role | None  # None: public, no token
    summary: str
    scope: Scope = "none"
    action: str | None = None  # the audit log's name for a mutating route
    creates_batch: bool = False
    tag: str = "batches"
    query: tuple[str, ...] = field(default=())
    body: type[BaseModel] | None = None  # the JSON body it takes
    body_required: bool = True  # False: the handler also accepts no body at all
    answers: tuple[Answer, ...] = ()
