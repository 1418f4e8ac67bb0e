"""Failure domains (issue 15, parts 1 and 2): which domain each server is in, how many servers
of one domain may be in flight at once, which pending servers a claim may take, and waves made
one per domain. Pure functions over the facts frozen at submission.

The anchors: BOSH's `max_in_flight` per AZ and AZ-by-AZ updates, kube-aws' AZ-at-a-time
rolling strategy, Kubernetes PodDisruptionBudgets. A domain is named by its kind
(`availability_zone`, `server_group`, or `tag:<key>`) and a value read from the server's
facts; a server whose value is unknown is a domain of its own, so a limit can never hold back
(or let through) a server because of a fact nobody knows.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from orchestrator.domain.rollout import Amount, plan_waves

DOMAIN_KINDS = ("availability_zone", "server_group")
TAG_PREFIX = "tag:"
UNKNOWN_PREFIX = "unknown:"


def kind_problem(kind: str) -> str | None:
    """Why `kind` names no domain (None: it does)."""
    if kind in DOMAIN_KINDS:
        return None
    if kind.startswith(TAG_PREFIX) and 0 < len(kind) - len(TAG_PREFIX) <= 128:
        return None
    return 'must be "availability_zone", "server_group" or "tag:<key>"'


def domain_value(kind: str, facts: Mapping[str, object] | None) -> str | None:
    """The server's value for one kind of domain, from its frozen facts (None: unknown)."""
    facts = facts or {}
    if kind in DOMAIN_KINDS:
        value = facts.get(kind)
        return str(value) if value else None
    key = kind.removeprefix(TAG_PREFIX)
    tags = facts.get("tags")
    for tag in tags if isinstance(tags, list | tuple) else ():
        name, sep, value = str(tag).partition("=")
        if sep and name == key:
            return value
    return None


def domains_of(
    kinds: Iterable[str], facts: Mapping[str, object] | None, server_id: str
) -> dict[str, str]:
    """Every asked-for domain of one server; an unknown one is the server's own."""
    return {kind: domain_value(kind, facts) or f"{UNKNOWN_PREFIX}{server_id}" for kind in kinds}


def is_unknown(value: str) -> bool:
    return value.startswith(UNKNOWN_PREFIX)


@dataclass(frozen=True)
class SpreadRule:
    """At no moment more than `max_in_flight` servers of one value of `by` in flight."""

    by: str
    max_in_flight: Amount


def domain_sizes(servers: Iterable[Mapping[str, str]]) -> dict[str, dict[str, int]]:
    """How many of the batch's servers each domain value has, per kind."""
    sizes: dict[str, Counter[str]] = {}
    for domains in servers:
        for kind, value in domains.items():
            sizes.setdefault(kind, Counter())[value] += 1
    return {kind: dict(counts) for kind, counts in sizes.items()}


def domain_limit(rule: SpreadRule, size: int) -> int:
    """A count as given; a percentage of the domain's servers in the batch, rounded up and at
    least 1 (a domain is never closed for good by a percentage)."""
    amount = rule.max_in_flight
    if isinstance(amount, str):
        return max(1, math.ceil(size * Fraction(amount.rstrip("%")) / 100))
    return max(1, int(amount))


@dataclass(frozen=True)
class Candidate:
    row_id: int
    domains: Mapping[str, str]


def pick(
    candidates: Sequence[Candidate],
    in_flight: Iterable[Mapping[str, str]],
    rules: Sequence[SpreadRule],
    sizes: Mapping[str, Mapping[str, int]],
    free: int,
) -> list[int]:
    """The pending servers a claim may take now, in the order given (submission order): each
    only while every one of its domains is below its limit, counting those already in flight
    and those taken before it; at most `free` (the batch's own in-flight room)."""
    counts: Counter[tuple[str, str]] = Counter()
    for domains in in_flight:
        for kind, value in domains.items():
            counts[(kind, value)] += 1
    limits: dict[tuple[str, str], int] = {}

    def limit(rule: SpreadRule, value: str) -> int:
        key = (rule.by, value)
        if key not in limits:
            limits[key] = domain_limit(rule, int(sizes.get(rule.by, {}).get(value, 1)))
        return limits[key]

    taken: list[int] = []
    for candidate in candidates:
        if len(taken) >= free:
            break
        keys = [(rule, candidate.domains.get(rule.by, "")) for rule in rules]
        if all(counts[(rule.by, value)] < limit(rule, value) for rule, value in keys):
            taken.append(candidate.row_id)
            for rule, value in keys:
                counts[(rule.by, value)] += 1
    return taken


@dataclass(frozen=True)
class DomainWaves:
    """`waves_by`: one group of waves per domain value, in this order."""

    by: str
    order: tuple[str, ...] = ()


def wave_of_each_by_domain(
    values: Sequence[str], waves_by: DomainWaves, spec: Sequence[Amount] | None
) -> tuple[list[int], list[str]]:
    """The wave number (from 1) of each server position, and the domain value of each wave.

    Domain values come in `order` first, then the rest by name; servers whose value is unknown
    (their own domain each) come last, together, as one more domain: a wave per unknown server
    would be no rollout at all. Inside each domain, `spec` (the batch's `waves`) applies as it
    would to a whole batch, so `[1, "100%"]` gives a canary then the rest, domain by domain."""
    members: dict[str, list[int]] = {}
    for position, value in enumerate(values):
        members.setdefault("unknown" if is_unknown(value) else value, []).append(position)
    known = [v for v in members if v != "unknown"]
    listed = [v for v in waves_by.order if v in members]
    ordered = listed + sorted(v for v in known if v not in listed)
    if "unknown" in members:
        ordered.append("unknown")
    numbers = [0] * len(values)
    labels: list[str] = []
    for value in ordered:
        positions = members[value]
        for size in plan_waves(len(positions), spec):
            labels.append(value)
            wave = len(labels)
            for position in positions[:size]:
                numbers[position] = wave
            positions = positions[size:]
    return numbers, labels
