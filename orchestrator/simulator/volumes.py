"""System disks (EVS): the volume JSON of ShowVolume and ListVolumes, ListVolumes' filters and
paging, and the EVS error bodies (fleet-safety-api.md sections 0 and 7).

Only system disks exist: one per server that has one, replaced by every change of OS.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

from orchestrator.simulator.images import ImageSpec
from orchestrator.simulator.replies import ApiError, Reply
from orchestrator.simulator.servers import SYSTEM_DISK_DEVICE, Observed, SimServer
from orchestrator.simulator.shared import JsonObject, Timestamps, derived_uuid, is_uuid

MAX_IDS = 60
DEFAULT_VOLUME_LIMIT = 1000
MAX_VOLUME_LIMIT = 1000


def evs_error(code: str, message: str, status: int = 400) -> ApiError:
    """`{"error": {"code": "EVS.xxxx", "message": ...}}`."""
    return ApiError(status=status, code=code, message=message, with_details=False)


def check_evs_project(project_id: str, expected: str) -> ApiError | None:
    if project_id == expected:
        return None
    return evs_error("EVS.0001", "invalid tenant id!")


def check_volume_id(volume_id: str) -> ApiError | None:
    return None if is_uuid(volume_id) else evs_error("EVS.1002", "invalid volume id!")


def volume_not_found(volume_id: str) -> ApiError:
    # The OpenStack shape: the EVS pages leave the 404 body unsaid, Cinder answers this.
    return ApiError(
        status=404,
        code="itemNotFound",
        message=f"Volume {volume_id} could not be found.",
        openstack=True,
    )


@dataclass(frozen=True)
class SystemDisk:
    """A server's current system disk, and what the volume shows of its server and image."""

    id: str
    server: SimServer
    seen: Observed
    image: ImageSpec


def volume_body(
    disk: SystemDisk, *, seed: int, project_id: str, ak: str, timestamps: Timestamps
) -> JsonObject:
    """A volume as ShowVolume and ListVolumes show it (SDK `VolumeDetail`)."""
    server, seen = disk.server, disk.seen
    created = timestamps.iso_microseconds(seen.disk_created_at)
    metadata: JsonObject = {
        "__system__encrypted": "0",
        "hw:passthrough": "false",
        "attached_mode": "rw",
        "readonly": "False",
    }
    if server.charging_mode == "1":  # only disks bought with a yearly/monthly server have one
        metadata["orderID"] = uuid.UUID(derived_uuid(seed, server.id, "order")).hex
    href = f"/v2/{project_id}/os-vendor-volumes/{disk.id}"
    return {
        "id": disk.id,
        "name": f"{server.name}-volume-0000",
        "links": [{"href": href, "rel": "self"}, {"href": href, "rel": "bookmark"}],
        "status": "in-use",
        "attachments": [
            {
                "server_id": server.id,
                "attachment_id": derived_uuid(seed, disk.id, "attachment"),
                "attached_at": created,
                "host_name": f"sim-host-{server.id[:8]}",
                "volume_id": disk.id,
                "device": SYSTEM_DISK_DEVICE,
                "id": disk.id,
            }
        ],
        "availability_zone": server.availability_zone,
        "os-vol-host-attr:host": f"pod01.{server.availability_zone}#0",
        "source_volid": None,
        "snapshot_id": None,
        "description": None,
        "created_at": created,
        "updated_at": timestamps.iso_microseconds(max(seen.disk_created_at, seen.updated_at)),
        "os-vol-tenant-attr:tenant_id": project_id,
        "volume_image_metadata": {"image_id": seen.image_id, "image_name": disk.image.name},
        "volume_type": "SSD",
        "size": seen.disk_size,
        "consistencygroup_id": None,
        "bootable": "true",
        "metadata": metadata,
        "encrypted": False,
        "replication_status": "disabled",
        "os-volume-replication:extended_status": None,
        "os-vol-mig-status-attr:migstat": None,
        "os-vol-mig-status-attr:name_id": None,
        "shareable": "false",
        "user_id": uuid.UUID(derived_uuid(seed, ak, "user")).hex,
        "service_type": "EVS",
        "multiattach": False,
        "tags": {},
        "wwn": "688860300" + uuid.UUID(disk.id).hex[:23],
        "enterprise_project_id": "0",
    }


