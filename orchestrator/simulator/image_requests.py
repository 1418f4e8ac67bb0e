"""The bodies of IMS's image calls: CreateImage from a server (`POST /v2/cloudimages/action`),
checked in the order of the IMS error table (fleet-safety-api.md sections 2 and 6), and the
optional body of the Glance-native delete. Only what a body says is judged here; the rules that
need the server or the catalog are in `backups`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from orchestrator.simulator.images import MAX_MIN_RAM_MB, MAX_NAME_LENGTH, is_image_name
from orchestrator.simulator.ims import ims_error
from orchestrator.simulator.replies import ApiError
from orchestrator.simulator.shared import JsonObject

MAX_DESCRIPTION_LENGTH = 1024
# The other modes of the same URI (images from OBS files, from data volumes, data-disk images).
_OTHER_MODES = ("image_url", "volume_id", "data_images")


@dataclass(frozen=True)
class CreateImageRequest:
    """A valid CreateImage body of the server mode."""

    name: str
    instance_id: str
    description: str
    tags: tuple[str, ...]  # "key.value", the form IMS shows them in, whichever form was sent
    min_ram: int | None  # MB; None: the image the server runs decides


def parse_create_image(body: bytes) -> CreateImageRequest | ApiError:
    fields = _decode(body)
    if isinstance(fields, ApiError):
        return fields
    other_modes = [mode for mode in _OTHER_MODES if mode in fields]
    if other_modes:
        return ims_error(
            "IMG.0001",
            f"Creating images with {', '.join(other_modes)} is not supported by the simulator: "
            "only images from a server (instance_id) are.",
        )
    tags = _tags(fields)
    if isinstance(tags, ApiError):
        return tags
    error = _check_name(fields.get("name")) or _check_description(fields.get("description"))
    if error is not None:
        return error
    instance_id = fields.get("instance_id")
    if instance_id is None or instance_id == "":
        return ims_error("IMG.0012", "The instance_id is empty.")
    if not isinstance(instance_id, str):
        return _malformed("instance_id must be a string.")
    min_ram = fields.get("min_ram")
    if min_ram is not None and (
        isinstance(min_ram, bool)
        or not isinstance(min_ram, int)
        or not 0 <= min_ram <= MAX_MIN_RAM_MB
    ):
        return _malformed(f"min_ram must be an integer within [0, {MAX_MIN_RAM_MB}].")
    return CreateImageRequest(
        name=fields["name"],
        instance_id=instance_id,
        description=fields.get("description") or "",
        tags=tags,
        min_ram=min_ram,
    )


def parse_delete_image(body: bytes) -> ApiError | None:
    """The optional `{"delete_backup": false}`: only whole-ECS images use it; an error when the
    body is there but malformed."""
    if not body.strip():
        return None
    try:
        fields = json.loads(body)
    except ValueError:
        return _malformed("The request body is not valid JSON.")
    if not isinstance(fields, dict):
        return _malformed("The request body must be a JSON object.")
    if not isinstance(fields.get("delete_backup", False), bool):
        return _malformed("delete_backup must be true or false.")
    return None


def instance_id_of(body: bytes) -> str | None:
    """The server a CreateImage body names, valid or not (for the log of calls received)."""
    try:
        fields = json.loads(body)
    except ValueError:
        return None
    instance_id = fields.get("instance_id") if isinstance(fields, dict) else None
    return instance_id if isinstance(instance_id, str) and instance_id else None


def _decode(body: bytes) -> JsonObject | ApiError:
    if not body.strip():
        return ims_error("IMG.0007", "The request body is empty.")
    try:
        fields = json.loads(body)
    except ValueError:
        return _malformed("The request body is not valid JSON.")
    if not isinstance(fields, dict):
        return _malformed("The request body must be a JSON object.")
    if not fields:
        return ims_error("IMG.0007", "The request body is empty.")
    return fields


def _tags(fields: JsonObject) -> tuple[str, ...] | ApiError:
    """`tags` (["key.value"]) or `image_tags` ([{"key", "value"}]), never both."""
    if "tags" in fields and "image_tags" in fields:
        return _malformed("tags and image_tags cannot both be given.")
    if "tags" in fields:
        tags = fields["tags"]
        if not isinstance(tags, list) or not all(isinstance(tag, str) and tag for tag in tags):
            return _malformed('tags must be a list of "key.value" strings.')
        return tuple(tags)
    image_tags = fields.get("image_tags", [])
    if not isinstance(image_tags, list) or not all(_is_key_value(tag) for tag in image_tags):
        return _malformed('image_tags must be a list of {"key": ..., "value": ...} objects.')
    return tuple(f"{tag['key']}.{tag.get('value') or ''}" for tag in image_tags)


def _is_key_value(tag: object) -> bool:
    return (
        isinstance(tag, dict)
        and isinstance(tag.get("key"), str)
        and bool(tag["key"])
        and isinstance(tag.get("value", ""), str)
    )


def _check_name(name: object) -> ApiError | None:
    if name is None or name == "":
        return ims_error("IMG.0013", "The image name is empty.")
    if not isinstance(name, str):
        return _malformed("name must be a string.")
    if len(name) > MAX_NAME_LENGTH:
        return ims_error("IMG.0002", f"The image name is longer than {MAX_NAME_LENGTH} characters.")
    if not is_image_name(name):
        return ims_error(
            "IMG.0003",
            "The image name may hold only letters, digits, '-', '_', '.', spaces and Chinese "
            "characters, and may not start or end with a space.",
        )
    return None


def _check_description(description: object) -> ApiError | None:
    if description is None:
        return None
    if not isinstance(description, str):
        return _malformed("description must be a string.")
    if len(description) > MAX_DESCRIPTION_LENGTH:
        return ims_error(
            "IMG.0004", f"The description is longer than {MAX_DESCRIPTION_LENGTH} characters."
        )
    return None


def _malformed(message: str) -> ApiError:
    return ims_error("IMG.0001", message)
