"""IMS ListImages (`GET /v2/cloudimages`): the image JSON, the filters, marker paging, the IMS
error body and the project check of IMS calls (fleet-safety-api.md sections 0, 1 and 6).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping

from orchestrator.simulator.images import (
    IMAGE_ARCHITECTURES,
    IMAGE_STATUSES,
    OS_TYPES,
    ImageCatalog,
    ImageSpec,
)
from orchestrator.simulator.replies import ApiError, Reply
from orchestrator.simulator.shared import JsonObject, Timestamps, derived_uuid

DEFAULT_IMAGE_LIMIT = 500
MAX_IMAGE_LIMIT = 1000
# __imagetype value -> the visibility it lists; no Marketplace image exists in the simulator.
IMAGE_TYPES = {"gold": "public", "private": "private", "shared": "shared", "market": None}
_TYPE_OF_VISIBILITY = {"public": "gold", "private": "private", "shared": "shared"}
LIST_VISIBILITIES = ("public", "private", "shared")
# Chosen: no public source gives the code for a project that is not the caller's.
PROJECT_MISMATCH_CODE = "IMG.0403"
_EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"  # what IMS shows as every image's checksum


def ims_error(code: str, message: str, status: int = 400) -> ApiError:
    """`{"error": {"code": "IMG.xxxx", "message": ...}}`, without ECS's `details`."""
    return ApiError(status=status, code=code, message=message, with_details=False)


def check_ims_project(
    asked_project_id: str | None, project_id: str, *, where: str = "X-Project-Id"
) -> ApiError | None:
    """Most IMS paths carry no project: the SDK sends it as X-Project-Id, which must be ours
    (as must the project of the paths that do carry one: `where` says which it was)."""
    if asked_project_id is None or asked_project_id == project_id:
        return None
    return ims_error(
        PROJECT_MISMATCH_CODE,
        f"The project ID {asked_project_id} in {where} does not match the credentials.",
        status=403,
    )


def list_images(
    catalog: ImageCatalog, query: Mapping[str, str], *, project_id: str, timestamps: Timestamps
) -> Reply:
    """Filters, then the page after `marker` (in catalog order), at most `limit` images."""
    limit = _limit(query)
    if isinstance(limit, ApiError):
        return limit
    keep = _image_filter(query)
    if isinstance(keep, ApiError):
        return keep
    candidates = list(catalog)
    wanted = query.get("id")
    if wanted:
        # An open catalog has every well-formed id: asking for one by id makes it appear.
        synthesized = catalog.get(wanted)
        if synthesized is not None and synthesized not in candidates:
            candidates.append(synthesized)
    marker = query.get("marker")
    if marker:
        at = marker.lower()
        position = next((n for n, image in enumerate(candidates) if image.id == at), None)
        if position is None:
            return ims_error("IMG.0001", f"The marker {marker} is not a known image id.")
        candidates = candidates[position + 1 :]
    shown = [image for image in candidates if keep(image)][:limit]
    return {"images": [image_body(image, catalog, project_id, timestamps) for image in shown]}


def _limit(query: Mapping[str, str]) -> int | ApiError:
    text = query.get("limit")
    if not text:
        return DEFAULT_IMAGE_LIMIT
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_IMAGE_LIMIT:
        return ims_error("IMG.0001", f"limit must be an integer within [1, {MAX_IMAGE_LIMIT}].")
    return limit