@dataclass(frozen=True)
class VolumeQuery:
    """ListVolumes' parameters, checked."""

    @property
    def pages_only(self) -> bool:
        """Only paging (marker, offset, limit): no filter to apply to any disk."""
        return self.ids is None and not (
            self.volume_id or self.server_id or self.status or self.availability_zone
        )

    ids: frozenset[str] | None  # None: no `ids` filter
    volume_id: str | None
    server_id: str | None
    status: str | None
    availability_zone: str | None
    limit: int
    marker: str | None
    offset: int

    def keeps(self, disk: SystemDisk) -> bool:
        if self.ids is not None and disk.id not in self.ids:
            return False
        if self.ids is None and self.volume_id and disk.id != self.volume_id:
            return False  # documented: `id` is ignored when `ids` is given
        if self.server_id and disk.server.id != self.server_id:
            return False
        if self.status and self.status != "in-use":  # a system disk is always attached
            return False
        zone = self.availability_zone
        return not zone or disk.server.availability_zone == zone


def parse_volume_query(query: Mapping[str, str]) -> VolumeQuery | ApiError:
    """The parameters, or the EVS error for the first bad one. A repeated `ids` (what the SDK
    sends for a Python list) is read through `items()`, which a multidict gives in full."""
    ids = parse_ids([value for key, value in query.items() if key == "ids"])
    if isinstance(ids, ApiError):
        return ids
    limit = _integer(query.get("limit"), DEFAULT_VOLUME_LIMIT)
    if limit is None or not 1 <= limit <= MAX_VOLUME_LIMIT:
        return evs_error("EVS.1023", "invalid filter limit!")
    offset = _integer(query.get("offset"), 0)
    if offset is None or offset < 0:
        return evs_error("EVS.1018", "Type conversion error , parameter type is unexpected")
    return VolumeQuery(
        ids=ids,
        volume_id=(query.get("id") or "").lower() or None,
        server_id=query.get("server_id") or None,
        status=query.get("status") or None,
        availability_zone=query.get("availability_zone") or None,
        limit=limit,
        marker=(query.get("marker") or "").lower() or None,
        offset=offset,
    )


def parse_ids(values: Sequence[str]) -> frozenset[str] | ApiError | None:
    """`ids` as the SDK docs write it, `['id1','id2']` (its model takes that string as is),
    a JSON array, a comma-separated list, or one id per repeated parameter. Invalid ids are
    ignored, as EVS documents; more than 60 is an error."""
    if not values:
        return None
    ids: list[str] = []
    for value in values:
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        ids.extend(part.strip().strip("'\"").strip().lower() for part in text.split(","))
    wanted = [part for part in ids if part]
    if len(wanted) > MAX_IDS:
        return evs_error("EVS.1002", f"invalid volume id! ids holds {len(wanted)}, at most 60.")
    return frozenset(wanted)


def _integer(text: str | None, default: int) -> int | None:
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        return None


def list_volumes(
    disks: Sequence[SystemDisk],
    volume_query: VolumeQuery,
    query: Mapping[str, str],
    *,
    project_id: str,
) -> tuple[list[SystemDisk], int, JsonObject | None] | ApiError:
    """The page of `disks` (every disk, in listing order) after the marker and the offset:
    (page, how many match in all, the `next` link when more follow)."""
    matching = [disk for disk in disks if volume_query.keeps(disk)]
    remaining = matching
    if volume_query.marker:
        position = next((n for n, d in enumerate(disks) if d.id == volume_query.marker), None)
        if position is None:
            return evs_error("EVS.1024", "invalid filter marker!")
        after = {disk.id for disk in disks[position + 1 :]}
        remaining = [disk for disk in matching if disk.id in after]
    remaining = remaining[volume_query.offset :]
    page = remaining[: volume_query.limit]
    link = None
    if len(remaining) > volume_query.limit:
        link = next_link(query, project_id, page[-1].id)
    return page, len(matching), link


def next_link(query: Mapping[str, str], project_id: str, last_id: str) -> JsonObject:
    """The `volumes_links` entry of a page that more volumes follow."""
    return {"href": _next_href(query, project_id, last_id), "rel": "next"}


def _next_href(query: Mapping[str, str], project_id: str, last_id: str) -> str:
    kept = [(key, value) for key, value in query.items() if key not in ("marker", "offset")]
    return f"/v2/{project_id}/cloudvolumes/detail?" + urlencode([*kept, ("marker", last_id)])


def listing(page: Sequence[JsonObject], count: int, link: JsonObject | None) -> Reply:
    """The ListVolumes body: `volumes_links` only when more volumes follow."""
    body: JsonObject = {"count": count, "volumes": list(page)}
    if link is not None:
        body["volumes_links"] = [link]
    return body
