"""The formats of the ids that reach a cloud URL or a query: one definition, used by request
validation, the URL handlers, the OpenAPI document, the token scopes and the cloud client."""

from __future__ import annotations

import re

UUID_PATTERN = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# Huawei Cloud project ids are 32 lowercase hex digits (IAM "project id", e.g. in every
# endpoint path): anything else is a typo that would only surface when a worker calls the cloud.
PROJECT_ID_PATTERN = "[0-9a-f]{32}"
REGION_PATTERN = "[a-z]{2,3}(-[a-z]+)+-[0-9]{1,3}"

# The Huawei Cloud regions a batch may name by default: a region outside them has no endpoint,
# and a typo ("cn-nort-4") would otherwise surface only when a worker's call fails to resolve
# its host. This is the region table of the official SDK (huaweicloudsdkecs 3.1, `EcsRegion`),
# read as a fact; ORCH_REGIONS replaces it (Settings.accepts_region).
PUBLIC_REGIONS: frozenset[str] = frozenset(
    {
        "ae-ad-1",
        "af-north-1",
        "af-south-1",
        "ap-southeast-1",
        "ap-southeast-2",
        "ap-southeast-3",
        "ap-southeast-4",
        "ap-southeast-5",
        "cn-east-2",
        "cn-east-3",
        "cn-east-4",
        "cn-east-5",
        "cn-north-1",
        "cn-north-2",
        "cn-north-4",
        "cn-north-9",
        "cn-north-11",
        "cn-north-12",
        "cn-south-1",
        "cn-south-2",
        "cn-south-4",
        "cn-southwest-2",
        "cn-southwest-3",
        "eu-west-0",
        "eu-west-101",
        "la-north-2",
        "la-south-2",
        "me-east-1",
        "my-kualalumpur-1",
        "na-mexico-1",
        "ru-moscow-1",
        "sa-brazil-1",
        "tr-west-1",
    }
)

UUID = re.compile(UUID_PATTERN)
PROJECT_ID = re.compile(PROJECT_ID_PATTERN, re.ASCII)
REGION = re.compile(REGION_PATTERN, re.ASCII)


def canonical_uuid(value: object) -> str | None:
    """`value` as a lower-case UUID, or None when it is not one."""
    if isinstance(value, str) and UUID.fullmatch(value):
        return value.lower()
    return None
