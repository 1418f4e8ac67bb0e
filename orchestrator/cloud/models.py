"""Typed values in and out of the ECS client. The one dict that passes its boundary is a job's
body, verbatim, for the history; nothing decides from it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from orchestrator.domain.health import ProbeTarget
from orchestrator.domain.preflight import Architecture, Firmware, ImageFacts, ServerFacts
from orchestrator.domain.states import FINAL_JOB_STATUSES
from orchestrator.domain.verdicts import ServerSnapshot

_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


@dataclass(frozen=True)
class OsChange:
    """The `os-change` body of a changeos call (v1 without Cloud-Init, v2 with it)."""

    imageid: str
    keyname: str | None = None
    userid: str | None = None
    adminpass: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    mode: str | None = None
    is_auto_pay: str | None = None

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"imageid": self.imageid}
        for name, value in (
            ("keyname", self.keyname),
            ("userid", self.userid),
            ("adminpass", self.adminpass),
            ("mode", self.mode),
            ("isAutoPay", self.is_auto_pay),
        ):
            if value is not None:
                body[name] = value
        if self.metadata:
            body["metadata"] = dict(self.metadata)
        return {"os-change": body}

    def __repr__(self) -> str:  # keep adminpass and user_data out of every log line
        return f"OsChange(imageid={self.imageid!r}, keyname={self.keyname!r}, mode={self.mode!r})"


@dataclass(frozen=True)
class Job:
    """A changeos job as the job API shows it. Decisions read the typed fields; `body` is the
    cloud's answer verbatim, kept only for the server's history (the cloud deletes finished jobs
    a day later, and the history must outlive it)."""

    job_id: str
    status: str
    error_code: str | None
    fail_reason: str | None
    begin_time: str | None
    end_time: str | None
    # `errorcode_message` of each sub-job that has one (why the change failed, in words).
    sub_job_errors: tuple[str, ...]
    body: dict[str, Any]

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_JOB_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCESS"

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Job:
        return cls(
            job_id=str(body.get("job_id") or ""),
            status=str(body.get("status") or "UNKNOWN"),
            error_code=_opt(body.get("error_code")),
            fail_reason=_opt(body.get("fail_reason")),
            begin_time=_opt(body.get("begin_time")),
            end_time=_opt(body.get("end_time")),
            sub_job_errors=_sub_job_errors(body),
            body=body,
        )


def _sub_job_errors(body: dict[str, Any]) -> tuple[str, ...]:
    entities = body.get("entities")
    subs = entities.get("sub_jobs") if isinstance(entities, dict) else None
    messages: list[str] = []
    for sub in subs if isinstance(subs, list) else []:
        sub_entities = sub.get("entities") if isinstance(sub, dict) else None
        if isinstance(sub_entities, dict) and sub_entities.get("errorcode_message"):
            messages.append(str(sub_entities["errorcode_message"]))
    return tuple(messages)


@dataclass(frozen=True)
class Server:
    id: str
    name: str
    status: str
    vm_state: str | None
    task_state: str | None
    image_id: str | None
    charging_mode: str | None
    locked: bool
    has_system_disk: bool
    tags: tuple[str, ...]
    # The cloud's `updated` timestamp and the system disk's volume id: a change of OS moves
    # the first and replaces the second (defaults: facts cached by an older version).
    updated: str | None = None
    system_disk_id: str | None = None
    # Pre-flight and failure-domain facts (defaults: facts cached by an older version).
    flavor_id: str | None = None
    availability_zone: str | None = None
    os_type: str | None = None
    # The first fixed and floating IPv4 addresses: where a health probe may go.
    ip: str | None = None
    floating_ip: str | None = None
    # The anti-affinity group (`os:scheduler_hints.group`, lower case): a failure domain.
    server_group: str | None = None

    def probe_target(self) -> ProbeTarget:
        return ProbeTarget(
            server_id=self.id, name=self.name, ip=self.ip, floating_ip=self.floating_ip
        )

    def facts(self) -> ServerFacts:
        return ServerFacts(
            snapshot=self.snapshot(),
            flavor_id=self.flavor_id,
            charging_mode=self.charging_mode,
            locked=self.locked,
            has_system_disk=self.has_system_disk,
        )

    def snapshot(self) -> ServerSnapshot:
        return ServerSnapshot(
            status=self.status,
            task_state=self.task_state,
            image_id=self.image_id,
            updated=self.updated,
            system_disk_id=self.system_disk_id,
        )

    @property
    def is_rebuilding(self) -> bool:
        return self.snapshot().is_rebuilding

    @property
    def is_idle(self) -> bool:
        return self.snapshot().is_idle

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Server:
        image = body.get("image")
        flavor = body.get("flavor")
        metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        volumes = body.get("os-extended-volumes:volumes_attached")
        tags = body.get("tags")
        system_disks = [
            v
            for v in (volumes if isinstance(volumes, list) else [])
            if isinstance(v, dict) and str(v.get("bootIndex")) == "0"
        ]
        return cls(
            id=str(body.get("id") or ""),
            name=str(body.get("name") or ""),
            status=str(body.get("status") or ""),
            vm_state=_opt(body.get("OS-EXT-STS:vm_state")),
            task_state=_opt(body.get("OS-EXT-STS:task_state")),
            image_id=_opt(image.get("id")) if isinstance(image, dict) else None,
            charging_mode=_opt(metadata.get("charging_mode")) if metadata else None,
            locked=bool(body.get("locked")),
            has_system_disk=bool(system_disks),
            tags=tuple(str(t) for t in tags) if isinstance(tags, list) else (),
            updated=_opt(body.get("updated")),
            system_disk_id=_opt(system_disks[0].get("id")) if system_disks else None,
            flavor_id=_opt(flavor.get("id")) if isinstance(flavor, dict) else None,
            availability_zone=_opt(body.get("OS-EXT-AZ:availability_zone")),
            os_type=_opt(metadata.get("os_type")) if metadata else None,
            ip=_first_ipv4(body.get("addresses"), "fixed"),
            floating_ip=_first_ipv4(body.get("addresses"), "floating"),
            server_group=_server_group(body.get("os:scheduler_hints")),
        )


def _server_group(hints: object) -> str | None:
    """The first id of `os:scheduler_hints.group` (documented as a list of UUIDs), lower case;
    None when the server is in no group or the field is not that shape."""
    group = hints.get("group") if isinstance(hints, dict) else None
    first = group[0] if isinstance(group, list) and group else None
    if not (isinstance(first, str) and _UUID.fullmatch(first)):
        return None
    return first.lower()


def _first_ipv4(addresses: object, kind: str) -> str | None:
    """The first IPv4 address of this kind (`OS-EXT-IPS:type`) over the server's networks."""
    for entries in addresses.values() if isinstance(addresses, dict) else []:
        for entry in entries if isinstance(entries, list) else []:
            if (
                isinstance(entry, dict)
                and str(entry.get("version")) == "4"
                and entry.get("OS-EXT-IPS:type") == kind
                and entry.get("addr")
            ):
                return str(entry["addr"])
    return None


