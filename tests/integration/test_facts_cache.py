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


def test_a_sweep_remembers_when_the_one_before_it_began_and_when_the_next_may(
    redis_url: str,
) -> None:
    now = [1000.0]
    cache = FactsCache(
        redis.Redis.from_url(redis_url), prefix=f"test:facts:{time.time_ns()}", clock=lambda: now[0]
    )
    assert cache.previous_sweep_at("p", "r") is None
    assert cache.next_sweep_in("p", "r") == 0.0  # never swept: now
    first = cache.begin_sweep("p", "r")
    assert first == 1000.0
    cache.store("p", "r", [server("s1")], started_at=first)
    cache.end_sweep("p", "r")
    assert cache.previous_sweep_at("p", "r") is None  # the first sweep had none before it
    now[0] = 1000.4
    # A project of one page: finished jobs get a sweep a second apart at most.
    assert abs(cache.next_sweep_in("p", "r") - 0.6) < 1e-9
    now[0] = 1001.5
    assert cache.next_sweep_in("p", "r") == 0.0
    second = cache.begin_sweep("p", "r")
    assert second is not None
    cache.store("p", "r", [server("s1")], started_at=second)
    cache.end_sweep("p", "r")
    assert cache.previous_sweep_at("p", "r") == first
