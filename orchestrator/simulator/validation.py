"""The changeos request body: its rules, checked in the cloud's order, the parts of a valid
body the simulation keeps (`OsChangeRequest`), and what any body, valid or not, asks for.
"""

from __future__ import annotations

import base64
import binascii
import json
import string
from dataclasses import dataclass

from orchestrator.simulator.replies import ApiError, ecs_error, invalid
from orchestrator.simulator.shared import JsonObject, is_uuid

PASSWORD_SPECIALS = frozenset("!@$%^-_=+[{}]:,./?~#*")
USER_DATA_MAX_BYTES = 32 * 1024
WITH_STOP_SERVER = "withStopServer"


@dataclass(frozen=True)
class OsChangeRequest:
    """The parts of a valid `os-change` body the simulation needs."""

    image_id: str
    key_name: str | None
    with_stop_server: bool


def password_is_complex(password: str) -> bool:
    """8-26 characters from the allowed set, with at least 3 of the 4 character classes."""
    classes = (
        frozenset(string.ascii_uppercase),
        frozenset(string.ascii_lowercase),
        frozenset(string.digits),
        PASSWORD_SPECIALS,
    )
    if not 8 <= len(password) <= 26:
        return False
    if any(not any(char in group for group in classes) for char in password):
        return False
    return sum(1 for group in classes if any(char in group for char in password)) >= 3


def parse_os_change(body: bytes, *, cloud_init: bool) -> OsChangeRequest | ApiError:
    """Validate a changeos body in the cloud's order; v2 (`cloud_init`) also takes user_data."""
    option = _decode_option(body)
    if isinstance(option, ApiError):
        return option
    error = (
        _check_field_types(option)
        or _check_credentials(option, cloud_init=cloud_init)
        or _check_password(option)
        or _check_byol(option)
        or _check_mode(option)
        or _check_user_data(option, cloud_init=cloud_init)
    )
    if error is not None:
        return error
    return OsChangeRequest(
        image_id=str(option["imageid"]),
        key_name=option.get("keyname"),
        with_stop_server=option.get("mode") == WITH_STOP_SERVER,
    )


def intended_change(body: bytes) -> tuple[str | None, str | None]:
    """(image id, key pair name) a body asks for, whether or not it is valid: None where it
    does not say."""
    option = _decode_option(body)
    if isinstance(option, ApiError):
        return None, None
    image_id = option.get("imageid")
    key_name = option.get("keyname")
    return (
        str(image_id) if is_uuid(image_id) else None,
        key_name if isinstance(key_name, str) and key_name else None,
    )


def _decode_option(body: bytes) -> JsonObject | ApiError:
    try:
        data = json.loads(body)
    except ValueError:
        return invalid("The request body is not valid JSON.")
    option = data.get("os-change") if isinstance(data, dict) else None
    if not isinstance(option, dict):
        return invalid("The request body must hold an os-change object.")
    return option


def _metadata(option: JsonObject) -> JsonObject:
    metadata = option.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def _check_field_types(option: JsonObject) -> ApiError | None:
    if not is_uuid(option.get("imageid")):
        return invalid("imageid is missing or is not a UUID.")
    for name in ("adminpass", "keyname", "userid", "mode", "isAutoPay"):
        value = option.get(name)
        if value is not None and not (isinstance(value, str) and value):
            return invalid(f"{name} must be a non-empty string.")
    if option.get("metadata") is not None and not isinstance(option["metadata"], dict):
        return invalid("metadata must be an object.")
    return None


def _check_credentials(option: JsonObject, *, cloud_init: bool) -> ApiError | None:
    has_password = option.get("adminpass") is not None
    has_key = option.get("keyname") is not None
    if has_password and has_key:
        return invalid("adminpass and keyname cannot both be given.")
    if has_password or has_key:
        return None
    # Only Cloud-Init images can take their password from user_data instead.
    if cloud_init and _metadata(option).get("user_data") is not None:
        return None
    return invalid("One of adminpass and keyname is required.")


def _check_password(option: JsonObject) -> ApiError | None:
    password = option.get("adminpass")
    if password is None or password_is_complex(password):
        return None
    return ecs_error("Ecs.0011", "The password does not meet the complexity requirements.")


def _check_byol(option: JsonObject) -> ApiError | None:
    byol = _metadata(option).get("BYOL")
    if byol is None or byol == "true":
        return None
    return invalid("metadata.BYOL can only be true.")


def _check_mode(option: JsonObject) -> ApiError | None:
    mode = option.get("mode")
    if mode is None or mode == WITH_STOP_SERVER:
        return None
    return invalid(f"mode can only be {WITH_STOP_SERVER}.")


def _check_user_data(option: JsonObject, *, cloud_init: bool) -> ApiError | None:
    user_data = _metadata(option).get("user_data")
    if user_data is None:
        return None
    if not cloud_init:
        return invalid("user_data is only accepted by the v2 (Cloud-Init) changeos API.")
    if not isinstance(user_data, str):
        return invalid("user_data must be a base64 string.")
    try:
        decoded = base64.b64decode(user_data, validate=True)
    except (binascii.Error, ValueError):
        return invalid("user_data is not valid base64.")
    if len(decoded) > USER_DATA_MAX_BYTES:
        return invalid(f"user_data exceeds {USER_DATA_MAX_BYTES} bytes once decoded.")
    return None
