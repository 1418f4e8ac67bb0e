"""Servers with chosen conditions (`ServerSpec`): the JSON that `POST /_sim/servers` and
`reimage simulate --inventory FILE` take, and the generated `--inventory-size` fleet.

Entry schema, every key optional: `id` (UUID), `name`, `tags` (["key=value", ...]), `status`,
`locked`, `charging_mode` ("0" | "1" | "2"), `has_system_disk`, `image_id` (UUID; default: the
seed's shared base image), `key_name`, `task_state` (the server is busy while it is set),
`busy_for_s` (busy for that long, then idle), `missing` (the id answers 404 everywhere),
`flavor_id` (one of the built-in flavors, default s6.small.1; kc1.* are Kunpeng/arm),
`system_disk_size` (GB, 1-32768, default 40), `availability_zone` (default sim-az1),
`server_group` (a lower-case UUID, or null: none; the server is a member of that anti-affinity
group, which ListServerGroups then shows).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.simulator.entries import (
    flag_field,
    parse_fields,
    parse_list,
    read_json_file,
    text_field,
    uuid_field,
)
from orchestrator.simulator.flavors import DEFAULT_FLAVOR_ID, find_flavor, flavor_ids
from orchestrator.simulator.shared import derived_uuid

CHARGING_MODES = frozenset({"0", "1", "2"})  # pay-per-use, yearly/monthly, spot
# The task a server is busy with when only `busy_for_s` is given.
DEFAULT_BUSY_TASK = "powering-on"
DEFAULT_SYSTEM_DISK_GB = 40
MAX_SYSTEM_DISK_GB = 32768
DEFAULT_AVAILABILITY_ZONE = "sim-az1"
_STATUS = re.compile(r"[A-Z][A-Z_]*")
# Lower case only, as the cloud generates them: one spelling per group keeps
# `os:scheduler_hints.group`, ListServerGroups and the per-group stats in agreement.
_LOWER_UUID = re.compile(r"[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}")


@dataclass(frozen=True)
class ServerSpec:
    """One server's resting attributes; None fields take the simulator's defaults."""

    id: str | None = None
    name: str | None = None
    tags: tuple[str, ...] = ()
    status: str = "ACTIVE"
    locked: bool = False
    charging_mode: str = "0"
    has_system_disk: bool = True
    image_id: str | None = None
    key_name: str | None = None
    task_state: str | None = None
    busy_for_s: float | None = None
    missing: bool = False
    flavor_id: str = DEFAULT_FLAVOR_ID
    system_disk_size: int = DEFAULT_SYSTEM_DISK_GB
    availability_zone: str = DEFAULT_AVAILABILITY_ZONE
    server_group: str | None = None  # the anti-affinity group it belongs to, if any

    def __post_init__(self) -> None:
        # The facts a pre-flight check reads must hold even for specs built in code.
        for key in ("flavor_id", "system_disk_size", "availability_zone", "server_group"):
            try:
                _FIELDS[key](getattr(self, key))
            except ValueError as error:
                raise ValueError(f"{key} {error}") from None


def parse_tag(tag: object) -> str:
    if not (isinstance(tag, str) and "=" in tag and not tag.startswith("=")):
        raise ValueError(f"tag {tag!r} is not a 'key=value' string")
    return tag


def parse_tags(text: str) -> tuple[str, ...]:
    """`key=value,key2=value2` as given to --inventory-tags."""
    return tuple(parse_tag(part.strip()) for part in text.split(",") if part.strip())


def _optional_text(value: object) -> str | None:
    return None if value is None else text_field(value)


def _tags(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError("must be a list of 'key=value' strings")
    return tuple(parse_tag(tag) for tag in value)


def _status(value: object) -> str:
    if not (isinstance(value, str) and _STATUS.fullmatch(value)):
        raise ValueError("must be an upper-case status such as ACTIVE, SHUTOFF or ERROR")
    return value


def _charging_mode(value: object) -> str:
    if value not in CHARGING_MODES:
        raise ValueError(f"must be one of {sorted(CHARGING_MODES)}")
    return str(value)


def _seconds(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number of seconds")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError("must be a finite number >= 0")
    return float(value)


def _flavor_id(value: object) -> str:
    if not (isinstance(value, str) and find_flavor(value)):
        raise ValueError(f"must be one of the flavors {flavor_ids()}")
    return value


def _server_group(value: object) -> str | None:
    if value is None:
        return None
    if not (isinstance(value, str) and _LOWER_UUID.fullmatch(value)):
        raise ValueError(f"must be a lower-case UUID (a server group id) or null, not {value!r}")
    return value


def _disk_size(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be an integer number of GB")
    if not 1 <= value <= MAX_SYSTEM_DISK_GB:
        raise ValueError(f"must be within [1, {MAX_SYSTEM_DISK_GB}] GB")
    return value


_FIELDS: dict[str, Callable[[object], Any]] = {
    "id": uuid_field,
    "name": text_field,
    "tags": _tags,
    "status": _status,
    "locked": flag_field,
    "charging_mode": _charging_mode,
    "has_system_disk": flag_field,
    "image_id": uuid_field,
    "key_name": _optional_text,
    "task_state": _optional_text,
    "busy_for_s": _seconds,
    "missing": flag_field,
    "flavor_id": _flavor_id,
    "system_disk_size": _disk_size,
    "availability_zone": text_field,
    "server_group": _server_group,
}


def parse_server_spec(entry: object) -> ServerSpec:
    """One entry of `{"servers": [...]}`; ValueError names the first bad or unknown key."""
    return ServerSpec(**parse_fields(entry, _FIELDS, "a server"))


def parse_inventory(data: object) -> tuple[ServerSpec, ...]:
    """`{"servers": [entry, ...]}`; ValueError says which entry is wrong and why."""
    return tuple(parse_list(data, "servers", parse_server_spec))


def load_inventory(path: str | Path) -> tuple[ServerSpec, ...]:
    """The --inventory file: the same JSON as `POST /_sim/servers` takes."""
    return parse_inventory(read_json_file(path))


def generated_inventory(seed: int, size: int, tags: Iterable[str]) -> tuple[ServerSpec, ...]:
    """`size` idle servers `web-0001`... carrying `tags`, their ids derived from the seed."""
    shared_tags = tuple(tags)
    return tuple(
        ServerSpec(
            id=derived_uuid(seed, "inventory", number),
            name=f"web-{number:04d}",
            tags=shared_tags,
        )
        for number in range(1, size + 1)
    )
