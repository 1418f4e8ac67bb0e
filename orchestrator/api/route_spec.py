"""What one route declares: method, path, handler, the role it needs, its audit action and how
project scope applies (the table itself is `routes.py`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from orchestrator.api.errors import Handler
from orchestrator.domain.access import Role

# How a route meets project scope: "batch" routes answer 404 for another project's batch;
# "create" answers 403 for a project outside the token's scope; "filter" lists only what the
# token may see; "none" has no project (tokens, audit, health).
Scope = Literal["batch", "create", "filter", "none"]


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
