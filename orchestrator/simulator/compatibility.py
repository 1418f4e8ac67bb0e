"""Which changes of OS Huawei's rules let through (fleet-safety-api.md section 11): the image
(`image_refusal`), the server (`server_refusal`), and the two together (`pairing_breaches`, each
a `Breach`: a refusal, or none when the change is accepted and its job fails, as for a BIOS/UEFI
switch). The cloud answers the first in that order; every one, answered or not, counts against
the client that sent it.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.simulator.flavors import Flavor
from orchestrator.simulator.images import ImageSpec
from orchestrator.simulator.replies import ApiError, ecs_error, invalid
from orchestrator.simulator.servers import SimServer

# Chosen: the docs give no code for a BIOS/UEFI switch; Ecs.0007 is the image-attributes one.
FIRMWARE_FAIL_CODE = "Ecs.0007"
_ATTRIBUTES_INVALID = "Image-related attributes invalid, adjust the flavor or image"


@dataclass(frozen=True)
class Breach:
    refusal: ApiError | None  # None: accepted, and the job fails with `fail_reason`
    fail_reason: str = ""


def image_refusal(image_id: str, image: ImageSpec | None) -> ApiError | None:
    """The image must exist and be active."""
    if image is None:
        return ecs_error("Ecs.0031", f"The image {image_id} does not exist.")
    if image.status != "active":
        message = f"The image {image_id} is not active (its status is {image.status})."
        return ecs_error("Ecs.0032", message)
    return None


def server_refusal(server: SimServer) -> ApiError | None:
    """What forbids any change of OS on this server."""
    if server.locked:
        return ecs_error("Ecs.0605", "The server is locked.")
    if not server.has_system_disk:
        return ecs_error("Ecs.0105", "The server has no system disk.")
    if server.charging_mode == "2":
        return ecs_error("Ecs.0100", "The OS of a spot-priced server cannot be changed.")
    return None


def pairing_breaches(
    *,
    image: ImageSpec,
    key_name: str | None,
    flavor: Flavor,
    charging_mode: str,
    disk_size: int,
    current_image: ImageSpec,
) -> list[Breach]:
    """What forbids this image on this server: its flavor, its disk, its current boot mode."""
    breaches = []
    if image.os_type == "Windows" and key_name is not None:
        refusal = invalid("keyname is not supported for Windows images, give adminpass.")
        breaches.append(Breach(refusal))
    if flavor.architecture != image.architecture:
        message = (
            f"{_ATTRIBUTES_INVALID}: architecture (the flavor {flavor.id} is "
            f"{_architecture_name(flavor.architecture)}, the image {image.id} is "
            f"{_architecture_name(image.architecture)})."
        )
        breaches.append(Breach(ecs_error("Ecs.0007", message)))
    if charging_mode == "1" and disk_size < image.min_disk:
        message = (
            f"{_ATTRIBUTES_INVALID}: the system disk ({disk_size} GB) is smaller than the "
            f"image needs ({image.min_disk} GB); the system disk of a yearly/monthly server "
            "must be detached and expanded first."
        )
        breaches.append(Breach(ecs_error("Ecs.0007", message)))
    if current_image.boot_mode != image.boot_mode:
        reason = (
            "Switching between BIOS and UEFI images is not supported: the server boots with "
            f"{current_image.boot_mode.upper()}, the image {image.id} with "
            f"{image.boot_mode.upper()}."
        )
        breaches.append(Breach(None, reason))
    return breaches


def _architecture_name(architecture: str) -> str:
    return "Kunpeng (arm64)" if architecture == "arm" else "x86"
