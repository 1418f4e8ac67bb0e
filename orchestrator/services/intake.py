"""Taking a batch in: the listed servers and those its selector resolves to, each once and
within the batch size limit; then either the dry run's report, or the batch stored."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.runtime import Runtime
from orchestrator.services import batches
from orchestrator.services import targets as targets_service
from orchestrator.services.batches import NewBatch, RequestInvalidError

log = logging.getLogger("reimage.intake")


@dataclass(frozen=True)
class Intake:
    """What the caller gets back: the batch (or the dry run's report), and whether it is new."""

    body: dict[str, Any]
    created: bool


async def resolve_targets(
    rt: Runtime,
    new: NewBatch,
    selector: targets_service.Selector | None,
) -> tuple[str, ...]:
    """The listed servers, then whatever the selector adds, each once, frozen for good."""
    found: Sequence[str] = ()
    if selector is not None:
        found = await targets_service.resolve_selector(
            rt, project_id=new.project_id, region=new.region, selector=selector
        )
    listed = set(new.servers)
    targets = [*new.servers, *(server for server in found if server not in listed)]
    if selector is not None and not targets:
        raise RequestInvalidError({"selector": "matched no servers"})
    limit = rt.settings.max_servers_per_batch
    if len(targets) > limit:
        raise RequestInvalidError(
            {"selector": f"matched {len(targets)} servers, at most {limit} per batch"}
        )
    return tuple(targets)


async def take_in(
    rt: Runtime,
    new: NewBatch,
    *,
    selector: targets_service.Selector | None,
    dry_run: bool,
    idempotency_key: str | None,
    parent_id: str | None,
    actor: str,
    run_blocking: Any,
) -> Intake:
    """Resolve the targets, then answer the dry run or store the batch (`run_blocking` runs
    the synchronous database work off the event loop, with the caller's deadline)."""
    new = dataclasses.replace(new, servers=await resolve_targets(rt, new, selector))
    if dry_run:
        report = await targets_service.dry_run(
            rt,
            project_id=new.project_id,
            region=new.region,
            servers=new.servers,
            os_change=new.os_change,
            policy=new.policy,
            on_conflict=new.on_conflict,
            selector=new.selector,
        )
        return Intake(report, created=False)
    secret_key = rt.settings.secret_key
    result: batches.CreatedBatch = await run_blocking(
        batches.create_batch,
        rt.sessions,
        new,
        now=rt.clock(),
        secret_key=secret_key.get_secret_value() if secret_key else None,
        idempotency_key=idempotency_key,
        parent_id=parent_id,
    )
    if result.created:
        log.info(
            "batch accepted",
            extra={
                "batch_id": result.batch["id"],
                "project_id": new.project_id,
                "servers": len(new.servers),
                "actor": actor,
            },
        )
    return Intake(result.batch, created=result.created)


async def take_in_retry(
    rt: Runtime,
    parent_id: str,
    overrides: dict[str, Any],
    *,
    parse: Callable[[dict[str, Any]], NewBatch],
    dry_run: bool,
    idempotency_key: str | None,
    actor: str,
    run_blocking: Any,
) -> Intake:
    """A retry: a new batch (child of `parent_id`) of the parent's servers in the states asked
    for, with the parent's change and policy unless overridden. `parse` validates the request
    this amounts to exactly as a submission is validated (the caller's rules)."""
    source = await run_blocking(
        batches.retry_source, rt.sessions, parent_id, overrides.get("states")
    )
    new = parse(batches.retry_payload(source, overrides))
    return await take_in(
        rt,
        new,
        selector=None,
        dry_run=dry_run,
        idempotency_key=idempotency_key,
        parent_id=parent_id,
        actor=actor,
        run_blocking=run_blocking,
    )
