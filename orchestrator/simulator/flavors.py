"""Flavors: the simulated region's built-in catalog, the ListFlavors body of each, and the short
`flavor` object a server shows (fleet-safety-api.md sections 8 and 9).

A flavor's architecture is what a pre-flight check joins with an image's: Kunpeng flavors carry
`ecs:instance_architecture: arm64` in `os_extra_specs`, x86 ones carry no such key at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from orchestrator.simulator.shared import JsonObject

DEFAULT_FLAVOR_ID = "s6.small.1"
ARCHITECTURES = ("x86", "arm")


@dataclass(frozen=True)
class Flavor:
    id: str
    vcpus: int
    ram_mb: int
    architecture: str  # "x86" or "arm" (Kunpeng)
    performance_type: str  # ecs:performancetype
    generation: str  # ecs:generation


FLAVORS: tuple[Flavor, ...] = (
    Flavor("s6.small.1", 1, 1024, "x86", "normal", "s6"),
    Flavor("s6.large.2", 2, 4096, "x86", "normal", "s6"),
    Flavor("c7.xlarge.2", 4, 8192, "x86", "computingv3", "c7"),
    Flavor("kc1.large.2", 2, 4096, "arm", "kunpeng_computing", "kc1"),
    Flavor("kc1.xlarge.4", 4, 16384, "arm", "kunpeng_computing", "kc1"),
)
_BY_ID = {flavor.id: flavor for flavor in FLAVORS}


def find_flavor(flavor_id: str) -> Flavor | None:
    return _BY_ID.get(flavor_id)


def flavor_ids() -> list[str]:
    return [flavor.id for flavor in FLAVORS]


def server_flavor(flavor: Flavor) -> JsonObject:
    """The `flavor` of ShowServer: every value a string, as captured from the SDK."""
    return {
        "id": flavor.id,
        "name": flavor.id,
        "disk": "0",
        "vcpus": str(flavor.vcpus),
        "ram": str(flavor.ram_mb),
    }


def list_flavors(project_id: str, query: Mapping[str, str]) -> JsonObject:
    """ListFlavors. Every built-in flavor is on sale in every availability zone, so
    `availability_zone` narrows nothing; `flavor_id` (an SDK filter) keeps that one flavor."""
    wanted = query.get("flavor_id")
    return {
        "flavors": [
            _flavor_body(flavor, project_id)
            for flavor in FLAVORS
            if not wanted or flavor.id == wanted
        ]
    }


def _flavor_body(flavor: Flavor, project_id: str) -> JsonObject:
    # No host in the links: the simulator does not know the name clients reach it by.
    href = f"/v1/{project_id}/flavors/{flavor.id}"
    return {
        "id": flavor.id,
        "name": flavor.id,
        "vcpus": str(flavor.vcpus),
        "ram": flavor.ram_mb,
        "disk": "0",
        "swap": "",
        "OS-FLV-EXT-DATA:ephemeral": 0,
        "OS-FLV-DISABLED:disabled": False,
        "rxtx_factor": 1.0,
        "rxtx_quota": "",
        "rxtx_cap": "",
        "os-flavor-access:is_public": True,
        "links": [
            {"rel": "self", "href": href, "type": None},
            {"rel": "bookmark", "href": href, "type": None},
        ],
        "os_extra_specs": _extra_specs(flavor),
        "attachableQuantity": {"free_scsi": 59, "free_blk": 23, "free_disk": 23, "free_nic": 3},
    }


def _extra_specs(flavor: Flavor) -> JsonObject:
    specs: JsonObject = {
        "ecs:performancetype": flavor.performance_type,
        "ecs:generation": flavor.generation,
        "ecs:virtualization_env_types": "CloudCompute",
        "cond:operation:status": "normal",
    }
    if flavor.architecture == "arm":
        specs["ecs:instance_architecture"] = "arm64"
    return specs
