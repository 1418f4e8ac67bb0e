"""Image and flavor facts per cloud project and region, kept a short while in Redis so that the
API's pre-flight and every worker process share them: a wave of a thousand sends costs no IMS
or flavor call when its batch was just judged, and one per image a minute after that.

Without Redis (a runtime built without it) the cache lives in the process. A Redis error is
a miss: the caller reads the cloud instead, and nothing stale ever decides.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable

import redis

from orchestrator.domain.preflight import Architecture, ImageFacts

# Images may be deleted or replaced at any time: their facts are trusted this long.
IMAGE_TTL_S = 60
# Flavors change only when the cloud adds some; an unknown flavor id is looked up again.
FLAVOR_TTL_S = 3600


class CatalogCache:
    def __init__(
        self,
        client: redis.Redis | None,
        prefix: str = "reimage:catalog",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`clock`: only for the in-process fallback's expiry (Redis expires its own keys)."""
        self._redis = client
        self._prefix = prefix
        self._clock = clock
        self._local: dict[str, tuple[float, str]] = {}

    def image(self, project_id: str, region: str, image_id: str) -> tuple[bool, ImageFacts | None]:
        """(known, facts): known False when not cached (or expired); facts None: IMS said
        there is no such image."""
        raw = self._get(f"{project_id}:{region}:image:{image_id.lower()}")
        if raw is None:
            return False, None
        facts = json.loads(raw)
        return True, None if facts is None else ImageFacts.from_dict(facts)

    def keep_image(
        self, project_id: str, region: str, image_id: str, facts: ImageFacts | None
    ) -> None:
        value = json.dumps(None if facts is None else facts.as_dict())
        self._set(f"{project_id}:{region}:image:{image_id.lower()}", value, IMAGE_TTL_S)

    def flavors(self, project_id: str, region: str) -> dict[str, Architecture] | None:
        raw = self._get(f"{project_id}:{region}:flavors")
        if raw is None:
            return None
        return {flavor: Architecture(arch) for flavor, arch in json.loads(raw).items()}

    def keep_flavors(self, project_id: str, region: str, flavors: dict[str, Architecture]) -> None:
        value = json.dumps({flavor: arch.value for flavor, arch in flavors.items()})
        self._set(f"{project_id}:{region}:flavors", value, FLAVOR_TTL_S)

    def _get(self, key: str) -> str | None:
        if self._redis is None:
            entry = self._local.get(key)
            return entry[1] if entry is not None and entry[0] > self._clock() else None
        try:
            raw = self._redis.get(f"{self._prefix}:{key}")
        except redis.RedisError:
            return None
        return raw.decode() if isinstance(raw, bytes) else raw

    def _set(self, key: str, value: str, ttl_s: int) -> None:
        if self._redis is None:
            self._local[key] = (self._clock() + ttl_s, value)
            return
        # A cache that cannot be written is only a slower one.
        with contextlib.suppress(redis.RedisError):
            self._redis.set(f"{self._prefix}:{key}", value, ex=ttl_s)
