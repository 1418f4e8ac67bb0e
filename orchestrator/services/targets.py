"""Which servers a batch targets: a selector resolved through the list API into a frozen list,
and the dry run that reads each server and says what a real run would do, sending nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

import aiohttp

from orchestrator.cloud.client import EcsClient
from orchestrator.cloud.errors import EcsError, Rejected
from orchestrator.cloud.models import Server
from orchestrator.domain.policy import RolloutPolicy
from orchestrator.domain.rollout import allowed_failures, plan_waves
from orchestrator.domain.verdicts import preflight_verdict
from orchestrator.runtime import Runtime
from orchestrator.services.batches import active_conflicts

CHARGING_MODES = {"0": "pay_per_use", "1": "yearly_monthly", "2": "spot"}
DRY_RUN_CONCURRENCY = 16


class Selector(Protocol):
    @property
    def tags(self) -> Sequence[str]: ...

    @property
    def not_image(self) -> str | None: ...

    def list_filters(self) -> dict[str, str]: ...


async def resolve_selector(
    rt: Runtime, *, project_id: str, region: str, selector: Selector
) -> list[str]:
    """Every server the list API returns for the selector, in the cloud's order. The API
    filters by one tag; further tags and `not_image` are checked here."""
    wanted_tags = set(selector.tags)
    found: list[str] = []
    async with aiohttp.ClientSession() as http:
        client = rt.ecs_client(http, project_id=project_id, region=region)
        async for server in client.list_servers(selector.list_filters()):
            if not wanted_tags <= set(server.tags):
                continue
            if selector.not_image and server.image_id == selector.not_image:
                continue
            found.append(server.id.lower())
    return found


def _verdict(
    server: Server, *, target: str, mode: str | None, skip_matching: bool
) -> dict[str, Any]:
    running_without_stop = server.status == "ACTIVE" and mode != "withStopServer"
    charging = CHARGING_MODES.get(server.charging_mode or "", server.charging_mode)
    problems = [
        text
        for text, present in (
            ("no system disk", not server.has_system_disk),
            ("spot-priced servers cannot change OS", charging == "spot"),
            ("locked", server.locked),
            ("running, and mode is not withStopServer", running_without_stop),
        )
        if present
    ]
    already = server.image_id == target
    busy = not server.is_idle
    # The same pre-flight decision the send path makes, so the dry run predicts it exactly.
    preflight = preflight_verdict(
        server.snapshot(), target_image=target, skip_matching=skip_matching
    )
    verdict = "will_fail" if problems else preflight.value
    return {
        "exists": True,
        "status": server.status,
        "task_state": server.task_state,
        "image_id": server.image_id,
        "has_system_disk": server.has_system_disk,
        "charging_mode": charging,
        "locked": server.locked,
        "running_without_stop": running_without_stop,
        "already_on_image": already,
        "busy": busy,
        "problems": problems,
        "verdict": verdict,
    }


async def _inspect(
    client: EcsClient, server_id: str, limit: asyncio.Semaphore, **rules: Any
) -> dict[str, Any]:
    async with limit:
        try:
            server = await client.show_server(server_id)
        except Rejected as exc:
            exists = exc.http_status != 404
            return {
                "server_id": server_id,
                "exists": exists,
                "error_code": exc.code,
                "problems": [exc.message],
                "verdict": "will_fail",
            }
        except EcsError as exc:
            return {
                "server_id": server_id,
                "exists": None,
                "error_code": exc.code,
                "problems": [exc.message],
                "verdict": "unknown",
            }
    return {"server_id": server_id, **_verdict(server, **rules)}


async def dry_run(
    rt: Runtime,
    *,
    project_id: str,
    region: str,
    servers: Sequence[str],
    os_change: dict[str, Any],
    policy: dict[str, Any],
    on_conflict: str,
    selector: dict[str, Any] | None,
) -> dict[str, Any]:
    """What a real submission would do: nothing is stored and no change is sent."""
    with rt.sessions() as session:
        conflicts = {c["server_id"]: c["batch_id"] for c in active_conflicts(session, servers)}
    limit = asyncio.Semaphore(DRY_RUN_CONCURRENCY)
    rollout = RolloutPolicy.from_json(policy)
    rules = {
        "target": str(os_change["imageid"]),
        "mode": os_change.get("mode"),
        "skip_matching": rollout.skip_matching,
    }
    async with aiohttp.ClientSession() as http:
        client = rt.ecs_client(http, project_id=project_id, region=region)
        reports = await asyncio.gather(*(_inspect(client, s, limit, **rules) for s in servers))
    for report in reports:
        other = conflicts.get(report["server_id"])
        if other:
            report["active_in_batch"] = other
            report["verdict"] = "skip" if on_conflict == "skip" else "conflict"
    verdicts: dict[str, int] = {}
    for report in reports:
        verdicts[report["verdict"]] = verdicts.get(report["verdict"], 0) + 1
    total = len(servers)
    return {
        "dry_run": True,
        "total": total,
        "selector": selector,
        "plan": {
            "waves": plan_waves(total, rollout.waves),
            "max_in_flight": rollout.in_flight_limit(total),
            "max_failures": allowed_failures(rollout.max_failures, total),
            "pause_after_waves": rollout.pause_after_waves,
            "wave_delay_s": rollout.wave_delay_s,
        },
        "verdicts": verdicts,
        "conflicts": [{"server_id": s, "batch_id": b} for s, b in conflicts.items()],
        "servers": reports,
    }
