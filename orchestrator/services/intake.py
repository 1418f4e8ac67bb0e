"""Taking a batch in: the listed servers and those its selector resolves to, each once and
within the batch size limit; pre-flight's verdict on each; then either the dry run's report,
or the batch stored (refused whole when incompatible servers meet `on_incompatible: reject`)."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.cloud.errors import EcsError
from orchestrator.cloud.models import Server
from orchestrator.domain.policy import RolloutPolicy
from orchestrator.domain.preflight import ChangeRequest, Judgement, Verdict
from orchestrator.runtime import Runtime
from orchestrator.services import backups, batches, preflight, rollbacks
from orchestrator.services import targets as targets_service
from orchestrator.services.batches import NewBatch, RequestInvalidError, ServerPlan

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
    abandoned: Callable[[], bool] = lambda: False,
) -> tuple[tuple[str, ...], dict[str, Server], int]:
    """The listed servers, then whatever the selector adds, each once, frozen for good; the
    servers the selector's sweep already read; and the list calls that sweep made."""
    found: Sequence[Server] = ()
    pages = 0
    if selector is not None:
        found, pages = await targets_service.resolve_selector(
            rt,
            project_id=new.project_id,
            region=new.region,
            selector=selector,
            abandoned=abandoned,
        )
    listed = set(new.servers)
    known = {server.id.lower(): server for server in found}
    targets = [*new.servers, *(server for server in known if server not in listed)]
    if selector is not None and not targets:
        raise RequestInvalidError({"selector": "matched no servers"})
    limit = rt.settings.max_servers_per_batch
    if len(targets) > limit:
        raise RequestInvalidError(
            {"selector": f"matched {len(targets)} servers, at most {limit} per batch"}
        )
    return tuple(targets), known, pages


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
    abandoned: Callable[[], bool] = lambda: False,
) -> Intake:
    """Resolve the targets, judge each server (pre-flight), then answer the dry run or store
    the batch (`run_blocking` runs the synchronous database work off the event loop, with the
    caller's deadline). `abandoned`: the caller has gone; stop reading the cloud."""
    servers, known, selector_pages = await resolve_targets(rt, new, selector, abandoned)
    new = dataclasses.replace(new, servers=servers)
    if idempotency_key and not dry_run:
        # A replay answers the batch it made without judging the fleet again.
        replayed = await run_blocking(batches.replay, rt.sessions, idempotency_key, new.fingerprint)
        if replayed is not None:
            return Intake(replayed.batch, created=False)
    requests = _requests(new)
    fleet = await preflight.read_fleet(
        rt,
        project_id=new.project_id,
        region=new.region,
        server_ids=new.servers,
        image_ids=frozenset().union(*(r.image_ids for r, _ in requests)),
        known=known,
        abandoned=abandoned,
    )
    fleet.calls["list_servers"] += selector_pages
    judged: dict[str, Judgement] = {}
    for request, group in requests:
        judged.update(preflight.judge_fleet(fleet, group, request))
    judgements = {server_id: judged[server_id] for server_id in new.servers}
    quota = await _backup_quota(rt, new, judgements)
    if dry_run:
        report = targets_service.dry_run_report(rt, new, fleet, judgements)
        if quota is not None:
            report["backup_quota"] = quota
        return Intake(report, created=False)
    new = dataclasses.replace(new, plans=_plans(new, fleet, judgements))
    if quota is not None:
        backups.refuse_over_quota(quota)
    secret_key = rt.settings.secret_key
    result: batches.CreatedBatch = await run_blocking(
        batches.create_batch,
        rt.sessions,
        new,
        now=rt.clock(),
        secret_key=secret_key.get_secret_value() if secret_key else None,
        idempotency_key=idempotency_key,
        parent_id=parent_id,
        actor=actor,
    )
    if result.created:
        log.info(
            "batch accepted",
            extra={
                "batch_id": result.batch["id"],
                "project_id": new.project_id,
                "servers": len(new.servers),
                "incompatible": sum(1 for p in new.plans.values() if p.incompatible),
                "actor": actor,
            },
        )
    return Intake(result.batch, created=result.created)


async def _backup_quota(
    rt: Runtime, new: NewBatch, judgements: dict[str, Judgement]
) -> dict[str, Any] | None:
    """With policy.backup: how many backups the batch needs (every server that will be sent a
    change) against what the project's IMS quota leaves; None without backups."""
    if not RolloutPolicy.from_json(new.policy).backup:
        return None
    needed = sum(
        1 for j in judgements.values() if j.verdict not in (Verdict.WILL_FAIL, Verdict.SKIP)
    )
    try:
        return await backups.read_quota(
            rt, project_id=new.project_id, region=new.region, needed=needed
        )
    except EcsError as exc:
        raise preflight.FactsUnavailable(
            f"the IMS image quota could not be read ({exc.code}); nothing stored"
        ) from None


