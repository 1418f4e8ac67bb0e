"""Reading what pre-flight needs to know of a whole fleet, in bulk, and judging every server.

The dry run and the submission both come here (the send path judges one server at a time in
`services.send_checks`). The costs are bounded by pages, not by servers (issue 13): servers
come from list sweeps of 1000 (or one server-details call each when that is fewer calls),
flavors from one ListFlavors, images from one ListImages per distinct image (targets and the
servers' present images), system disks from ListVolumes (60 ids a call, or every volume of the
project 1000 a page when that is fewer calls). Every call spends the fleet's rate budget.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from orchestrator.cloud.catalog import VOLUME_IDS_PER_CALL, VOLUME_PAGE, EvsClient, ImsClient
from orchestrator.cloud.client import EcsClient
from orchestrator.cloud.errors import ConfigError, EcsError, Rejected, Retryable
from orchestrator.cloud.models import Server
from orchestrator.domain.preflight import (
    Architecture,
    ChangeRequest,
    Facts,
    ImageFacts,
    Judgement,
    Login,
    judge,
)
from orchestrator.errors import ServiceError
from orchestrator.runtime import Runtime

SERVER_PAGE = 1000
CONCURRENCY = 16
# Transient refusals of a read (throttled, busy, a 5xx) are tried again this many times.
READ_ATTEMPTS = 4

T = TypeVar("T")


class Abandoned(ServiceError):
    """The caller went away (a dry run whose client disconnected): stop spending calls."""

    code = "client_closed_request"

    def __init__(self) -> None:
        super().__init__("the client went away; pre-flight stopped reading the cloud")


class FactsUnavailable(ServiceError):
    """The cloud would not tell us what pre-flight needs; nothing was decided."""

    code = "preflight_unavailable"


class Incompatible(ServiceError):
    """Pre-flight found servers the change cannot work on, and the batch said `reject`."""

    code = "incompatible_servers"


@dataclass
class FleetFacts:
    """Facts of a fleet as read at one moment, and what reading them cost."""

    servers: dict[str, Server] = field(default_factory=dict)
    unreadable: set[str] = field(default_factory=set)  # the cloud kept refusing to show these
    flavors: dict[str, Architecture] = field(default_factory=dict)
    images: dict[str, ImageFacts | None] = field(default_factory=dict)
    disks: dict[str, int] = field(default_factory=dict)  # volume id -> size in GB
    calls: Counter[str] = field(default_factory=Counter)

    def facts_for(self, server_id: str) -> Facts:
        server = self.servers.get(server_id)
        if server is None:
            readable = server_id not in self.unreadable
            return Facts(None, None, None, None, self.images, server_readable=readable)
        return Facts(
            server=server.facts(),
            architecture=self.flavors.get(server.flavor_id or ""),
            current_image=self.images.get(server.image_id or ""),
            disk_gb=self.disks.get(server.system_disk_id or ""),
            images=self.images,
        )

    def frozen(self, server_id: str) -> dict[str, Any] | None:
        """What a server row keeps of its facts at submission (None: not found)."""
        server = self.servers.get(server_id)
        if server is None:
            return None
        current = self.images.get(server.image_id or "")
        architecture = self.flavors.get(server.flavor_id or "")
        return {
            "flavor_id": server.flavor_id,
            "architecture": architecture.value if architecture else None,
            "availability_zone": server.availability_zone,
            "charging_mode": server.charging_mode,
            "system_disk_id": server.system_disk_id,
            "system_disk_gb": self.disks.get(server.system_disk_id or ""),
            "image_id": server.image_id,
            "image_firmware": current.firmware.value if current else None,
            "image_architecture": current.architecture.value if current else None,
            "os_type": server.os_type,
            # Failure domains (policy.spread, waves_by) are read from these.
            "server_group": server.server_group,
            "tags": list(server.tags),
        }


def change_request(
    os_change: Mapping[str, Any],
    *,
    cloud_init: bool,
    skip_matching: bool,
    has_adminpass: bool,
    has_user_data: bool,
    image_id: str | None = None,
) -> ChangeRequest:
    """The batch's change as the rules read it (`os_change` as stored: without secrets);
    `image_id` replaces its image(s) (a rollback: each server back to its own)."""
    login = Login(
        keyname=bool(os_change.get("keyname")),
        adminpass=has_adminpass,
        user_data=has_user_data and cloud_init,
    )
    stop = os_change.get("mode") == "withStopServer"
    if image_id is not None:
        return ChangeRequest.for_image(
            image_id, login, stop_server=stop, skip_matching=skip_matching
        )
    images = os_change.get("images")
    if isinstance(images, Mapping) and images:
        return ChangeRequest(
            images={Architecture(arch): str(image) for arch, image in images.items()},
            single_image=False,
            login=login,
            stop_server=stop,
            skip_matching=skip_matching,
        )
    return ChangeRequest.for_image(
        str(os_change["imageid"]), login, stop_server=stop, skip_matching=skip_matching
    )


@dataclass(frozen=True)
class Reader:
    """One project and region's clients, with the caller's `abandoned` check."""

    ecs: EcsClient
    ims: ImsClient
    evs: EvsClient
    abandoned: Callable[[], bool]
    calls: Counter[str]

    async def call(self, kind: str, make: Callable[[], Awaitable[T]]) -> T:
        """One read, tried again on a transient refusal; counted under `kind`."""
        for attempt in range(READ_ATTEMPTS):
            if self.abandoned():
                raise Abandoned
            self.calls[kind] += 1
            try:
                return await make()
            except Retryable as exc:
                if attempt == READ_ATTEMPTS - 1:
                    raise FactsUnavailable(f"{kind}: {exc}") from None
                await asyncio.sleep(min(5.0, exc.retry_after_s or 0.5 * 2**attempt))
        raise AssertionError("unreachable")


async def read_fleet(
    rt: Runtime,
    *,
    project_id: str,
    region: str,
    server_ids: Sequence[str],
    image_ids: Iterable[str],
    known: Mapping[str, Server] | None = None,
    abandoned: Callable[[], bool] = lambda: False,
) -> FleetFacts:
    """Everything pre-flight needs about `server_ids` and the target images.

    `known`: servers already read (a selector's sweep), not read again. Raises `Abandoned`
    when `abandoned()` turns true, `FactsUnavailable` when the cloud keeps refusing a read.
    """
    fleet = FleetFacts()
    async with rt.http.cloud() as http:
        reader = Reader(
            ecs=rt.ecs_client(http, project_id=project_id, region=region),
            ims=rt.ims_client(http, project_id=project_id, region=region),
            evs=rt.evs_client(http, project_id=project_id, region=region),
            abandoned=abandoned,
            calls=fleet.calls,
        )
        targets = sorted(set(image_ids))
        # Two rounds of reads at once, not four in a row: what does not depend on the servers
        # (their flavors' catalogue, the target images) goes with them, what does (their own
        # images, their disks) after them. Each round is a network round trip or more (30 ms
        # over the bench's TLS); the POST waits for all of them. The flavors matter only when
        # a server was found: otherwise their read is dropped, and so is its failure.
        flavors = asyncio.ensure_future(_read_flavors(rt, reader, fleet))
        try:
            await _together(
                _read_servers(rt, reader, fleet, server_ids, known or {}),
                _read_images(rt, reader, fleet, targets),
            )
            if not fleet.servers:
                await _drop(flavors)
            own = {s.image_id for s in fleet.servers.values() if s.image_id} - set(targets)
            await _together(
                *([flavors] if fleet.servers else []),
                _read_images(rt, reader, fleet, sorted(own)),
                _read_disks(reader, fleet),
            )
        except ConfigError:
            raise  # our credentials or endpoint for this project: the API answers 422 naming it
        except Rejected as exc:
            raise FactsUnavailable(f"the cloud refused a pre-flight read: {exc}") from None
        except EcsError as exc:  # lost connections
            raise FactsUnavailable(f"pre-flight could not read the cloud: {exc}") from None
        finally:
            await _drop(flavors)  # nothing is left running past the judgement
    return fleet


async def _read_servers(
    rt: Runtime,
    reader: Reader,
    fleet: FleetFacts,
    server_ids: Sequence[str],
    known: Mapping[str, Server],
) -> None:
    wanted = {s.lower() for s in server_ids}
    for server_id in wanted & set(known):
        fleet.servers[server_id] = known[server_id]
    missing = wanted - set(fleet.servers)
    if not missing:
        return
    # The project's size as the last sweep saw it: a sweep must cost fewer calls than asking
    # for each server, or it is not worth starting.
    pages = rt.facts.project_pages(reader.ecs.project_id, reader.ecs.region) if rt.facts else None
    if len(missing) > max(1, pages or 1):
        await _sweep(rt, reader, fleet, missing)
        missing -= set(fleet.servers)
    limit = asyncio.Semaphore(CONCURRENCY)

    async def show(server_id: str) -> None:
        async with limit:
            try:
                server = await reader.call(
                    "show_server", partial(reader.ecs.show_server, server_id)
                )
            except FactsUnavailable:
                # One server the cloud would not show: judged `unknown` (and again before its
                # send), rather than failing the judgement of the whole fleet.
                fleet.unreadable.add(server_id)
                return
            except Rejected as exc:
                if exc.http_status == 404 or exc.code in ("Ecs.0114", "Ecs.0614"):
                    return  # neither shown nor unreadable: the cloud does not know it
                raise
            fleet.servers[server_id] = server

    await asyncio.gather(*(show(server_id) for server_id in sorted(missing)))


async def _sweep(rt: Runtime, reader: Reader, fleet: FleetFacts, wanted: set[str]) -> None:
    """List the project's servers while that costs fewer calls than asking for the rest one by
    one; a complete sweep also feeds the facts cache the send path reads."""
    swept: list[Server] = []
    marker: str | None = None
    started = rt.clock().timestamp()
    while True:
        page, total = await reader.call(
            "list_servers",
            partial(reader.ecs.list_servers_page, marker=marker, limit=SERVER_PAGE),
        )
        swept.extend(page)
        for server in page:
            if server.id.lower() in wanted:
                fleet.servers[server.id.lower()] = server
        if len(page) < SERVER_PAGE or 0 < total <= len(swept):
            if rt.facts is not None:
                rt.facts.store(reader.ecs.project_id, reader.ecs.region, swept, started_at=started)
            # A server a complete listing did not show is asked for by id before it is called
            # missing: a listing may lag behind a server just created.
            return
        pages_left = math.ceil(max(0, total - len(swept)) / SERVER_PAGE)
        if pages_left >= len(wanted - set(fleet.servers)):
            return  # asking for each remaining server is cheaper
        marker = page[-1].id


async def _together(*reads: Awaitable[None]) -> None:
    """Run `reads` at once; the first to fail cancels the others (no read is left running
    past the judgement it was for) and is raised as it came."""
    tasks = [asyncio.ensure_future(read) for read in reads]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _drop(read: asyncio.Future[None]) -> None:
    """Cancel `read` unless it is done, and forget how it ended."""
    read.cancel()
    await asyncio.gather(read, return_exceptions=True)


async def _read_flavors(rt: Runtime, reader: Reader, fleet: FleetFacts) -> None:
    flavors = await reader.call("list_flavors", reader.ecs.list_flavors)
    fleet.flavors.update({flavor.id: flavor.architecture for flavor in flavors})
    # The sends of this batch will want them: every worker finds them in the shared cache.
    rt.catalog.keep_flavors(reader.ecs.project_id, reader.ecs.region, fleet.flavors)


async def _read_images(
    rt: Runtime, reader: Reader, fleet: FleetFacts, image_ids: Sequence[str]
) -> None:
    limit = asyncio.Semaphore(CONCURRENCY)
    project_id, region = reader.ims.project_id, reader.ims.region

    async def find(image_id: str) -> None:
        async with limit:
            facts = await reader.call("list_images", partial(reader.ims.find_image, image_id))
            fleet.images[image_id] = facts
            rt.catalog.keep_image(project_id, region, image_id, facts)

    await asyncio.gather(*(find(image_id) for image_id in image_ids))


async def _read_disks(reader: Reader, fleet: FleetFacts) -> None:
    disk_ids = sorted({s.system_disk_id for s in fleet.servers.values() if s.system_disk_id})
    if not disk_ids:
        return
    by_ids_calls = math.ceil(len(disk_ids) / VOLUME_IDS_PER_CALL)
    if by_ids_calls > 2:
        first, total = await reader.call(
            "list_volumes", partial(reader.evs.volumes_page, marker=None, limit=VOLUME_PAGE)
        )
        _keep_disks(fleet, first, disk_ids)
        total = total or len(disk_ids)  # no count given: assume the project is the fleet
        pages = math.ceil(total / VOLUME_PAGE)
        if pages <= by_ids_calls + 1:
            last = first
            # Until a short page, or every disk wanted is found.
            while len(last) == VOLUME_PAGE and len(fleet.disks) < len(disk_ids):
                last, _ = await reader.call(
                    "list_volumes",
                    partial(reader.evs.volumes_page, marker=last[-1].id, limit=VOLUME_PAGE),
                )
                _keep_disks(fleet, last, disk_ids)
            return
    remaining = [d for d in disk_ids if d not in fleet.disks]
    for start in range(0, len(remaining), VOLUME_IDS_PER_CALL):
        chunk = remaining[start : start + VOLUME_IDS_PER_CALL]
        volumes = await reader.call("list_volumes", partial(reader.evs.volumes_by_id, chunk))
        _keep_disks(fleet, volumes, chunk)


def _keep_disks(fleet: FleetFacts, volumes: Iterable[Any], wanted: Sequence[str]) -> None:
    wanted_set = set(wanted)
    for volume in volumes:
        if volume.id in wanted_set:
            fleet.disks[volume.id] = volume.size_gb


def judge_fleet(
    fleet: FleetFacts, server_ids: Sequence[str], request: ChangeRequest
) -> dict[str, Judgement]:
    """Every server's verdict, in the order given."""
    return {server_id: judge(fleet.facts_for(server_id), request) for server_id in server_ids}
