"""The formats of the ids that reach a cloud URL or a query: one definition, used by request
validation, the URL handlers, the OpenAPI document, the token scopes and the cloud client."""

from __future__ import annotations

import re

UUID_PATTERN = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
PROJECT_ID_PATTERN = "[A-Za-z0-9_-]{1,64}"
REGION_PATTERN = "[a-z]{2,3}(-[a-z]+)+-[0-9]{1,3}"

UUID = re.compile(UUID_PATTERN)
PROJECT_ID = re.compile(PROJECT_ID_PATTERN, re.ASCII)
REGION = re.compile(REGION_PATTERN, re.ASCII)


def canonical_uuid(value: object) -> str | None:
    """`value` as a lower-case UUID, or None when it is not one."""
    if isinstance(value, str) and UUID.fullmatch(value):
        return value.lower()
    return None
