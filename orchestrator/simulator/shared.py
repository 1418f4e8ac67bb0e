"""Identifiers, stable hashes and timestamp formats that every part of the simulated cloud uses.

Everything here is a pure function of its arguments, so a given `--seed` reproduces the same
ids, the same old images and the same fault draws on every run and every machine.
"""

from __future__ import annotations

import functools
import hashlib
import re
import uuid
from datetime import UTC, datetime
from typing import Any

JsonObject = dict[str, Any]

UUID_PATTERN = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
# A fixed namespace, so every derived id (old image, volume, port...) is the same on every run.
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "reimage:ecs-simulator")


def is_uuid(value: object) -> bool:
    return isinstance(value, str) and UUID_PATTERN.fullmatch(value) is not None


def unit_hash(*parts: object) -> float:
    """A stable number in [0, 1) (Python's hash() changes between runs)."""
    digest = hashlib.sha256(":".join(str(part) for part in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@functools.lru_cache(maxsize=1024)  # the project-wide ids (VPC, user) recur in every body
def derived_uuid(*parts: object) -> str:
    return str(uuid.uuid5(_NAMESPACE, ":".join(str(part) for part in parts)))


class Timestamps:
    """Turns the model's monotonic `now` into the time formats the cloud shows."""

    def __init__(self, wall_offset: float) -> None:
        self._wall_offset = wall_offset

    def unix(self, now: float) -> float:
        """Unix time of the model's `now` (what a test compares with its own clock)."""
        return now + self._wall_offset

    def _wall(self, now: float) -> datetime:
        return datetime.fromtimestamp(now + self._wall_offset, UTC)

    def iso_ms(self, now: float) -> str:
        """Job times: `2016-04-25T20:04:34.604Z`."""
        moment = self._wall(now)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"

    def iso_seconds(self, now: float) -> str:
        """Server and image times: `2016-04-25T20:04:34Z`."""
        return self._wall(now).strftime("%Y-%m-%dT%H:%M:%SZ")

    def iso_microseconds(self, now: float) -> str:
        """Volume times, with no zone as EVS shows them: `2016-05-25T02:38:40.392463`."""
        return self._wall(now).strftime("%Y-%m-%dT%H:%M:%S.%f")

    def ims_ms(self, now: float) -> str:
        """IMS job times, as the IMS docs show them: `04-Jun-2015 18:11:06:586` (UTC)."""
        moment = self._wall(now)
        # The month by hand: strftime's %b follows the locale, the cloud's answer does not.
        month = _MONTHS[moment.month - 1]
        clock = moment.strftime("%H:%M:%S")
        return f"{moment.day:02d}-{month}-{moment.year} {clock}:{moment.microsecond // 1000:03d}"


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