def _requests(new: NewBatch) -> list[tuple[ChangeRequest, list[str]]]:
    """The change each server is judged against: the batch's, or (a rollback) its own image,
    one request per distinct image."""

    def request_for(image_id: str | None) -> ChangeRequest:
        return preflight.change_request(
            new.os_change,
            cloud_init=new.cloud_init,
            skip_matching=RolloutPolicy.from_json(new.policy).skip_matching,
            has_adminpass="adminpass" in new.secrets,
            has_user_data="user_data" in new.secrets,
            image_id=image_id,
        )

    if not new.own_images:
        return [(request_for(None), list(new.servers))]
    by_image: dict[str, list[str]] = {}
    for server_id in new.servers:
        by_image.setdefault(new.own_images[server_id], []).append(server_id)
    return [(request_for(image), servers) for image, servers in by_image.items()]


def _plans(
    new: NewBatch, fleet: preflight.FleetFacts, judgements: dict[str, Judgement]
) -> dict[str, ServerPlan]:
    """Each server's image and facts; incompatible servers refuse the batch (`reject`, 422,
    nothing stored) or are stored skipped with their code (`skip`)."""
    incompatible = {s: j for s, j in judgements.items() if j.verdict is Verdict.WILL_FAIL}
    if incompatible and RolloutPolicy.from_json(new.policy).on_incompatible == "reject":
        codes: Counter[str] = Counter(
            r.code for j in incompatible.values() for r in j.reasons if r.blocking
        )
        raise preflight.Incompatible(
            f"{len(incompatible)} of {len(new.servers)} servers cannot take this change "
            '(policy.on_incompatible is "reject"; "skip" stores them skipped); nothing stored',
            {
                "codes": dict(codes),
                "servers": [
                    {
                        "server_id": server_id,
                        "codes": [r.code for r in j.reasons if r.blocking],
                        "reasons": [r.as_dict() for r in j.reasons if r.blocking],
                    }
                    for server_id, j in incompatible.items()
                ],
            },
        )
    plans: dict[str, ServerPlan] = {}
    for server_id, judgement in judgements.items():
        skip = None
        first = judgement.first_blocking
        if judgement.verdict is Verdict.WILL_FAIL and first is not None:
            skip = {
                "code": first.code,
                "message": first.message,
                "reasons": [r.as_dict() for r in judgement.reasons],
            }
        plans[server_id] = ServerPlan(judgement.image_id, fleet.frozen(server_id), skip)
    return plans


@dataclass(frozen=True)
class Child:
    """How a batch made from another one (a retry, a rollback) is validated and taken in:
    `parse` validates the request it amounts to exactly as a submission is (the caller's
    rules), `run_blocking` runs the database work off the event loop."""

    parse: Callable[[dict[str, Any]], NewBatch]
    dry_run: bool
    idempotency_key: str | None
    actor: str
    run_blocking: Any


async def _take_child(rt: Runtime, new: NewBatch, parent_id: str, child: Child) -> Intake:
    return await take_in(
        rt,
        new,
        selector=None,
        dry_run=child.dry_run,
        idempotency_key=child.idempotency_key,
        parent_id=parent_id,
        actor=child.actor,
        run_blocking=child.run_blocking,
    )


def _as_rollback(new: NewBatch, images: dict[str, str]) -> NewBatch:
    """Each server to its own image: the request form's one image is not the batch's."""
    os_change = {k: v for k, v in new.os_change.items() if k not in ("imageid", "images")}
    return dataclasses.replace(new, kind="rollback", own_images=images, os_change=os_change)


async def take_in_retry(
    rt: Runtime, parent_id: str, overrides: dict[str, Any], child: Child
) -> Intake:
    """A retry: a new batch (child of `parent_id`) of the parent's servers in the states asked
    for, with the parent's change and policy unless overridden. A retry of a rollback batch
    is a rollback again: each server to the image its row was going back to."""
    source = await child.run_blocking(
        batches.retry_source, rt.sessions, parent_id, overrides.get("states")
    )
    if source.batch.get("kind") != "rollback":
        return await _take_child(
            rt, child.parse(batches.retry_payload(source, overrides)), parent_id, child
        )
    images = await child.run_blocking(
        rollbacks.retried_images, rt.sessions, parent_id, source.servers
    )
    if not images:
        raise batches.RequestInvalidError({"states": "no server here has an image to go back to"})
    again = rollbacks.RollbackSource(source.batch, images)
    new = child.parse(rollbacks.rollback_payload(again, overrides))
    return await _take_child(rt, _as_rollback(new, images), parent_id, child)


async def take_in_rollback(
    rt: Runtime, parent_id: str, body: dict[str, Any], child: Child
) -> Intake:
    """A rollback: a new batch of kind `rollback` (child of `parent_id`) whose servers each go
    back to their own recorded image; validated and taken in like any submission."""
    source = await child.run_blocking(rollbacks.rollback_source, rt.sessions, parent_id, body)
    new = child.parse(rollbacks.rollback_payload(source, body))
    return await _take_child(rt, _as_rollback(new, source.images), parent_id, child)
