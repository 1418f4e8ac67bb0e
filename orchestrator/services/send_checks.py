"""Pre-flight again, for one server, right before its changeos (facts change between submission
and send: an image deleted, a disk replaced, a server locked by an order).

The server itself was just read by the send path; the rest comes from what the submission
froze on the row (the system disk's size, while the disk is the same one) and from a small
per-process cache of image and flavor facts, so a wave of a thousand servers costs a handful
of IMS and flavor calls, not a thousand. The decision is `domain.preflight.judge`, the same
function the dry run and the submission call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from orchestrator.cloud.models import Server
from orchestrator.domain.preflight import (
    Architecture,
    ChangeRequest,
    Facts,
    ImageFacts,
    Judgement,
    judge,
)
from orchestrator.runtime import Runtime

# Images may be deleted or replaced at any time: their facts are trusted this long.
IMAGE_TTL_S = 60.0
# Flavors change only when the cloud adds some; an unknown flavor id is looked up again.
FLAVOR_TTL_S = 3600.0


@dataclass
class CatalogCache:
    """Image and flavor facts per project and region, shared by one process's tasks."""

    clock: Callable[[], float] = time.monotonic
    _images: dict[tuple[str, str, str], tuple[float, ImageFacts | None]] = field(
        default_factory=dict
    )
    _flavors: dict[tuple[str, str], tuple[float, dict[str, Architecture]]] = field(
        default_factory=dict
    )

    def image(self, project_id: str, region: str, image_id: str) -> tuple[bool, ImageFacts | None]:
        """(known, facts): known False when not cached or too old."""
        entry = self._images.get((project_id, region, image_id))
        if entry is None or self.clock() - entry[0] > IMAGE_TTL_S:
            return False, None
        return True, entry[1]

    def keep_image(
        self, project_id: str, region: str, image_id: str, facts: ImageFacts | None
    ) -> None:
        self._images[(project_id, region, image_id)] = (self.clock(), facts)

    def flavors(self, project_id: str, region: str) -> dict[str, Architecture] | None:
        entry = self._flavors.get((project_id, region))
        if entry is None or self.clock() - entry[0] > FLAVOR_TTL_S:
            return None
        return entry[1]

    def keep_flavors(self, project_id: str, region: str, flavors: dict[str, Architecture]) -> None:
        self._flavors[(project_id, region)] = (self.clock(), flavors)


_CATALOG = CatalogCache()


def catalog() -> CatalogCache:
    """This process's cache (one per worker process, as its event loops come and go)."""
    return _CATALOG


async def judge_before_send(
    rt: Runtime,
    http: aiohttp.ClientSession,
    *,
    project_id: str,
    region: str,
    server: Server,
    frozen: dict[str, Any] | None,
    request: ChangeRequest,
    cache: CatalogCache | None = None,
) -> Judgement:
    """The verdict on `server` as just read. Raises the cloud's errors (`Retryable` for a
    transient one) when a fact cannot be read."""
    cache = cache or catalog()
    architecture = await _architecture(rt, http, project_id, region, server.flavor_id, cache)
    wanted = {*request.image_ids, *([server.image_id] if server.image_id else [])}
    images = {
        image_id: await _image(rt, http, project_id, region, image_id, cache)
        for image_id in sorted(wanted)
    }
    disk_gb = await _disk_gb(rt, http, project_id, region, server, frozen)
    facts = Facts(
        server=server.facts(),
        architecture=architecture,
        current_image=images.get(server.image_id or ""),
        disk_gb=disk_gb,
        images=images,
    )
    return judge(facts, request)


async def _architecture(
    rt: Runtime,
    http: aiohttp.ClientSession,
    project_id: str,
    region: str,
    flavor_id: str | None,
    cache: CatalogCache,
) -> Architecture | None:
    if flavor_id is None:
        return None
    flavors = cache.flavors(project_id, region)
    if flavors is None or flavor_id not in flavors:
        client = rt.ecs_client(http, project_id=project_id, region=region)
        flavors = {f.id: f.architecture for f in await client.list_flavors()}
        cache.keep_flavors(project_id, region, flavors)
    return flavors.get(flavor_id)


async def _image(
    rt: Runtime,
    http: aiohttp.ClientSession,
    project_id: str,
    region: str,
    image_id: str,
    cache: CatalogCache,
) -> ImageFacts | None:
    known, facts = cache.image(project_id, region, image_id)
    if known:
        return facts
    client = rt.ims_client(http, project_id=project_id, region=region)
    facts = await client.find_image(image_id)
    cache.keep_image(project_id, region, image_id, facts)
    return facts


async def _disk_gb(
    rt: Runtime,
    http: aiohttp.ClientSession,
    project_id: str,
    region: str,
    server: Server,
    frozen: dict[str, Any] | None,
) -> int | None:
    """The system disk's size: as frozen at submission while it is the same disk (a disk
    only ever grows), else read again, but only for a yearly/monthly server, the one case the
    size can block."""
    if not server.system_disk_id:
        return None
    frozen = frozen or {}
    if frozen.get("system_disk_id") == server.system_disk_id and frozen.get("system_disk_gb"):
        return int(frozen["system_disk_gb"])
    if server.charging_mode != "1":
        return None
    client = rt.evs_client(http, project_id=project_id, region=region)
    return (await client.show_volume(server.system_disk_id)).size_gb
