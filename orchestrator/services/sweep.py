"""List sweeps: one pass over the list API that refreshes the facts of every server of a
project and region at a cost of one call per 1000 servers."""

from __future__ import annotations

import logging

from orchestrator.cloud.errors import ConfigError, EcsError, Rejected
from orchestrator.runtime import Runtime
from orchestrator.services.control import config_error_reason, pause_project_batches

log = logging.getLogger("reimage.sweep")


async def sweep_facts(rt: Runtime, project_id: str, region: str) -> int:
    """Refresh the facts cache; answer how many servers were seen (-1: skipped or failed)."""
    if rt.facts is None:
        return -1
    started = rt.facts.begin_sweep(project_id, region)
    if started is None:
        return -1  # another sweep of this project and region is running
    failed = False
    try:
        async with rt.http.cloud() as http:
            client = rt.ecs_client(http, project_id=project_id, region=region)
            servers = [server async for server in client.list_servers({})]
        rt.facts.store(project_id, region, servers, started_at=started)
        return len(servers)
    except ConfigError as exc:
        # The same credentials submit and poll: stop this project's batches now, with the
        # cloud's reason, rather than after the first changeos is refused too.
        failed = True
        log.warning("list sweep of %s/%s refused: %s", project_id, region, exc)
        pause_project_batches(rt, project_id, region, config_error_reason(exc))
        return -1
    except Rejected as exc:
        failed = True
        log.warning("list sweep of %s/%s refused: %s", project_id, region, exc)
        return -1
    except EcsError as exc:
        log.info("list sweep of %s/%s deferred: %s", project_id, region, exc)
        return -1
    finally:
        rt.facts.end_sweep(project_id, region, failed=failed)