@dataclass(frozen=True)
class Flavor:
    """An ECS flavor; only Kunpeng flavors carry `ecs:instance_architecture` (arm64)."""

    id: str
    name: str
    architecture: Architecture

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Flavor:
        specs = body.get("os_extra_specs")
        arch = specs.get("ecs:instance_architecture") if isinstance(specs, dict) else None
        return cls(
            id=str(body.get("id") or ""),
            name=str(body.get("name") or ""),
            architecture=Architecture.AARCH64 if arch == "arm64" else Architecture.X86_64,
        )


@dataclass(frozen=True)
class Volume:
    """An EVS disk: its size in GB and the servers it is attached to."""

    id: str
    size_gb: int
    bootable: bool
    server_ids: tuple[str, ...]

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Volume:
        attachments = body.get("attachments")
        size = body.get("size")
        return cls(
            id=str(body.get("id") or ""),
            size_gb=size if isinstance(size, int) and not isinstance(size, bool) else 0,
            bootable=str(body.get("bootable")).lower() == "true",
            server_ids=tuple(
                str(a.get("server_id"))
                for a in (attachments if isinstance(attachments, list) else [])
                if isinstance(a, dict) and a.get("server_id")
            ),
        )


def image_facts(body: dict[str, Any]) -> ImageFacts:
    """An IMS image (ListImages) as the pre-flight rules read it: Arm when `__support_arm` is
    "true"; UEFI only when `hw_firmware_type` says so (absent means BIOS)."""
    min_disk = body.get("min_disk")
    return ImageFacts(
        id=str(body.get("id") or ""),
        name=str(body.get("name") or ""),
        status=str(body.get("status") or ""),
        min_disk_gb=min_disk if isinstance(min_disk, int) and not isinstance(min_disk, bool) else 0,
        os_type=str(body.get("__os_type") or "Linux"),
        architecture=(
            Architecture.AARCH64
            if str(body.get("__support_arm")).lower() == "true"
            else Architecture.X86_64
        ),
        firmware=Firmware.UEFI if body.get("hw_firmware_type") == "uefi" else Firmware.BIOS,
        virtual_env_type=_opt(body.get("virtual_env_type")),
    )


def _opt(value: object) -> str | None:
    return None if value in (None, "") else str(value)
