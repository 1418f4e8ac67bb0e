"""IMS private images made from servers (fleet-safety-api.md sections 2-6): CreateImage's rules
past the body (the server, its system disk, the name, a task in progress, the quota), the image
it lists at once and its job, which turns it `active` (or `killed`) when it ends, the quota
query, the Glance-native delete, and the log of every CreateImage and delete received.

The image catalog is shared with the rest of the cloud; `settle` brings it up to `now` before it
is read, applying each ended job's outcome at the moment the job ended.
"""

from __future__ import annotations

import dataclasses
import heapq
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.simulator.config import SimulatorConfig
from orchestrator.simulator.image_jobs import ImageJob, ImageJobBook, image_job_body
from orchestrator.simulator.image_requests import (
    CreateImageRequest,
    instance_id_of,
    parse_create_image,
    parse_delete_image,
)
from orchestrator.simulator.images import MIN_DISK_RANGE, ImageCatalog, ImageSpec
from orchestrator.simulator.ims import ims_error
from orchestrator.simulator.replies import ApiError, Reply
from orchestrator.simulator.shared import JsonObject, Timestamps, unit_hash

# Statuses of an image still being created: IMS refuses to delete it (IMG.0090).
_BEING_CREATED = frozenset({"queued", "saving"})


@dataclass(frozen=True)
class ImageSource:
    """What CreateImage reads of the server an image is made from."""

    server_id: str
    has_system_disk: bool
    disk_size: int  # GB of its current system disk
    image: ImageSpec  # the image it runs now
    busy: bool  # a change of OS or another task is in progress on it


# Finds the server an instance_id names: None when it does not exist.
SourceLookup = Callable[[str], ImageSource | None]


@dataclass(frozen=True)
class _Call:
    """A CreateImage or delete received, with its answer."""

    at: float  # Unix time
    kind: str  # "create" | "delete"
    server_id: str | None
    image_id: str | None
    answer: str  # "accepted" or the error code
    job_id: str | None = None


