"""Pre-flight again, for one server, right before its changeos (facts change between submission
and send: an image deleted, a disk replaced, a server locked by an order).

The server itself was just read by the send path; the rest comes from what the submission
froze on the row (the system disk's size, while the disk is the same one) and from a small
per-process cache of image and flavor facts, so a wave of a thousand servers costs a handful
of IMS and flavor calls, not a thousand. The decision is `domain.preflight.judge`, the same
function the dry run and the submission call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import aiohttp

from orchestrator.cloud.catalog_cache import CatalogCache
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

T = TypeVar("T")
# Lookups in flight in this process, per event loop and key: twenty-five servers of one task
# that all miss the cache wait for one call, instead of each spending a rate token on it.
_IN_FLIGHT: dict[tuple[int, str], asyncio.Task[Any]] = {}


async def _once(key: str, read: Callable[[], Coroutine[Any, Any, T]]) -> T:
    loop = asyncio.get_running_loop()
    slot = (id(loop), key)
    task = _IN_FLIGHT.get(slot)
    if task is None or task.done():
        task = loop.create_task(read())
        _IN_FLIGHT[slot] = task
        task.add_done_callback(lambda _: _IN_FLIGHT.pop(slot, None))
    result: T = await asyncio.shield(task)
    return result


async def judge_before_send(
    rt: Runtime,
    http: aiohttp.ClientSession,
    *,
    project_id: str,
    region: str,
    server: Server,
    frozen: dict[str, Any] | None,
    request: ChangeRequest,
) -> Judgement:
    """The verdict on `server` as just read. Raises the cloud's errors (`Retryable` for a
    transient one) when a fact cannot be read."""
    cache = rt.catalog
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

        async def read() -> dict[str, Architecture]:
            client = rt.ecs_client(http, project_id=project_id, region=region)
            found = {f.id: f.architecture for f in await client.list_flavors()}
            cache.keep_flavors(project_id, region, found)
            return found

        flavors = await _once(f"{project_id}:{region}:flavors", read)
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

    async def read() -> ImageFacts | None:
        client = rt.ims_client(http, project_id=project_id, region=region)
        found = await client.find_image(image_id)
        cache.keep_image(project_id, region, image_id, found)
        return found

    return await _once(f"{project_id}:{region}:image:{image_id}", read)


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
