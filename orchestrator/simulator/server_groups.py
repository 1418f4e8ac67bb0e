"""ECS server groups (fleet-safety-api.md section 10): ListServerGroups with its `limit` and
`marker` paging, and ShowServerGroup.

The simulator keeps no group of its own: a group exists while at least one listed server names
it (`server_group` in the inventory), its members are those servers in listing order, and the
rest is fixed: name `sim-group-<first 8 characters of its id>`, the one documented policy
(`anti-affinity`), no metadata. Groups come in the order of their ids, so a marker stays valid
whatever servers are added between two pages.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from orchestrator.simulator.replies import ApiError, Reply, ecs_error, invalid
from orchestrator.simulator.servers import MAX_LIST_LIMIT, SimServer
from orchestrator.simulator.shared import JsonObject

POLICY = "anti-affinity"
NAME_PREFIX = "sim-group-"


def server_groups(servers: Iterable[SimServer]) -> dict[str, list[str]]:
    """Group id -> the ids of its members (in the order `servers` come), groups by id."""
    members: dict[str, list[str]] = {}
    for server in servers:
        if server.server_group is not None:
            members.setdefault(server.server_group, []).append(server.id)
    return {group_id: members[group_id] for group_id in sorted(members)}


def group_body(group_id: str, members: list[str]) -> JsonObject:
    """One group as both calls show it (the ShowServerGroup and ListServerGroups entries have
    the same five keys)."""
    return {
        "id": group_id,
        "name": NAME_PREFIX + group_id[:8],
        "members": list(members),
        "metadata": {},
        "policies": [POLICY],
    }


def list_server_groups(groups: Mapping[str, list[str]], query: Mapping[str, str]) -> Reply:
    """ListServerGroups: every group without `limit`; with it, at most `limit` after `marker`
    and, when more follow, `page_info.next_marker` (the last id on this page). The last page
    has no `page_info`: a client may stop on its absence or on a short page."""
    raw_limit, marker = query.get("limit"), (query.get("marker") or "").lower()
    if raw_limit is None or raw_limit == "":
        if marker:
            return invalid("marker must be used together with limit.")
        return {"server_groups": [group_body(gid, members) for gid, members in groups.items()]}
    try:
        limit = int(raw_limit)
    except ValueError:
        return invalid("limit must be an integer.")
    if not 1 <= limit <= MAX_LIST_LIMIT:
        return invalid(f"limit must be within [1, {MAX_LIST_LIMIT}].")
    ids = list(groups)
    start = 0
    if marker:
        if marker not in groups:
            return invalid(f"marker {marker} is not a known server group id.")
        start = ids.index(marker) + 1
    page = ids[start : start + limit]
    body: JsonObject = {"server_groups": [group_body(gid, groups[gid]) for gid in page]}
    if start + limit < len(ids):
        body["page_info"] = {"next_marker": page[-1]}
    return body


def show_server_group(groups: Mapping[str, list[str]], group_id: str) -> Reply:
    """ShowServerGroup: `{"server_group": ...}`, or 404 for an id no server names."""
    members = groups.get(group_id.lower())
    if members is None:
        return server_group_not_found(group_id)
    return {"server_group": group_body(group_id.lower(), members)}


def server_group_not_found(group_id: str) -> ApiError:
    """The ECS body and code of an unknown server (Ecs.0114, 404): ECS's error table has no
    code of its own for an unknown group, and this one is classified "does not exist,
    permanent" by every client that reads that table."""
    return ecs_error("Ecs.0114", f"The server group {group_id} does not exist.", status=404)
