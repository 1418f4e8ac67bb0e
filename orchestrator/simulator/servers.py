"""Servers: their resting attributes (`SimServer`), the live state derived from their jobs
(`observe`: status, image, system disk), the ShowServer body, the registry that holds them in
listing order, and ListServersDetails' filters and paging.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from orchestrator.simulator.flavors import Flavor, server_flavor
from orchestrator.simulator.images import ImageSpec
from orchestrator.simulator.inventory import DEFAULT_BUSY_TASK, ServerSpec
from orchestrator.simulator.jobs import SimJob
from orchestrator.simulator.replies import ApiError, invalid
from orchestrator.simulator.shared import JsonObject, Timestamps, derived_uuid

DEFAULT_LIST_LIMIT = 25
MAX_LIST_LIMIT = 1000

# ListServersDetails documents these aliases: a server in transition matches its resting state.
_STATUS_FILTER = {
    "ACTIVE": frozenset({"ACTIVE", "REBOOT", "REBUILD", "MIGRATING", "RESIZE"}),
    "SHUTOFF": frozenset({"SHUTOFF", "RESIZE", "REBUILD"}),
}
_VM_STATE = {"ACTIVE": "active", "SHUTOFF": "stopped", "ERROR": "error"}
_POWER_STATE = {"ACTIVE": 1, "SHUTOFF": 4}
SYSTEM_DISK_DEVICE = "/dev/vda"


@dataclass
class SimServer:
    """A server at rest. Its live status and image are derived from its jobs, never stored."""

    id: str
    name: str
    status: str
    image_id: str
    locked: bool
    charging_mode: str
    has_system_disk: bool
    tags: tuple[str, ...]
    key_name: str | None
    created_at: float
    flavor_id: str
    system_disk_size: int  # GB, before any change of OS
    availability_zone: str
    task_state: str | None = None  # busy with another operation while set...
    busy_until: float | None = None  # ...until then (None: until the server is replaced)
    missing: bool = False  # answers 404 everywhere and is never listed
    # Jobs of rank below this ended before the server was last replaced: its spec supersedes them.
    first_job: int = 0
    server_group: str | None = None  # the id (lower case) of its anti-affinity group, if any

    def busy_task(self, now: float) -> str | None:
        if self.task_state is None or (self.busy_until is not None and now >= self.busy_until):
            return None
        return self.task_state


@dataclass(frozen=True)
class Observed:
    """A server as the API shows it at one moment."""

    status: str  # REBUILD while a job runs
    rest_status: str  # the status it has (or will have) when no job runs: drives vm_state
    task_state: str
    image_id: str
    key_name: str | None
    updated_at: float
    # How many system disks the server has had since it was (re)defined: every change of OS,
    # failed or not, deletes the old one and creates another (fleet-safety-api.md section 11).
    disk_generation: int = 0
    disk_size: int = 40  # GB of the current system disk
    disk_created_at: float = 0.0


def observe(server: SimServer, jobs: Sequence[SimJob], now: float) -> Observed:
    """Replay the server's jobs up to `now` on top of its resting attributes."""
    rest_status, running = server.status, False
    image_id, key_name, updated_at = server.image_id, server.key_name, server.created_at
    disks, disk_size, disk_created_at = 0, server.system_disk_size, server.created_at
    for job in jobs[server.first_job :]:
        # Accepted: the server goes into REBUILD at once, and its system disk is replaced.
        updated_at, disks = job.created_at, disks + 1
        disk_size, disk_created_at = job.disk_size, job.created_at
        if not job.is_final(now):
            running = True
            continue
        updated_at = job.finished_at
        if job.fails:
            # A failed change leaves the old image and the server in ERROR, on a disk that was
            # half built: it is not "untouched", and only an operator may try again.
            rest_status = "ERROR"
            continue
        if job.broken:
            rest_status = "ERROR"  # "succeeded", yet the server is broken on its old image
            continue
        rest_status, image_id, key_name = server.status, job.image_id, job.key_name or key_name
    status, task_state = "REBUILD", "rebuilding"
    if not running:
        status, task_state = rest_status, server.busy_task(now) or ""
    return Observed(
        status=status,
        rest_status=rest_status,
        task_state=task_state,
        image_id=image_id,
        key_name=key_name,
        updated_at=updated_at,
        disk_generation=disks,
        disk_size=disk_size,
        disk_created_at=disk_created_at,
    )