class Backups:
    """The images made from servers in one simulated project, and the calls about them."""

    def __init__(
        self,
        catalog: ImageCatalog,
        *,
        uncounted: frozenset[str],
        timestamps: Timestamps,
    ) -> None:
        """`uncounted`: private images the quota ignores (the base image every server starts
        on stands for a public image, which counts for nothing)."""
        self._catalog = catalog
        self._uncounted = uncounted
        self._timestamps = timestamps
        self._jobs = ImageJobBook()
        self._unsettled: list[tuple[float, str]] = []  # heap of (end, job id)
        self._calls: list[_Call] = []
        self.created = 0  # accepted CreateImage calls
        self.deleted = 0

    # --- reading ---------------------------------------------------------------------------

    def settle(self, now: float) -> None:
        """Apply to the catalog the outcome of every image job that has ended by `now`."""
        while self._unsettled and self._unsettled[0][0] <= now:
            end, job_id = heapq.heappop(self._unsettled)
            job = self._jobs.get(job_id)
            assert job is not None  # every queued id was added
            image = self._catalog.get(job.image_id)
            if image is None or not self._catalog.holds(job.image_id):
                continue  # replaced by /_sim/images and deleted since: nothing to finish
            status = "killed" if job.fails else "active"
            self._catalog.put([dataclasses.replace(image, status=status)], now=end)

    def busy(self, server_id: str, now: float) -> bool:
        """Whether an image is being made from the server."""
        return self._jobs.running_on(server_id, now)

    def job_body(self, job_id: str, now: float, ttl: float | None) -> JsonObject | None:
        """The IMS ShowJob body; None when no image job has that id (or it was purged)."""
        job = self._jobs.visible(job_id, now, ttl)
        return None if job is None else image_job_body(job, now, self._timestamps)

    def is_image_job(self, job_id: str) -> bool:
        return self._jobs.get(job_id) is not None

    def private_image_count(self) -> int:
        """What counts against the quota: the project's own images, whatever their status."""
        return sum(
            1
            for image in self._catalog
            if image.visibility == "private" and image.id not in self._uncounted
        )

    def quota_body(self, quota: int) -> JsonObject:
        """`GET /v1/cloudimages/quota`; only the private image quota is simulated."""
        used = self.private_image_count()
        resource = {"type": "image", "used": used, "quota": quota, "min": 1, "max": 1000}
        return {"quotas": {"resources": [resource]}}

    def calls(self, since: float, now: float) -> list[JsonObject]:
        """Every CreateImage and delete received at or after Unix time `since`, oldest first;
        `active_at` is the Unix time the image created became active, or None."""
        entries = []
        for call in self._calls:
            if call.at < since:
                continue
            job = None if call.job_id is None else self._jobs.get(call.job_id)
            active_at = None if job is None else job.active_at(now)
            entries.append(
                {
                    "at": call.at,
                    "kind": call.kind,
                    "server_id": call.server_id,
                    "image_id": call.image_id,
                    "answer": call.answer,
                    "active_at": None if active_at is None else self._timestamps.unix(active_at),
                }
            )
        return entries

    # --- CreateImage -------------------------------------------------------------------------

    def create(
        self,
        body: bytes,
        source_of: SourceLookup,
        *,
        config: SimulatorConfig,
        refusal: ApiError | None,
        now: float,
    ) -> Reply:
        """CreateImage: `{"job_id": ...}` or the first rule broken. `source_of` finds the server
        an id names; `refusal`, when set, is what the call answers before anything is read
        (another project)."""
        reply = refusal or self._answer(body, source_of, config, now)
        self._record_create(body, reply, now)
        return reply

    def _answer(
        self, body: bytes, source_of: SourceLookup, config: SimulatorConfig, now: float
    ) -> Reply:
        request = parse_create_image(body)
        if isinstance(request, ApiError):
            return request
        return self._make(request, source_of(request.instance_id), config, now)

    def create_turned_away(self, body: bytes, code: str, now: float) -> None:
        """A CreateImage the gateway refused (authentication, throttling) still reached us."""
        self._record(_Call(self._timestamps.unix(now), "create", instance_id_of(body), None, code))

    def _make(
        self,
        request: CreateImageRequest,
        source: ImageSource | None,
        config: SimulatorConfig,
        now: float,
    ) -> Reply:
        if source is None:
            return ims_error("IMG.0005", f"The ECS {request.instance_id} does not exist.")
        if not source.has_system_disk:
            return ims_error("IMG.0119", f"The ECS {source.server_id} has no system disk.")
        if source.disk_size > MIN_DISK_RANGE[1]:
            # Chosen: the guide sends disks over 1 TB to whole-ECS images; IMG.0006 is the
            # error table's "the system disk cannot be imaged".
            return ims_error(
                "IMG.0006",
                f"The system disk ({source.disk_size} GB) is larger than 1 TB: make a "
                "full-ECS image instead.",
            )
        if any(image.name == request.name for image in self._own_images()):
            return ims_error("IMG.0009", f"An image named {request.name} already exists.")
        if source.busy or self.busy(source.server_id, now):
            return ims_error(
                "IMG.0010", "The ECS has in-progress tasks. Wait until they finish and retry."
            )
        if self.private_image_count() >= config.image_quota:
            return ims_error(
                "IMG.0015",
                f"The private image quota ({config.image_quota}) is reached: delete images "
                "or raise the quota.",
            )
        job = self._start(request, source, config, now)
        return {"job_id": job.id}

    def _own_images(self) -> list[ImageSpec]:
        # Chosen: names must be unique among the project's own images only (the docs say a
        # used name "may be refused", not among which images, nor when).
        return [image for image in self._catalog if image.visibility == "private"]

    def _start(
        self,
        request: CreateImageRequest,
        source: ImageSource,
        config: SimulatorConfig,
        now: float,
    ) -> ImageJob:
        current = source.image
        image = ImageSpec(
            id=str(uuid.uuid4()),  # random, like job ids: never the same across restarts
            name=request.name,
            # Chosen (Unconfirmed whether it is listed before its job ends): listed at once,
            # `saving` while its job runs.
            status="saving",
            min_disk=max(source.disk_size, MIN_DISK_RANGE[0]),
            min_ram=current.min_ram if request.min_ram is None else request.min_ram,
            os_type=current.os_type,
            os_version=current.os_version,
            platform=current.platform,
            architecture=current.architecture,
            firmware=current.firmware,
            cloud_init=current.cloud_init,
            visibility="private",
            description=request.description,
            tags=request.tags,
            source_image_id=current.id,
            source_server_id=source.server_id,
        )
        self._catalog.put([image], now=now)
        seconds = config.backup_seconds
        # Per server, not per job: a server whose backups fail keeps failing, as fail_ratio.
        fails = unit_hash(config.seed, source.server_id, "backup-fail") < config.backup_fail_ratio
        job = ImageJob(
            id=uuid.uuid4().hex,
            image_id=image.id,
            image_name=image.name,
            server_id=source.server_id,
            created_at=now,
            running_at=now + min(1.0, 0.1 * seconds),
            finished_at=now + seconds,
            fails=fails,
        )
        self._jobs.add(job)
        heapq.heappush(self._unsettled, (job.finished_at, job.id))
        self.created += 1
        return job

    def _record_create(self, body: bytes, reply: Reply, now: float) -> None:
        at = self._timestamps.unix(now)
        if isinstance(reply, ApiError):
            self._record(_Call(at, "create", instance_id_of(body), None, reply.code))
            return
        job = self._jobs.get(reply["job_id"])
        assert job is not None  # just accepted
        self._record(_Call(at, "create", job.server_id, job.image_id, "accepted", job.id))

    # --- delete ------------------------------------------------------------------------------

    def delete(
        self, image_id: str, body: bytes, *, refusal: ApiError | None, now: float
    ) -> ApiError | None:
        """`DELETE /v2/images/{image_id}`: None (204, gone at once) or why not."""
        image = self._catalog.get(image_id)
        error = refusal or parse_delete_image(body) or self._deletion_refusal(image_id, image)
        if error is None:
            self._catalog.delete(image_id)
            self.deleted += 1
        source = None if image is None else image.source_server_id
        answer = "accepted" if error is None else error.code
        self._record(_Call(self._timestamps.unix(now), "delete", source, image_id.lower(), answer))
        return error

    def delete_turned_away(self, image_id: str, code: str, now: float) -> None:
        """A delete the gateway refused still reached us."""
        image = self._catalog.get(image_id)
        source = None if image is None else image.source_server_id
        self._record(_Call(self._timestamps.unix(now), "delete", source, image_id.lower(), code))

    def _deletion_refusal(self, image_id: str, image: ImageSpec | None) -> ApiError | None:
        if image is None:
            # Unconfirmed: the docs leave the answer for an unknown or deleted id unsaid; a
            # 404 with the error table's "image not found" code, in the IMS body.
            return ims_error("IMG.0027", f"The image {image_id} does not exist.", status=404)
        if image.visibility == "public":
            return ims_error("IMG.0094", "Public images cannot be deleted.")
        if image.protected:
            return ims_error("IMG.0091", f"The image {image_id} is protected.")
        if image.visibility == "shared":
            return ims_error("IMG.0092", f"The image {image_id} does not belong to you.")
        if image.status in _BEING_CREATED:
            return ims_error("IMG.0090", f"The image {image_id} is still being created.")
        return None

    def _record(self, call: _Call) -> None:
        self._calls.append(call)
