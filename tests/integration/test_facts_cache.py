"""The facts cache on a real Redis: freshness decides, stale facts never answer."""

from __future__ import annotations

import time

import redis

from orchestrator.cloud.facts import FactsCache
from orchestrator.cloud.models import Server


def server(server_id: str, image: str = "img-new") -> Server:
    return Server(
        id=server_id,
        name="n",
        status="SHUTOFF",
        vm_state="stopped",
        task_state=None,
        image_id=image,
        charging_mode="0",
        locked=False,
        has_system_disk=True,
        tags=("a=b",),
    )


def test_lookup_respects_freshness_and_sweep_rules(redis_url: str) -> None:
    cache = FactsCache(redis.Redis.from_url(redis_url))
    assert cache.lookup("p", "r", "s1", observed_after=0) is None
    assert cache.worth_sweeping("p", "r", servers_needing_facts=5, min_interval_s=0)
    assert not cache.worth_sweeping("p", "r", servers_needing_facts=4, min_interval_s=0)
    started = cache.begin_sweep("p", "r")
    assert started is not None and cache.begin_sweep("p", "r") is None  # one at a time
    cache.store("p", "r", [server("S1"), server("s2")], started_at=started)
    cache.end_sweep("p", "r")
    found = cache.lookup("p", "r", "s1", observed_after=started - 1)
    assert found == server("S1")
    assert cache.lookup("p", "r", "s1", observed_after=started + 1) is None  # too old
    assert cache.lookup("p", "r", "s3", observed_after=0) is None
    assert cache.project_pages("p", "r") == 1
    assert not cache.worth_sweeping("p", "r", servers_needing_facts=100, min_interval_s=60)
    cache.want("p", "r")
    assert cache.worth_sweeping("p", "r", servers_needing_facts=0, min_interval_s=0)
    cache.end_sweep("p", "r", failed=True)  # the list API was refused: stop sweeping
    assert not cache.worth_sweeping("p", "r", servers_needing_facts=100, min_interval_s=0)
    assert time.time() >= started