class ServerRegistry:
    """Every server the simulated project has, in listing order (the order they first appeared,
    kept when one is replaced), so "after the marker" is stable across pages."""

    def __init__(self, seed: int, base_image_id: str) -> None:
        self._seed = seed
        self._base_image_id = base_image_id
        self._servers: dict[str, SimServer] = {}
        self._position: dict[str, int] = {}
        self._generated = 0

    def __len__(self) -> int:
        return len(self._servers)

    def get(self, server_id: str) -> SimServer | None:
        """The server, `missing` ones included."""
        return self._servers.get(server_id)

    def listed(self) -> Iterator[SimServer]:
        return (server for server in self._servers.values() if not server.missing)

    def __iter__(self) -> Iterator[SimServer]:
        return iter(self._servers.values())

    def after(self, servers: Iterable[SimServer], marker: str) -> list[SimServer] | None:
        """Those of `servers` listed after `marker`; None when no server has that id."""
        start = self._position.get(marker)
        if start is None:
            return None
        return [server for server in servers if self._position[server.id] > start]

    def new_id(self) -> str:
        """A fresh id derived from the seed, so a replayed test sees the same ids."""
        while True:
            self._generated += 1
            server_id = derived_uuid(self._seed, "added", self._generated - 1)
            if server_id not in self._servers:
                return server_id

    def create(self, server_id: str, now: float) -> SimServer:
        """A default server: idle, ACTIVE, pay-per-use, on the base image."""
        return self.put(ServerSpec(id=server_id), now)

    def preview(self, server_id: str, now: float) -> SimServer:
        """The default server `create` would make, without registering it."""
        return self.build(ServerSpec(id=server_id), now)

    def put(self, spec: ServerSpec, now: float, *, first_job: int = 0) -> SimServer:
        """Add the server `spec` describes, or replace the one with its id."""
        server = self.build(spec, now, first_job=first_job)
        self._position.setdefault(server.id, len(self._position))
        self._servers[server.id] = server
        return server

    def build(self, spec: ServerSpec, now: float, *, first_job: int = 0) -> SimServer:
        """The server `spec` describes, registered nowhere."""
        server_id = spec.id or self.new_id()
        task_state = spec.task_state
        busy_until = None
        if spec.busy_for_s is not None:
            task_state = task_state or DEFAULT_BUSY_TASK
            busy_until = now + spec.busy_for_s
        return SimServer(
            id=server_id,
            name=spec.name if spec.name is not None else f"ecs-{server_id[:8]}",
            status=spec.status,
            # One shared image, as a real fleet runs few distinct images.
            image_id=spec.image_id or self._base_image_id,
            locked=spec.locked,
            charging_mode=spec.charging_mode,
            has_system_disk=spec.has_system_disk,
            tags=spec.tags,
            key_name=spec.key_name,
            created_at=now,
            task_state=task_state,
            busy_until=busy_until,
            missing=spec.missing,
            first_job=first_job,
            flavor_id=spec.flavor_id,
            system_disk_size=spec.system_disk_size,
            availability_zone=spec.availability_zone,
            server_group=spec.server_group,
        )