def _image_filter(query: Mapping[str, str]) -> Callable[[ImageSpec], bool] | ApiError:
    checks: list[Callable[[ImageSpec], bool]] = []
    image_type = query.get("__imagetype")
    if image_type:
        if image_type not in IMAGE_TYPES:
            # The IMS error page's own example answer for this parameter.
            return ims_error("IMG.0024", "The imagetype is invalid.")
        visibility = IMAGE_TYPES[image_type]
        checks.append(lambda image: image.visibility == visibility)
    enumerated: list[tuple[str, tuple[str, ...], Callable[[ImageSpec], str]]] = [
        ("status", IMAGE_STATUSES, lambda image: image.status),
        ("visibility", LIST_VISIBILITIES, lambda image: image.visibility),
        ("__os_type", OS_TYPES, lambda image: image.os_type),
        ("architecture", IMAGE_ARCHITECTURES, lambda image: image.architecture),
    ]
    for name, allowed, attribute in enumerated:
        value = query.get(name)
        if not value:
            continue
        if value not in allowed:
            return ims_error("IMG.0001", f"{name} must be one of {list(allowed)}.")
        checks.append(_equals(attribute, value))
    wanted_id = query.get("id")
    if wanted_id:
        checks.append(_equals(_image_id, wanted_id.lower()))
    image_name = query.get("name")
    if image_name:
        checks.append(_equals(_image_name, image_name))
    tag = query.get("tag")
    if tag:  # "key.value", the form IMS shows tags in
        checks.append(lambda image: tag in image.tags)
    return lambda image: all(check(image) for check in checks)


def _equals(attribute: Callable[[ImageSpec], str], value: str) -> Callable[[ImageSpec], bool]:
    return lambda image: attribute(image) == value


def _image_id(image: ImageSpec) -> str:
    return image.id


def _image_name(image: ImageSpec) -> str:
    return image.name


def image_body(
    image: ImageSpec, catalog: ImageCatalog, project_id: str, timestamps: Timestamps
) -> JsonObject:
    """An image as ListImages shows it (SDK `ImageInfo`); absent keys mean what IMS means by
    their absence (no `hw_firmware_type`: BIOS; no `__support_arm`: x86)."""
    public = image.visibility == "public"
    body: JsonObject = {
        "id": image.id,
        "name": image.name,
        "status": image.status,
        "created_at": timestamps.iso_seconds(catalog.added_at(image.id)),
        "updated_at": timestamps.iso_seconds(catalog.updated_at(image.id)),
        "min_disk": image.min_disk,
        "min_ram": image.min_ram,
        "__os_type": image.os_type,
        "__os_version": image.os_version,
        "__platform": image.platform,
        "__os_bit": "64",
        "__support_kvm": "true",
        "__imagetype": _TYPE_OF_VISIBILITY[image.visibility],
        "visibility": image.visibility,
        "protected": public or image.protected,
        "owner": _owner(image, project_id),
        "virtual_env_type": "FusionCompute",
        "disk_format": "zvhd2",
        "container_format": "bare",
        "__image_size": str(image.min_disk * 2**28),
        "size": 0,
        "virtual_size": 0,
        "checksum": _EMPTY_MD5,
        "file": f"/v2/images/{image.id}/file",
        "self": f"/v2/images/{image.id}",
        "schema": "/v2/schemas/image",
        "tags": list(image.tags),
        "__isregistered": "true",
        "__description": image.description,
        # The IMS docs: "true" means the image can NOT take Cloud-Init injection.
        "__support_fc_inject": "false" if image.cloud_init else "true",
    }
    active_at = catalog.active_at(image.id)
    if image.status == "active" and active_at is not None:
        body["active_at"] = timestamps.iso_seconds(active_at)
    if image.firmware is not None:
        body["hw_firmware_type"] = image.firmware
    if image.architecture == "arm":
        body["__support_arm"] = "true"
    if not public:
        body["enterprise_project_id"] = "0"
    if image.source_image_id is not None:
        body["__originalimagename"] = image.source_image_id
    if image.source_server_id is not None:
        # Terraform parses this form to find the server an image was made from.
        body["__data_origin"] = f"instance,{image.source_server_id}"
    return body


def _owner(image: ImageSpec, project_id: str) -> str:
    if image.visibility == "public":
        # Public images belong to the cloud's own account, never to the caller's project.
        return uuid.UUID(derived_uuid("public-images", "owner")).hex
    if image.visibility == "shared":
        return uuid.UUID(derived_uuid("shared-images", "owner")).hex  # another project
    return project_id
