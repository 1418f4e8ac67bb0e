"""Which servers a batch targets: a selector resolved through the list API into a frozen list,
and the dry run's report of what a real run would do with each (pre-flight verdicts)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from orchestrator.cloud.models import Server
from orchestrator.domain.health import TargetError, expand
from orchestrator.domain.policy import RolloutPolicy
from orchestrator.domain.preflight import CHARGING_NAMES, Judgement, Verdict
from orchestrator.domain.rollout import allowed_failures
from orchestrator.domain.spread import is_unknown
from orchestrator.runtime import Runtime
from orchestrator.services.batches import (
    NewBatch,
    ServerPlan,
    active_conflicts,
    waves_and_domains,
)
from orchestrator.services.preflight import Abandoned, FleetFacts


class Selector(Protocol):
    @property
    def tags(self) -> Sequence[str]: ...

    @property
    def not_image(self) -> str | None: ...

    def list_filters(self) -> dict[str, str]: ...


async def resolve_selector(
    rt: Runtime,
    *,
    project_id: str,
    region: str,
    selector: Selector,
    abandoned: Callable[[], bool] = lambda: False,
) -> tuple[list[Server], int]:
    """Every server the list API returns for the selector, in the cloud's order (the facts
    pre-flight reads, so they are not read again). The API filters by one tag; further tags
    and `not_image` are checked here. Also answers the list calls it made; stops (`Abandoned`)
    once `abandoned()` says the caller has gone."""
    wanted_tags = set(selector.tags)
    found: list[Server] = []
    calls = Counter[str]()
    async with rt.http.cloud() as http:
        client = rt.ecs_client(http, project_id=project_id, region=region)
        async for server in client.list_servers(selector.list_filters(), calls=calls):
            if abandoned():
                raise Abandoned
            if not wanted_tags <= set(server.tags):
                continue
            if selector.not_image and server.image_id == selector.not_image:
                continue
            found.append(server)
    return found, calls["list"]


def dry_run_report(
    rt: Runtime,
    new: NewBatch,
    fleet: FleetFacts,
    judgements: Mapping[str, Judgement],
) -> dict[str, Any]:
    """What a real submission would do, server by server: nothing is stored, nothing sent."""
    with rt.sessions() as session:
        conflicts = {c["server_id"]: c["batch_id"] for c in active_conflicts(session, new.servers)}
    rollout = RolloutPolicy.from_json(new.policy)
    reports = []
    check = rollout.health
    allowed_hosts = rt.settings.health_allowed_hosts
    planned = dataclasses.replace(
        new, plans={sid: ServerPlan(None, fleet.frozen(sid)) for sid in new.servers}
    )
    waves, domains, batch_domains = waves_and_domains(planned)
    for server_id, judgement in judgements.items():
        report = server_report(server_id, judgement, fleet)
        server = fleet.servers.get(server_id)
        if check is not None and server is not None:
            # The same expansion the gate makes after the change: a probe that could never
            # run shows here, before anything is sent.
            try:
                report["probe_target"] = expand(
                    check.kind, check.target, server.probe_target(), allowed_hosts
                )
            except TargetError as exc:
                report["probe_error"] = str(exc)
        if server_id in domains:
            report["domains"] = domains[server_id]
            unknown = sorted(
                kind for kind, value in domains[server_id].items() if is_unknown(value)
            )
            if unknown:  # said out loud: each such server is a domain of its own
                report["domains_unknown"] = unknown
        other = conflicts.get(server_id)
        if other:
            report["active_in_batch"] = other
            report["verdict"] = "skip" if new.on_conflict == "skip" else Verdict.CONFLICT.value
        reports.append(report)
    verdicts: Counter[str] = Counter(r["verdict"] for r in reports)
    codes: Counter[str] = Counter(
        reason.code for judgement in judgements.values() for reason in judgement.reasons
    )
    total = len(new.servers)
    return {
        "dry_run": True,
        "total": total,
        "selector": new.selector,
        "plan": {
            "waves": [waves.count(n) for n in range(1, max(waves, default=0) + 1)],
            "max_in_flight": rollout.in_flight_limit(total),
            "max_failures": allowed_failures(rollout.max_failures, total),
            "pause_after_waves": rollout.pause_after_waves,
            "wave_delay_s": rollout.wave_delay_s,
            "on_incompatible": rollout.on_incompatible,
            "health_check": rollout.health_check,
            "on_unhealthy": rollout.on_unhealthy,
            "backup": rollout.backup,
            "spread": list(rollout.spread) if rollout.spread else None,
            "waves_by": rollout.waves_by,
            "domains": batch_domains,
        },
        "verdicts": dict(verdicts),
        "codes": dict(codes),
        "cloud_calls": {**dict(fleet.calls), "total": sum(fleet.calls.values())},
        "conflicts": [{"server_id": s, "batch_id": b} for s, b in conflicts.items()],
        "servers": reports,
    }


def server_report(server_id: str, judgement: Judgement, fleet: FleetFacts) -> dict[str, Any]:
    """One server's verdict with its reasons, and the facts they were drawn from."""
    server = fleet.servers.get(server_id)
    report: dict[str, Any] = {"server_id": server_id, **judgement.as_dict()}
    if server is None:
        return {**report, "exists": False}
    frozen = fleet.frozen(server_id) or {}
    return {
        **report,
        "exists": True,
        "name": server.name,
        "status": server.status,
        "task_state": server.task_state,
        "current_image_id": server.image_id,
        "flavor_id": server.flavor_id,
        "architecture": frozen.get("architecture"),
        "availability_zone": server.availability_zone,
        "charging_mode": CHARGING_NAMES.get(server.charging_mode or "", server.charging_mode),
        "locked": server.locked,
        "system_disk_gb": frozen.get("system_disk_gb"),
    }