def server_body(
    server: SimServer,
    seen: Observed,
    *,
    flavor: Flavor,
    image: ImageSpec,
    seed: int,
    project_id: str,
    ak: str,
    timestamps: Timestamps,
) -> JsonObject:
    """The ShowServer shape captured from the SDK, every key included; `image` describes the
    image the server is on now."""
    vpc_id = derived_uuid(seed, project_id, "vpc")
    nic = hashlib.sha256(f"{seed}:{server.id}:nic".encode()).digest()
    return {
        "id": server.id,
        "name": server.name,
        "status": seen.status,
        "addresses": {
            vpc_id: [
                {
                    "version": "4",
                    "addr": f"192.168.{nic[0]}.{nic[1] % 250 + 2}",
                    "OS-EXT-IPS:type": "fixed",
                    "OS-EXT-IPS-MAC:mac_addr": "fa:16:3e:" + nic[2:5].hex(":"),
                    "OS-EXT-IPS:port_id": derived_uuid(seed, server.id, "port"),
                    "primary": True,
                }
            ]
        },
        "image": {"id": seen.image_id},
        "flavor": server_flavor(flavor),
        "key_name": seen.key_name,
        "metadata": {
            "metering.image_id": seen.image_id,
            "metering.imagetype": "gold" if image.visibility == "public" else "private",
            "image_name": image.name,
            "os_type": image.os_type,
            "charging_mode": server.charging_mode,
            "vpc_id": vpc_id,
        },
        "OS-EXT-STS:vm_state": _VM_STATE.get(seen.rest_status, seen.rest_status.lower()),
        "OS-EXT-STS:task_state": seen.task_state,
        "OS-EXT-STS:power_state": _POWER_STATE.get(seen.rest_status, 0),
        "OS-EXT-AZ:availability_zone": server.availability_zone,
        "tenant_id": project_id,
        "user_id": uuid.UUID(derived_uuid(seed, ak, "user")).hex,
        "created": timestamps.iso_seconds(server.created_at),
        "updated": timestamps.iso_seconds(seen.updated_at),
        "os-extended-volumes:volumes_attached": (
            [
                {
                    "id": system_disk_id(seed, server.id, seen.disk_generation),
                    "delete_on_termination": "true",
                    "bootIndex": "0",
                    "device": SYSTEM_DISK_DEVICE,
                }
            ]
            if server.has_system_disk
            else []
        ),
        "locked": server.locked,
        "tags": list(server.tags),
        # As the cloud shows it: a list with the one group of a grouped server, else empty.
        "os:scheduler_hints": (
            {"group": [server.server_group]} if server.server_group is not None else {}
        ),
        "sys_tags": [{"key": "_sys_enterprise_project_id", "value": "0"}],
        "enterprise_project_id": "0",
    }


def system_disk_id(seed: int, server_id: str, generation: int) -> str:
    """The volume id of the server's system disk after `generation` changes of OS."""
    if generation == 0:
        return derived_uuid(seed, server_id, "system-disk")
    return derived_uuid(seed, server_id, "system-disk", generation)


def server_filter(
    query: Mapping[str, str], status_of: Callable[[SimServer], str]
) -> Callable[[SimServer], bool]:
    """ListServersDetails' filters; `status_of` gives a server's live status."""
    server_ids = query.get("server_id")
    if server_ids:  # documented: server_id overrides every other filter
        wanted = frozenset(server_ids.split(","))
        return lambda server: server.id in wanted
    checks: list[Callable[[SimServer], bool]] = []
    name = query.get("name")
    if name:
        checks.append(lambda server: name in server.name)
    status = query.get("status")
    if status:
        allowed = _STATUS_FILTER.get(status, frozenset({status}))
        checks.append(lambda server: status_of(server) in allowed)
    tag = query.get("tags")
    if tag:
        checks.append(lambda server: tag in server.tags)
    not_tag = query.get("not-tags")
    if not_tag:
        checks.append(lambda server: not_tag not in server.tags)
    flavor = query.get("flavor")
    if flavor:
        checks.append(lambda server: server.flavor_id == flavor)
    if len(checks) == 1:  # the usual case, and a listing of a large fleet calls it per server
        return checks[0]
    return lambda server: all(check(server) for check in checks)


def parse_paging(query: Mapping[str, str]) -> tuple[int, int] | ApiError:
    """(limit, page number) from ListServersDetails' `limit` and deprecated `offset`."""
    try:
        limit = int(query.get("limit") or DEFAULT_LIST_LIMIT)
        page = int(query.get("offset") or 1)
    except ValueError:
        return invalid("limit and offset must be integers.")
    if not 1 <= limit <= MAX_LIST_LIMIT:
        return invalid(f"limit must be within [1, {MAX_LIST_LIMIT}].")
    if page < 0:
        return invalid("offset must be >= 0.")
    return limit, page
