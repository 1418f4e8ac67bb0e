"""On-demand rollback (issue 14, part 2): a new batch of kind `rollback`, linked to its parent,
whose every server is changed back to its own recorded image (its backup image when one was
made and still exists, else the image it ran just before the parent's changeos).

Only servers the parent actually sent a change to have a recorded image; the rest cannot be
rolled back and are named in the 400. The new batch is taken in like any other (pre-flight,
conflicts, waves, in-flight, budget, pause), so a rollback is as safe as the change it undoes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.db.models import Batch, BatchServer
from orchestrator.domain.states import TERMINAL_SERVER_STATES
from orchestrator.errors import NotFound
from orchestrator.services.batches import RequestInvalidError, RetrySource, retry_payload
from orchestrator.services.verification import rollback_image_of
from orchestrator.services.views import batch_view

# What a rollback request may say: which servers (by id, or by state; neither: every server
# the parent changed), the login for the old OS, and the rollout controls.
ROLLBACK_FIELDS = frozenset(
    {"servers", "states", "os_change", "policy", "on_conflict", "notify_url"}
)
# Login fields only: the images are each server's own.
ROLLBACK_OS_CHANGE_FIELDS = frozenset({"keyname", "adminpass", "userid", "metadata", "mode"})
ROLLBACK_STATES = frozenset(state.value for state in TERMINAL_SERVER_STATES)


@dataclass(frozen=True)
class RollbackSource:
    batch: dict[str, Any]
    images: dict[str, str]  # server id -> the image it goes back to, in the parent's order


def _selection(body: Mapping[str, Any]) -> tuple[list[str] | None, list[str] | None]:
    servers, states = body.get("servers"), body.get("states")
    if servers is not None and states is not None:
        raise RequestInvalidError({"servers": "give servers or states, not both"})
    if servers is not None and (
        not isinstance(servers, list) or not servers or not all(isinstance(s, str) for s in servers)
    ):
        raise RequestInvalidError({"servers": "a non-empty list of server ids"})
    if states is not None and (
        not isinstance(states, list)
        or not states
        or not all(isinstance(s, str) and s in ROLLBACK_STATES for s in states)
    ):
        raise RequestInvalidError(
            {"states": "a non-empty list of: " + ", ".join(sorted(ROLLBACK_STATES))}
        )
    return servers, states


def rollback_source(
    sessions: sessionmaker[Session], batch_id: str, body: Mapping[str, Any]
) -> RollbackSource:
    """The parent and, for each server asked for, the image it goes back to."""
    servers, states = _selection(body)
    with sessions() as session:
        batch = session.get(Batch, batch_id)
        if batch is None:
            raise NotFound(f"batch {batch_id} does not exist")
        query = select(BatchServer).where(BatchServer.batch_id == batch_id)
        if states is not None:
            query = query.where(BatchServer.state.in_(states))
        if servers is not None:
            query = query.where(BatchServer.server_id.in_([s.lower() for s in servers]))
        rows = list(session.scalars(query.order_by(BatchServer.position)))
        view = batch_view(batch)
    images = {row.server_id: image for row in rows if (image := rollback_image_of(row))}
    if servers is not None:
        known = {row.server_id: row for row in rows}
        problems: dict[str, str] = {}
        for index, server in enumerate(servers):
            row = known.get(server.lower())
            if row is None:
                problems[f"servers[{index}]"] = f"not a server of batch {batch_id}"
            elif server.lower() not in images:
                problems[f"servers[{index}]"] = (
                    f"no recorded image to go back to: batch {batch_id} never sent it a change"
                )
        if problems:
            raise RequestInvalidError(problems)
    if not images:
        where = f" in {', '.join(states)}" if states else ""
        raise RequestInvalidError(
            {
                "states" if states else "servers": f"no server of batch {batch_id}{where} "
                "was sent a change: nothing to roll back"
            }
        )
    return RollbackSource(view, images)


def rollback_payload(source: RollbackSource, body: Mapping[str, Any]) -> dict[str, Any]:
    """The request a rollback amounts to, validated like any submission: the parent's login
    (or the one given), its rollout controls unless overridden, and one of the images (the
    request form needs one; each server is sent its own)."""
    os_change = body.get("os_change")
    if os_change is not None:
        if not isinstance(os_change, dict):
            raise RequestInvalidError({"os_change": "must be a JSON object"})
        images = sorted({"imageid", "images"} & set(os_change))
        if images:
            raise RequestInvalidError(
                {
                    f"os_change.{name}": "a rollback sends each server its own recorded image"
                    for name in images
                }
            )
        unknown = sorted(set(os_change) - ROLLBACK_OS_CHANGE_FIELDS)
        if unknown:
            raise RequestInvalidError({f"os_change.{k}": "unknown field" for k in unknown})
    first_image = next(iter(source.images.values()))
    overrides: dict[str, Any] = {
        name: body[name] for name in ("policy", "on_conflict", "notify_url") if name in body
    }
    if os_change is not None:
        overrides["os_change"] = {**os_change, "imageid": first_image}
    policy = overrides.get("policy")
    if isinstance(policy, dict) and policy.get("on_unhealthy") == "rollback":
        # Its previous image is the one being undone.
        raise RequestInvalidError({"policy.on_unhealthy": 'a rollback batch cannot "rollback"'})
    payload = retry_payload(RetrySource(source.batch, list(source.images), ["rollback"]), overrides)
    if os_change is None:
        payload["os_change"] = {**payload["os_change"], "imageid": first_image}
        payload["os_change"].pop("images", None)
    payload["policy"]["on_unhealthy"] = "keep"
    if not (isinstance(policy, dict) and "backup" in policy):
        payload["policy"].pop("backup", None)  # the parent's backups are what it goes back to
    return payload


def retried_images(
    sessions: sessionmaker[Session], batch_id: str, servers: list[str]
) -> dict[str, str]:
    """A retry of a rollback batch is a rollback too: each server is sent the image its row
    was going back to."""
    with sessions() as session:
        rows = session.execute(
            select(BatchServer.server_id, BatchServer.target_image).where(
                BatchServer.batch_id == batch_id, BatchServer.server_id.in_(servers)
            )
        ).all()
    images = {server_id: image for server_id, image in rows if image}
    return {server_id: images[server_id] for server_id in servers if server_id in images}
