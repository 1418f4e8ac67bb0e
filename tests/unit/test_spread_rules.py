"""Failure domains, pure (domain/spread): domain values from facts, limits per domain, which
pending servers a claim may take, and waves made one per domain (issue 15, parts 1 and 2)."""

from __future__ import annotations

import pytest

from orchestrator.domain.spread import (
    Candidate,
    DomainWaves,
    SpreadRule,
    domain_limit,
    domain_sizes,
    domain_value,
    domains_of,
    kind_problem,
    pick,
    wave_of_each_by_domain,
)

FACTS = {"availability_zone": "az-a", "server_group": "g-1", "tags": ["app=web", "env=prod"]}


def test_domain_values_come_from_the_frozen_facts_and_unknown_is_its_own() -> None:
    assert domain_value("availability_zone", FACTS) == "az-a"
    assert domain_value("server_group", FACTS) == "g-1"
    assert domain_value("tag:app", FACTS) == "web"
    assert domain_value("tag:team", FACTS) is None
    assert domains_of(["tag:team", "availability_zone"], FACTS, "s-9") == {
        "tag:team": "unknown:s-9",
        "availability_zone": "az-a",
    }
    assert domains_of(["availability_zone"], None, "s-1") == {"availability_zone": "unknown:s-1"}


@pytest.mark.parametrize("kind", ["availability_zone", "server_group", "tag:app"])
def test_known_kinds(kind: str) -> None:
    assert kind_problem(kind) is None


@pytest.mark.parametrize("kind", ["zone", "tag:", "server-group", ""])
def test_unknown_kinds(kind: str) -> None:
    assert kind_problem(kind)


def test_limits_are_counts_or_percentages_of_the_domain_at_least_one() -> None:
    assert domain_limit(SpreadRule("availability_zone", 5), 100) == 5
    assert domain_limit(SpreadRule("availability_zone", "10%"), 100) == 10
    assert domain_limit(SpreadRule("availability_zone", "10%"), 5) == 1  # rounded up
    assert domain_limit(SpreadRule("availability_zone", "14%"), 450) == 63  # exact
    assert domain_limit(SpreadRule("server_group", 0), 3) == 1


def zones(*values: str) -> list[dict[str, str]]:
    return [{"availability_zone": v} for v in values]


def test_a_claim_takes_in_order_only_what_every_domain_allows() -> None:
    rules = [SpreadRule("availability_zone", 2)]
    candidates = [Candidate(i, d) for i, d in enumerate(zones("a", "a", "a", "b", "b", "c"))]
    sizes = domain_sizes(zones("a", "a", "a", "b", "b", "c"))
    assert pick(candidates, zones("a"), rules, sizes, free=10) == [0, 3, 4, 5]
    assert pick(candidates, [], rules, sizes, free=3) == [0, 1, 3]  # the batch's own limit


def test_two_rules_hold_together() -> None:
    rules = [SpreadRule("availability_zone", 5), SpreadRule("server_group", 1)]
    servers = [
        {"availability_zone": "a", "server_group": "g1"},
        {"availability_zone": "a", "server_group": "g1"},  # its group is taken by the first
        {"availability_zone": "a", "server_group": "g2"},
        {"availability_zone": "b", "server_group": "unknown:s3"},  # its own group
        {"availability_zone": "b", "server_group": "unknown:s4"},
    ]
    candidates = [Candidate(i, d) for i, d in enumerate(servers)]
    assert pick(candidates, [], rules, domain_sizes(servers), free=50) == [0, 2, 3, 4]
    in_flight = [{"availability_zone": "a", "server_group": "g2"}]
    assert pick(candidates, in_flight, rules, domain_sizes(servers), free=50) == [0, 3, 4]


def test_waves_by_domain_in_name_order_or_the_given_one_with_waves_inside_each() -> None:
    values = ["b", "a", "b", "a", "a", "unknown:s5", "c"]
    numbers, labels = wave_of_each_by_domain(values, DomainWaves("availability_zone"), None)
    assert labels == ["a", "b", "c", "unknown"]
    assert numbers == [2, 1, 2, 1, 1, 4, 3]
    numbers, labels = wave_of_each_by_domain(
        values, DomainWaves("availability_zone", order=("c", "b")), [1, "100%"]
    )
    assert labels == ["c", "b", "b", "a", "a", "unknown"]
    assert numbers == [2, 4, 3, 5, 5, 6, 1]
