"""The simulated cloud: one project's state and the order in which an API call meets the gateway's
throttle, the injected faults and the ECS rules; plus the counters behind `/_sim/stats`.

Besides ECS (changeos, jobs, servers, flavors, server groups) it answers what a pre-flight
check reads from IMS (ListImages) and EVS (the system disks), what a backup needs from IMS
(CreateImage from a server, its job, the quota, deletion), and the per-server health a health
gate probes; and it counts every changeos that Huawei's compatibility rules forbid, whatever it
was answered, and the peak of changeos jobs running at once per zone and per server group.

Pure and clock-free: every method takes `now` (monotonic seconds) and job, server and image
states are derived from it when read (an image job's outcome is applied to the catalog, at the
moment the job ended, before the catalog is read), so tests never sleep and nothing runs in the
background. The parts live beside it (`config`, `validation`, `servers`, `jobs`, `faults`,
`inventory`, `images`, `ims`, `backups`, `image_requests`, `image_jobs`, `health`, `flavors`,
`volumes`, `compatibility`, `server_groups`); the names this module always offered are
re-exported so it stays the one import callers need.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from orchestrator.simulator.backups import Backups, ImageSource
from orchestrator.simulator.compatibility import (
    FIRMWARE_FAIL_CODE,
    Breach,
    image_refusal,
    pairing_breaches,
    server_refusal,
)
from orchestrator.simulator.config import SimulatorConfig
from orchestrator.simulator.faults import (
    FaultDraws,
    TokenBucket,
    fault_settings,
    flow_control_error,
    parse_fault_changes,
    throttled,
    transient_error,
)
from orchestrator.simulator.flavors import DEFAULT_FLAVOR_ID, find_flavor, list_flavors
from orchestrator.simulator.health import HealthProbes, assess, health_body
from orchestrator.simulator.images import (
    ImageCatalog,
    ImageSpec,
    base_image,
    default_image,
)
from orchestrator.simulator.ims import check_ims_project, list_images
from orchestrator.simulator.inventory import (
    DEFAULT_AVAILABILITY_ZONE,
    DEFAULT_SYSTEM_DISK_GB,
    ServerSpec,
    generated_inventory,
)
from orchestrator.simulator.jobs import (
    JOB_FAIL_CODE,
    JOB_FAIL_REASON,
    JOB_TYPE,
    NEVER,
    JobBook,
    SimJob,
    job_body,
)
from orchestrator.simulator.replies import (
    Answer,
    ApiError,
    Reply,
    ecs_error,
    gateway_error,
    invalid,
    server_not_found,
)
from orchestrator.simulator.server_groups import (
    list_server_groups,
    server_groups,
    show_server_group,
)
from orchestrator.simulator.servers import (
    DEFAULT_LIST_LIMIT,
    MAX_LIST_LIMIT,
    Observed,
    ServerRegistry,
    SimServer,
    observe,
    parse_paging,
    server_body,
    server_filter,
    system_disk_id,
)
from orchestrator.simulator.shared import (
    UUID_PATTERN,
    JsonObject,
    Timestamps,
    is_uuid,
    unit_hash,
)
from orchestrator.simulator.validation import (
    PASSWORD_SPECIALS,
    USER_DATA_MAX_BYTES,
    WITH_STOP_SERVER,
    OsChangeRequest,
    intended_change,
    parse_os_change,
    password_is_complex,
)
from orchestrator.simulator.volumes import (
    SystemDisk,
    VolumeQuery,
    check_evs_project,
    check_volume_id,
    evs_error,
    list_volumes,
    listing,
    next_link,
    parse_volume_query,
    volume_body,
    volume_not_found,
)

__all__ = [
    "DEFAULT_LIST_LIMIT",
    "JOB_FAIL_CODE",
    "JOB_FAIL_REASON",
    "JOB_TYPE",
    "MAX_LIST_LIMIT",
    "PASSWORD_SPECIALS",
    "REQUEST_KINDS",
    "USER_DATA_MAX_BYTES",
    "UUID_PATTERN",
    "WITH_STOP_SERVER",
    "Answer",
    "ApiError",
    "Cloud",
    "ImageSpec",
    "JsonObject",
    "OsChangeRequest",
    "Reply",
    "ServerSpec",
    "SimJob",
    "SimServer",
    "SimulatorConfig",
    "ecs_error",
    "gateway_error",
    "is_uuid",
    "parse_os_change",
    "password_is_complex",
]

REQUEST_KINDS = (
    "changeos",
    "show_job",
    "show_server",
    "list_servers",
    "rejected_429",
    "list_images",
    "list_flavors",
    "show_volume",
    "list_volumes",
    "create_image",
    "show_image_job",
    "image_quota",
    "delete_image",
    "list_server_groups",
    "show_server_group",
)
# Faults counted as they are decided; "purged" and "broken" are read from the jobs instead.
_DECIDED_FAULTS = ("transient", "flow_control", "dropped", "dropped_failing", "slow", "stuck")


class Cloud:
    """One simulated project: the servers, their changeos jobs and what was asked of them.

    `config` is the current configuration: `set_faults` replaces it, `reset` restores the one
    the cloud was created with.
    """

    def __init__(
        self, config: SimulatorConfig, *, wall_offset: float = 0.0, now: float = 0.0
    ) -> None:
        """`wall_offset` turns the monotonic `now` into Unix time for the timestamps shown;
        `now` is when the inventory's `busy_for_s` count from."""
        self.initial_config = config
        self._timestamps = Timestamps(wall_offset)
        self._created_at = now
        self.reset()

    def reset(self, *, now: float | None = None) -> None:
        """Back to the start: the initial config and inventory, no job, no counter, a full
        bucket."""
        config = self.config = self.initial_config
        start = self._created_at if now is None else now
        base = base_image(config.seed)
        self._images = ImageCatalog(
            [
                base,
                *(default_image(image_id) for image_id in sorted(config.images or ())),
                *(config.image_specs or ()),
            ],
            closed=config.closed_catalog,
            now=start,
        )
        self._draws = FaultDraws(config.seed)
        self._bucket = TokenBucket(config.rate_limit, config.bucket_size)
        self._servers = ServerRegistry(config.seed, base.id)
        # Who owns each current system disk: ShowVolume's lookup, kept as disks are replaced.
        self._volume_owner: dict[str, str] = {}
        self._volume_of: dict[str, str] = {}
        self._jobs = JobBook()
        # The base image stands for the public image a fleet starts on: no quota counts it.
        self._backups = Backups(
            self._images, uncounted=frozenset({base.id}), timestamps=self._timestamps
        )
        self._health = HealthProbes()
        self._accepted: Counter[str] = Counter()
        self._received: Counter[str] = Counter()  # changeos per server id, whatever the answer
        # changeos per server id that Huawei's rules forbid (see `compatibility`), likewise.
        self._incompatible: Counter[str] = Counter()
        self._show_calls: Counter[str] = Counter()  # ShowServer calls per server id
        self._poll_calls: Counter[str] = Counter()  # ShowJob calls per job id
        self._list_calls = 0
        self._duplicates = 0
        # Every changeos received: (Unix time, server id, "accepted" or the error code).
        # (Unix time, server, answer, the image asked for when the body named one)
        self._changeos_log: list[tuple[float, str, str, str | None]] = []
        self._requests: dict[str, int] = dict.fromkeys(REQUEST_KINDS, 0)
        self._errors: Counter[str] = Counter()
        self._faults: Counter[str] = Counter()
        generated = generated_inventory(config.seed, config.inventory_size, config.inventory_tags)
        self.put_servers((*config.inventory, *generated), now=start)

    # --- the gateway's part -------------------------------------------------------------

    def admit(self, now: float) -> ApiError | None:
        """Take a token from the global bucket; an error when it is empty (or None: go on)."""
        if self._bucket.take(now):
            return None
        self._requests["rejected_429"] += 1
        self._errors["APIGW.0308"] += 1
        return throttled(self._bucket.rate or 0.0, self.config.retry_after)

    def record_error(self, code: str) -> None:
        """Count an error answered outside this model (authentication, unknown routes)."""
        self._errors[code] += 1

    def changeos_turned_away(
        self,
        server_id: str,
        code: str,
        *,
        now: float,
        project_id: str | None = None,
        body: bytes = b"",
    ) -> None:
        """A changeos the gateway refused (authentication, throttling) still reached us: with
        its `project_id` and `body`, it also counts when it broke a compatibility rule."""
        self._backups.settle(now)
        self.count_changeos_received(server_id)
        if project_id is not None:
            self._count_incompatible(project_id, server_id, body, now)
        self._changeos_log.append(
            (self._timestamps.unix(now), server_id, code, _requested_image(body))
        )

    def count_changeos_received(self, server_id: str) -> int:
        """Count one more changeos for this server (also those the gateway turned away);
        answer its attempt number, from 1."""
        self._received[server_id] += 1
        return self._received[server_id]

    # --- the ECS API ---------------------------------------------------------------------
    # Each call has two forms: `answer_*` (the reply and how to deliver it, for the HTTP
    # layer) and the plain one (just the reply, for tests of the rules).

    def change_os(
        self, project_id: str, server_id: str, body: bytes, *, cloud_init: bool, now: float
    ) -> Reply:
        """changeos v1 (`cloud_init=False`) or v2: `{"job_id": ...}` or the first rule broken."""
        return self.answer_change_os(
            project_id, server_id, body, cloud_init=cloud_init, now=now
        ).reply

    def answer_change_os(
        self, project_id: str, server_id: str, body: bytes, *, cloud_init: bool, now: float
    ) -> Answer:
        self._requests["changeos"] += 1
        self._backups.settle(now)  # an image made from a server may have become active
        key = ("changeos", server_id, self.count_changeos_received(server_id))
        self._count_incompatible(project_id, server_id, body, now)
        # Transient errors and flow control come first: the cloud refused before doing anything.
        reply = (
            self._transient(key)
            or self._flow_control(key)
            or self._change_os(project_id, server_id, body, cloud_init, now)
        )
        job = None if isinstance(reply, ApiError) else self._jobs.record(reply["job_id"])
        will_fail = job is not None and job.fails
        drop = job is not None and self._draws.hits("drop", self._drop_ratio(will_fail), *key)
        if drop:
            self._faults["dropped"] += 1
            self._faults["dropped_failing"] += will_fail
        answer = "accepted" if not isinstance(reply, ApiError) else reply.code
        self._changeos_log.append(
            (self._timestamps.unix(now), server_id, answer, _requested_image(body))
        )
        return self._deliver(reply, key, drop=drop)

    def _drop_ratio(self, will_fail: bool) -> float:
        config = self.config
        if config.drop_failing_ratio and will_fail:
            return max(config.drop_ratio, config.drop_failing_ratio)
        return config.drop_ratio

    def show_job(self, project_id: str, job_id: str, *, now: float) -> Reply:
        return self.answer_show_job(project_id, job_id, now=now).reply

    def answer_show_job(self, project_id: str, job_id: str, *, now: float) -> Answer:
        # One port serves ECS and IMS, whose job queries share this path on different hosts.
        if self._backups.is_image_job(job_id):
            return self._answer_show_image_job(project_id, job_id, now)
        self._requests["show_job"] += 1
        self._poll_calls[job_id] += 1
        # Keyed by server and job rank, not by the job id, which is random on every run.
        record = self._jobs.record(job_id)
        about = (job_id,) if record is None else (record.server_id, record.number)
        key = ("show_job", *about, self._poll_calls[job_id])
        reply = self._transient(key) or self._show_job(project_id, job_id, now)
        return self._deliver(reply, key)

    def show_server(self, project_id: str, server_id: str, *, now: float) -> Reply:
        return self.answer_show_server(project_id, server_id, now=now).reply

    def answer_show_server(self, project_id: str, server_id: str, *, now: float) -> Answer:
        self._requests["show_server"] += 1
        self._show_calls[server_id] += 1
        key = ("show_server", server_id, self._show_calls[server_id])
        reply = self._transient(key) or self._show_server(project_id, server_id, now)
        return self._deliver(reply, key)

    def list_servers(self, project_id: str, query: Mapping[str, str], *, now: float) -> Reply:
        """ListServersDetails: filters, then `marker` (or page-number `offset`) and `limit`."""
        return self.answer_list_servers(project_id, query, now=now).reply

    def answer_list_servers(
        self, project_id: str, query: Mapping[str, str], *, now: float
    ) -> Answer:
        self._requests["list_servers"] += 1
        self._list_calls += 1
        # Never a transient error: rollout tools select and reconcile with it, tests rely on it.
        key = ("list_servers", self._list_calls)
        return self._deliver(self._list_servers(project_id, query, now), key)

    def list_server_groups(self, project_id: str, query: Mapping[str, str], *, now: float) -> Reply:
        """ListServerGroups: every group, or a page of `limit` after `marker`."""
        return self.answer_list_server_groups(project_id, query, now=now).reply

    def answer_list_server_groups(
        self, project_id: str, query: Mapping[str, str], *, now: float
    ) -> Answer:
        self._requests["list_server_groups"] += 1
        # Never a transient error, like ListServersDetails and the pre-flight reads (target
        # selection reads the failure domains with it); late answers (slow_ratio) do happen.
        reply = self._check_project(project_id) or list_server_groups(
            server_groups(self._servers.listed()), query
        )
        return self._deliver(reply, ("list_server_groups", self._requests["list_server_groups"]))

    def show_server_group(self, project_id: str, group_id: str, *, now: float) -> Reply:
        return self.answer_show_server_group(project_id, group_id, now=now).reply

    def answer_show_server_group(self, project_id: str, group_id: str, *, now: float) -> Answer:
        self._requests["show_server_group"] += 1
        reply = self._check_project(project_id) or show_server_group(
            server_groups(self._servers.listed()), group_id
        )
        return self._deliver(reply, ("show_server_group", self._requests["show_server_group"]))

    # --- IMS, flavors and EVS: what a pre-flight check reads -------------------------------
    # Never a transient error, like ListServersDetails; late answers (slow_ratio) do happen.

    def list_images(
        self, header_project_id: str | None, query: Mapping[str, str], *, now: float
    ) -> Reply:
        """IMS ListImages; `header_project_id` is the X-Project-Id header, if any."""
        return self.answer_list_images(header_project_id, query, now=now).reply

    def answer_list_images(
        self, header_project_id: str | None, query: Mapping[str, str], *, now: float
    ) -> Answer:
        self._requests["list_images"] += 1
        self._backups.settle(now)
        reply = check_ims_project(header_project_id, self.config.project_id) or list_images(
            self._images, query, project_id=self.config.project_id, timestamps=self._timestamps
        )
        return self._deliver(reply, ("list_images", self._requests["list_images"]))

    def list_flavors(self, project_id: str, query: Mapping[str, str], *, now: float) -> Reply:
        return self.answer_list_flavors(project_id, query, now=now).reply

    def answer_list_flavors(
        self, project_id: str, query: Mapping[str, str], *, now: float
    ) -> Answer:
        self._requests["list_flavors"] += 1
        reply = self._check_project(project_id) or list_flavors(project_id, query)
        return self._deliver(reply, ("list_flavors", self._requests["list_flavors"]))

    def show_volume(self, project_id: str, volume_id: str, *, now: float) -> Reply:
        return self.answer_show_volume(project_id, volume_id, now=now).reply

    def answer_show_volume(self, project_id: str, volume_id: str, *, now: float) -> Answer:
        self._requests["show_volume"] += 1
        key = ("show_volume", volume_id, self._requests["show_volume"])
        return self._deliver(self._show_volume(project_id, volume_id, now), key)

    def list_volumes(self, project_id: str, query: Mapping[str, str], *, now: float) -> Reply:
        """ListVolumes: a repeated `ids` parameter is read from `query.items()`."""
        return self.answer_list_volumes(project_id, query, now=now).reply

    def answer_list_volumes(
        self, project_id: str, query: Mapping[str, str], *, now: float
    ) -> Answer:
        self._requests["list_volumes"] += 1
        key = ("list_volumes", self._requests["list_volumes"])
        return self._deliver(self._list_volumes(project_id, query, now), key)

    # --- IMS: images made from servers (backups), the quota, deletion -----------------------
    # Like ListImages: never a transient error; late answers (slow_ratio) do happen. The
    # project comes from X-Project-Id (`header_project_id`), as for ListImages.

    def create_image(self, header_project_id: str | None, body: bytes, *, now: float) -> Reply:
        """CreateImage from a server: `{"job_id": ...}` (an IMS job) or the first rule broken."""
        return self.answer_create_image(header_project_id, body, now=now).reply

    def answer_create_image(
        self, header_project_id: str | None, body: bytes, *, now: float
    ) -> Answer:
        self._requests["create_image"] += 1
        self._backups.settle(now)
        reply = self._backups.create(
            body,
            lambda server_id: self._image_source(server_id, now),
            config=self.config,
            refusal=check_ims_project(header_project_id, self.config.project_id),
            now=now,
        )
        return self._deliver(reply, ("create_image", self._requests["create_image"]))

    def create_image_turned_away(self, body: bytes, code: str, *, now: float) -> None:
        """A CreateImage the gateway refused still reached us: it goes into the image log."""
        self._backups.create_turned_away(body, code, now)

    def image_quota(
        self, project_id: str | None, *, now: float, where: str = "X-Project-Id"
    ) -> Reply:
        """The private image quota and how much of it is used; `project_id` comes from
        `where` (X-Project-Id, or the URL of the form that carries one)."""
        return self.answer_image_quota(project_id, now=now, where=where).reply

    def answer_image_quota(
        self, project_id: str | None, *, now: float, where: str = "X-Project-Id"
    ) -> Answer:
        self._requests["image_quota"] += 1
        self._backups.settle(now)
        reply = check_ims_project(
            project_id, self.config.project_id, where=where
        ) or self._backups.quota_body(self.config.image_quota)
        return self._deliver(reply, ("image_quota", self._requests["image_quota"]))

    def delete_image(
        self, header_project_id: str | None, image_id: str, body: bytes = b"", *, now: float
    ) -> Reply:
        """Glance-native delete: `{}` (sent as 204, no body; the image is gone at once) or
        why not."""
        return self.answer_delete_image(header_project_id, image_id, body, now=now).reply

    def answer_delete_image(
        self, header_project_id: str | None, image_id: str, body: bytes = b"", *, now: float
    ) -> Answer:
        self._requests["delete_image"] += 1
        self._backups.settle(now)
        error = self._backups.delete(
            image_id,
            body,
            refusal=check_ims_project(header_project_id, self.config.project_id),
            now=now,
        )
        key = ("delete_image", self._requests["delete_image"])
        return self._deliver({} if error is None else error, key)

    def delete_image_turned_away(self, image_id: str, code: str, *, now: float) -> None:
        """A delete the gateway refused still reached us: it goes into the image log."""
        self._backups.delete_turned_away(image_id, code, now)

    def _answer_show_image_job(self, project_id: str, job_id: str, now: float) -> Answer:
        self._requests["show_image_job"] += 1
        # Purged like changeos jobs, and then answered as any unknown job id on this port.
        reply: Reply = (
            check_ims_project(project_id, self.config.project_id, where="the URL")
            or self._backups.job_body(job_id, now, self.config.job_ttl)
            or ecs_error("Common.0011", f"Querying the job {job_id} failed.")
        )
        return self._deliver(reply, ("show_image_job", self._requests["show_image_job"]))

    def _image_source(self, server_id: str, now: float) -> ImageSource | None:
        """What CreateImage reads of the server `server_id` names; None: no such server."""
        server = self._find_server(server_id, now)
        if server is None:
            return None
        seen = self._observe(server, now)
        jobs = self._jobs.of_server(server.id)
        changing_os = bool(jobs) and not jobs[-1].is_final(now)
        return ImageSource(
            server_id=server.id,
            has_system_disk=server.has_system_disk,
            disk_size=seen.disk_size,
            image=self._images.describe(seen.image_id),
            busy=changing_os or server.busy_task(now) is not None,
        )

    # --- health ---------------------------------------------------------------------------

    def probe_health(self, server_id: str, *, now: float) -> JsonObject:
        """`GET /_sim/health/{server_id}`: `{"healthy": true, ...}` or `{"healthy": false,
        "why": ...}`. A control call: not an API request, never throttled nor faulty; it
        creates no server."""
        server = self._peek_server(server_id, now)
        jobs = self._jobs.of_server(server_id)
        config = self.config
        health = assess(
            server,
            jobs,
            broken_images=config.broken_images,
            boot_seconds=config.boot_seconds,
            now=now,
        )
        self._health.record(server_id, health, job_count=len(jobs), at=self._timestamps.unix(now))
        return health_body(server_id, health, self._timestamps)

    # --- for tests, benchmarks and the control endpoints -------------------------------------

    def add_server(
        self,
        *,
        now: float,
        server_id: str | None = None,
        name: str | None = None,
        tags: Iterable[str] = (),
        status: str = "ACTIVE",
        locked: bool = False,
        charging_mode: str = "0",
        has_system_disk: bool = True,
        image_id: str | None = None,
        key_name: str | None = None,
        task_state: str | None = None,
        busy_for_s: float | None = None,
        missing: bool = False,
        flavor_id: str = DEFAULT_FLAVOR_ID,
        system_disk_size: int = DEFAULT_SYSTEM_DISK_GB,
        availability_zone: str = DEFAULT_AVAILABILITY_ZONE,
        server_group: str | None = None,
    ) -> str:
        """Create a server with chosen attributes (the list API serves it); answer its id."""
        if server_id is not None and (not is_uuid(server_id) or self._servers.get(server_id)):
            raise ValueError(f"server id {server_id!r} is not a UUID or already exists")
        spec = ServerSpec(
            id=server_id,
            name=name,
            tags=tuple(tags),
            status=status,
            locked=locked,
            charging_mode=charging_mode,
            has_system_disk=has_system_disk,
            image_id=image_id,
            key_name=key_name,
            task_state=task_state,
            busy_for_s=busy_for_s,
            missing=missing,
            flavor_id=flavor_id,
            system_disk_size=system_disk_size,
            availability_zone=availability_zone,
            server_group=server_group,
        )
        return self.put_servers([spec], now=now)[0]

    def put_servers(self, specs: Iterable[ServerSpec], *, now: float) -> list[str]:
        """Add servers, or replace those with the same id; answer their ids.

        A replaced server keeps its job history (ShowJob, duplicates, a job still running) but
        its new attributes supersede what its finished jobs had changed.
        """
        ids = []
        for spec in specs:
            settled = 0 if spec.id is None else self._settled_job_count(spec.id, now)
            server = self._servers.put(spec, now, first_job=settled)
            self._index_volume(server, now)
            ids.append(server.id)
        return ids

    def put_images(self, images: Iterable[ImageSpec], *, now: float) -> list[str]:
        """Add images to the catalog, or replace those with the same id; answer their ids.
        Servers on a replaced image show its new attributes."""
        return self._images.put(images, now=now)

    def changeos_calls(self, since: float = 0.0) -> list[JsonObject]:
        """Every changeos received at or after Unix time `since`, oldest first, with its answer
        (`accepted`, dropped ones included, or the error code)."""
        return [
            {"at": at, "server_id": server_id, "answer": answer, "image_id": image_id}
            for at, server_id, answer, image_id in self._changeos_log
            if at >= since
        ]

    def image_calls(self, since: float = 0.0, *, now: float) -> list[JsonObject]:
        """Every CreateImage and image delete received at or after Unix time `since`, oldest
        first, with its answer and, for an image created, when it became active (or None)."""
        return self._backups.calls(since, now)

    def faults(self) -> JsonObject:
        """The fault settings in force."""
        return fault_settings(self.config)

    def set_faults(self, changes: object) -> JsonObject:
        """Change some fault settings (see `faults.FAULT_FIELDS`); ValueError when one is wrong.

        Jobs already accepted keep the timeline they were given.
        """
        self.config = dataclasses.replace(self.config, **parse_fault_changes(changes))
        self._bucket.configure(self.config.rate_limit, self.config.bucket_size)
        return self.faults()

    def stats(self, now: float) -> JsonObject:
        """The counters and the ground truth that tests and benchmarks check a client against."""
        self._jobs.purge(now, self.config.job_ttl)
        truth: JsonObject = {}
        for server in self._servers:
            jobs = self._jobs.of_server(server.id)
            if not jobs:
                continue
            seen = observe(server, jobs, now)
            truth[server.id] = {
                "job_id": jobs[-1].id,
                "job_status": jobs[-1].status(now),
                "image_id": seen.image_id,
                "status": seen.status,
            }
        faults = {kind: self._faults[kind] for kind in _DECIDED_FAULTS}
        faults["purged"] = self._jobs.purged_count
        faults["broken"] = self._jobs.broken_count(now)
        return {
            **self._counters(truth, faults, now),
            **self._health_stats(now),
            "images_created": self._backups.created,
            "images_deleted": self._backups.deleted,
            **self._domain_stats(),
        }

    def _domain_stats(self) -> JsonObject:
        """Per availability zone and per server group: the most changeos jobs that ran at one
        moment, and (per zone) how many there were. Every zone and group a listed server is in
        appears, with 0 when it had no job, so "none ran there" is an answer, not a gap."""
        zones: dict[str, int] = {}
        groups: dict[str, int] = {}
        for server in self._servers.listed():
            zones.setdefault(server.availability_zone, 0)
            if server.server_group is not None:
                groups.setdefault(server.server_group, 0)
        # Also the domains only jobs name (their server since replaced or gone), and those
        # whose every job ended as it began (a count, no peak).
        jobs_by_zone = self._jobs.count_by(_zone_of)
        for zone in jobs_by_zone:
            zones.setdefault(zone, 0)
        for group in self._jobs.count_by(_group_of):
            groups.setdefault(group, 0)
        return {
            "jobs_by_zone": {**zones, **jobs_by_zone},
            "peak_jobs_by_zone": {**zones, **self._jobs.peak_by(_zone_of)},
            "peak_jobs_by_group": {**groups, **self._jobs.peak_by(_group_of)},
        }

    def _counters(self, truth: JsonObject, faults: JsonObject, now: float) -> JsonObject:
        return {
            "changeos_accepted": dict(self._accepted),
            "duplicate_submissions": self._duplicates,
            "requests": dict(self._requests),
            "errors_by_code": dict(self._errors),
            "max_concurrent_jobs": self._jobs.max_concurrent,
            "truth": truth,
            "faults": faults,
            "changeos_received_by_server": dict(self._received),
            "concurrent_jobs_now": self._jobs.running_count(now),
            "incompatible_changeos": sum(self._incompatible.values()),
            "incompatible_changeos_by_server": dict(self._incompatible),
        }

    def _health_stats(self, now: float) -> JsonObject:
        """The probes, and per server with a job or a probe, when it became healthy after its
        latest job, or since it exists when it has none (Unix time; None while it is not),
        judged with the settings in force."""
        healthy_since: dict[str, float | None] = {}
        job_counts: dict[str, int] = {}
        config = self.config
        probed = self._health.by_server()
        for server in self._servers:
            jobs = self._jobs.of_server(server.id)
            job_counts[server.id] = len(jobs)
            if not jobs and server.id not in probed:
                continue
            health = assess(
                None if server.missing else server,
                jobs,
                broken_images=config.broken_images,
                boot_seconds=config.boot_seconds,
                now=now,
            )
            since = health.since if health.healthy else None
            healthy_since[server.id] = None if since is None else self._timestamps.unix(since)
        return {
            "health_probes": self._health.total,
            "health_probes_by_server": self._health.by_server(),
            "healthy_since_by_server": healthy_since,
            "first_healthy_probe_by_server": self._health.first_healthy(job_counts),
        }

    # --- faults --------------------------------------------------------------------------

    def _transient(self, key: Sequence[object]) -> ApiError | None:
        if not self._draws.hits("transient", self.config.transient_error_ratio, *key):
            return None
        self._faults["transient"] += 1
        return transient_error(self._faults["transient"] - 1)

    def _flow_control(self, key: Sequence[object]) -> ApiError | None:
        if not self._draws.hits("flow_control", self.config.flow_control_ratio, *key):
            return None
        self._faults["flow_control"] += 1
        return flow_control_error()

    def _deliver(self, reply: Reply, key: Sequence[object], *, drop: bool = False) -> Answer:
        """Count the reply's error, and decide whether it comes late."""
        if isinstance(reply, ApiError):
            self._errors[reply.code] += 1
        delay = 0.0
        if self._draws.hits("slow", self.config.slow_ratio, *key):
            self._faults["slow"] += 1
            delay = self.config.slow_seconds
        return Answer(reply, drop=drop, delay_s=delay)

    # --- the rules -----------------------------------------------------------------------

    def _check_project(self, project_id: str) -> ApiError | None:
        if project_id == self.config.project_id:
            return None
        return ecs_error(
            "Ecs.0023", f"The project ID {project_id} in the URL does not match the credentials."
        )

    def _change_os(
        self, project_id: str, server_id: str, body: bytes, cloud_init: bool, now: float
    ) -> Reply:
        error = self._check_project(project_id)
        if error is not None:
            return error
        request = parse_os_change(body, cloud_init=cloud_init)
        if isinstance(request, ApiError):
            return request
        image = self._images.get(request.image_id)
        error = image_refusal(request.image_id, image)
        if error is not None:
            return error  # before the server lookup, as the cloud does
        assert image is not None  # image_refusal vouched for it
        server = self._find_server(server_id, now)
        if server is None:
            return server_not_found(server_id)
        breaches = self._pairing(server, image, request.key_name, now)
        error = server_refusal(server) or next(
            (breach.refusal for breach in breaches if breach.refusal is not None), None
        )
        if error is not None:
            return error
        error = self._check_server_state(server, request, now)
        if error is not None:
            return error
        failure = next((breach for breach in breaches if breach.refusal is None), None)
        return {"job_id": self._start_job(server, request, image, failure, now).id}

    def _pairing(
        self, server: SimServer, image: ImageSpec, key_name: str | None, now: float
    ) -> list[Breach]:
        """The rules that bind this image (asked with `key_name`) to this server."""
        seen = self._observe(server, now)
        flavor = find_flavor(server.flavor_id)
        assert flavor is not None  # ServerSpec checked it
        return pairing_breaches(
            image=image,
            key_name=key_name,
            flavor=flavor,
            charging_mode=server.charging_mode,
            disk_size=seen.disk_size,
            current_image=self._images.describe(seen.image_id),
        )

    def _count_incompatible(self, project_id: str, server_id: str, body: bytes, now: float) -> None:
        """Count a changeos that Huawei's rules forbid, judged on what it asks for, before and
        whatever its answer (a fault, a refusal, an accepted job that will fail)."""
        if project_id != self.config.project_id:
            return  # not a server of this project
        server = self._peek_server(server_id, now)
        if server is None:
            return
        image_id, key_name = intended_change(body)
        incompatible = server_refusal(server) is not None
        if image_id is not None:
            image = self._images.get(image_id)
            if image_refusal(image_id, image) is not None:
                incompatible = True
            elif image is not None:
                incompatible = incompatible or bool(self._pairing(server, image, key_name, now))
        if incompatible:
            self._incompatible[server_id] += 1

    def _check_server_state(
        self, server: SimServer, request: OsChangeRequest, now: float
    ) -> ApiError | None:
        """Busy or running: what may pass once the server is idle and stopped (the rules that
        forbid a change outright are in `compatibility`)."""
        jobs = self._jobs.of_server(server.id)
        job_running = bool(jobs) and not jobs[-1].is_final(now)
        # Unconfirmed: a server whose image is being made shows no task_state, yet it is busy:
        # the guide says not to operate on it meanwhile, and ECS refuses what it cannot run.
        busy = job_running or self._backups.busy(server.id, now)
        if busy or server.busy_task(now) is not None:
            return ecs_error(
                "Ecs.0603", "Other commands are being executed on this server.", status=501
            )
        # The live status: a server a broken change left in ERROR is no longer running.
        if self._observe(server, now).status == "ACTIVE" and not request.with_stop_server:
            return ecs_error(
                "Ecs.0100",
                "The server status does not meet requirements: it is running "
                f"and mode is not {WITH_STOP_SERVER}.",
            )
        return None

    def _start_job(
        self,
        server: SimServer,
        request: OsChangeRequest,
        image: ImageSpec,
        failure: Breach | None,
        now: float,
    ) -> SimJob:
        """Accept the change. `failure`: the rule that makes its job fail, if any."""
        config, draws = self.config, self._draws
        previous = self._jobs.of_server(server.id)
        number = len(previous)
        if any(job.image_id.lower() == request.image_id.lower() for job in previous):
            # A second change to the same image, whatever became of the first: after a success
            # it reimages a server twice, after a failure it changes a server in ERROR again.
            self._duplicates += 1
        spread = config.job_seconds_spread * (2 * draws.unit("spread", server.id, number) - 1)
        seconds = config.job_seconds * (1 + spread)
        stuck = draws.hits("stuck", config.stuck_ratio, server.id, number)
        fails = failure is not None or self._fails(server.id)
        # The new system disk is made for the image: never smaller than it needs (section 11).
        disk_size = max(self._observe(server, now).disk_size, image.min_disk)
        job = SimJob(
            id=uuid.uuid4().hex,  # random: job ids must not repeat across simulator restarts
            sub_job_id=uuid.uuid4().hex,
            server_id=server.id,
            image_id=request.image_id,
            key_name=request.key_name,
            created_at=now,
            running_at=now + min(1.0, 0.1 * seconds),
            finished_at=NEVER if stuck else now + seconds,
            fails=fails,
            number=number,
            broken=not fails
            and draws.hits("broken", config.error_after_success_ratio, server.id, number),
            disk_size=disk_size,
            availability_zone=server.availability_zone,
            server_group=server.server_group,
        )
        if failure is not None:
            job = dataclasses.replace(
                job, fail_code=FIRMWARE_FAIL_CODE, fail_reason=failure.fail_reason
            )
        if stuck:
            self._faults["stuck"] += 1
        self._jobs.add(job, now)
        self._index_volume(server, now)  # the old system disk is gone, a new one replaces it
        self._accepted[server.id] += 1
        return job

    def _fails(self, server_id: str) -> bool:
        # Per server, not per job: a server that fails keeps failing, like a real bad image.
        return unit_hash(self.config.seed, server_id, "fail") < self.config.fail_ratio

    def _settled_job_count(self, server_id: str, now: float) -> int:
        """How many of the server's jobs have ended (a server runs one job at a time)."""
        jobs = self._jobs.of_server(server_id)
        return len(jobs) - (1 if jobs and not jobs[-1].is_final(now) else 0)

    def _find_server(self, server_id: str, now: float) -> SimServer | None:
        """A known server unless `missing`; else, unless the inventory is strict, any
        well-formed id exists: it is created on first reference."""
        server = self._peek_server(server_id, now)
        if server is None or self._servers.get(server_id) is not None:
            return server
        created = self._servers.create(server_id, now)
        self._index_volume(created, now)
        return created

    def _peek_server(self, server_id: str, now: float) -> SimServer | None:
        """What `_find_server` would answer, creating nothing."""
        if not is_uuid(server_id):
            return None
        server = self._servers.get(server_id)
        if server is not None:
            return None if server.missing else server
        if self.config.strict_inventory:
            return None
        return self._servers.preview(server_id, now)

    def _index_volume(self, server: SimServer, now: float) -> None:
        """Record the server's current system disk id (replacing its previous one)."""
        previous = self._volume_of.pop(server.id, None)
        if previous is not None:
            self._volume_owner.pop(previous, None)
        generation = self._observe(server, now).disk_generation
        volume_id = system_disk_id(self.config.seed, server.id, generation)
        self._volume_owner[volume_id] = server.id
        self._volume_of[server.id] = volume_id

    def _observe(self, server: SimServer, now: float) -> Observed:
        return observe(server, self._jobs.of_server(server.id), now)

    def _show_job(self, project_id: str, job_id: str, now: float) -> Reply:
        error = self._check_project(project_id)
        if error is not None:
            return error
        self._jobs.purge(now, self.config.job_ttl)
        job = self._jobs.visible(job_id)
        if job is None:
            # Also what the cloud answers once it has purged a finished job (about a day later).
            return ecs_error("Common.0011", f"Querying the job {job_id} failed.")
        return job_body(job, now, self._timestamps)

    def _show_server(self, project_id: str, server_id: str, now: float) -> Reply:
        error = self._check_project(project_id)
        if error is not None:
            return error
        server = self._find_server(server_id, now)
        if server is None:
            return server_not_found(server_id)
        return {"server": self._server_body(server, now)}

    def _list_servers(self, project_id: str, query: Mapping[str, str], now: float) -> Reply:
        error = self._check_project(project_id)
        if error is not None:
            return error
        paging = parse_paging(query)
        if isinstance(paging, ApiError):
            return paging
        limit, page = paging
        keep = server_filter(query, lambda server: self._observe(server, now).status)
        matching = [server for server in self._servers.listed() if keep(server)]
        marker = query.get("marker")
        if marker:
            after = self._servers.after(matching, marker)
            if after is None:
                return invalid(f"marker {marker} is not a known server id.")
            shown = after[:limit]
        else:
            start = (max(page, 1) - 1) * limit
            shown = matching[start : start + limit]
        return {
            "count": len(matching),
            "servers": [self._server_body(server, now) for server in shown],
        }

    def _server_body(self, server: SimServer, now: float) -> JsonObject:
        seen = self._observe(server, now)
        flavor = find_flavor(server.flavor_id)
        assert flavor is not None  # ServerSpec checked it
        return server_body(
            server,
            seen,
            flavor=flavor,
            image=self._images.describe(seen.image_id),
            seed=self.config.seed,
            project_id=self.config.project_id,
            ak=self.config.ak,
            timestamps=self._timestamps,
        )

    def _volume_page(
        self, volume_query: VolumeQuery, query: Mapping[str, str], now: float
    ) -> Reply:
        """ListVolumes without filters: the same answer as the general path, but only the
        page's disks are built (a project of 100,000 servers is paged through in seconds)."""
        candidates = [server for server in self._servers.listed() if server.has_system_disk]
        if volume_query.marker:
            owner = self._volume_owner.get(volume_query.marker)
            after = None if owner is None else self._servers.after(candidates, owner)
            if after is None or not any(server.id == owner for server in candidates):
                return evs_error("EVS.1024", "invalid filter marker!")
            remaining = after
        else:
            remaining = candidates
        window = remaining[volume_query.offset : volume_query.offset + volume_query.limit + 1]
        disks = [self._system_disk(server, now) for server in window]
        page = disks[: volume_query.limit]
        link = None
        if len(disks) > volume_query.limit:
            link = next_link(query, self.config.project_id, page[-1].id)
        return listing([self._volume_body(disk) for disk in page], len(candidates), link)

    def _system_disk(self, server: SimServer, now: float) -> SystemDisk:
        seen = self._observe(server, now)
        return SystemDisk(
            id=system_disk_id(self.config.seed, server.id, seen.disk_generation),
            server=server,
            seen=seen,
            image=self._images.describe(seen.image_id),
        )

    def _volume_body(self, disk: SystemDisk) -> JsonObject:
        return volume_body(
            disk,
            seed=self.config.seed,
            project_id=self.config.project_id,
            ak=self.config.ak,
            timestamps=self._timestamps,
        )

    def _show_volume(self, project_id: str, volume_id: str, now: float) -> Reply:
        error = check_evs_project(project_id, self.config.project_id) or check_volume_id(volume_id)
        if error is not None:
            return error
        owner = self._volume_owner.get(volume_id.lower())
        server = None if owner is None else self._servers.get(owner)
        if server is None or server.missing or not server.has_system_disk:
            return volume_not_found(volume_id)
        disk = self._system_disk(server, now)
        if disk.id != volume_id.lower():  # a disk an earlier change of OS deleted
            return volume_not_found(volume_id)
        return {"volume": self._volume_body(disk)}

    def _list_volumes(self, project_id: str, query: Mapping[str, str], now: float) -> Reply:
        error = check_evs_project(project_id, self.config.project_id)
        if error is not None:
            return error
        volume_query = parse_volume_query(query)
        if isinstance(volume_query, ApiError):
            return volume_query
        if volume_query.pages_only:
            return self._volume_page(volume_query, query, now)
        disks = [
            self._system_disk(server, now)
            for server in self._servers.listed()
            if server.has_system_disk
        ]
        paged = list_volumes(disks, volume_query, query, project_id=self.config.project_id)
        if isinstance(paged, ApiError):
            return paged
        page, count, link = paged
        return listing([self._volume_body(disk) for disk in page], count, link)


def _zone_of(job: SimJob) -> str:
    return job.availability_zone


def _group_of(job: SimJob) -> str | None:
    return job.server_group  # None: an ungrouped server's job counts for no group


def _requested_image(body: bytes) -> str | None:
    """The image a changeos body asks for (for the log; the rules parse the body themselves)."""
    try:
        change = json.loads(body or b"{}").get("os-change") or {}
    except (ValueError, AttributeError):
        return None
    image = change.get("imageid") if isinstance(change, dict) else None
    return image if isinstance(image, str) else None
