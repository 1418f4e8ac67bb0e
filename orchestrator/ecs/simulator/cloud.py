"""The simulated cloud's state and rules: servers, changeos jobs, the throttling bucket and the
counters behind `/_sim/stats`.

Pure and clock-free: every method takes `now` (monotonic seconds) and job and server states are
derived from it when read, so tests never sleep and nothing runs in the background.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import json
import math
import re
import string
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

JsonObject = dict[str, Any]

UUID_PATTERN = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
PASSWORD_SPECIALS = frozenset("!@$%^-_=+[{}]:,./?~#*")
USER_DATA_MAX_BYTES = 32 * 1024
WITH_STOP_SERVER = "withStopServer"
JOB_TYPE = "changeOS"
JOB_FAIL_CODE = "Ecs.0202"
JOB_FAIL_REASON = "Creating the system disk failed."
DEFAULT_LIST_LIMIT = 25
MAX_LIST_LIMIT = 1000
REQUEST_KINDS = ("changeos", "show_job", "show_server", "list_servers", "rejected_429")

# ListServersDetails documents these aliases: a server in transition matches its resting state.
_STATUS_FILTER = {
    "ACTIVE": frozenset({"ACTIVE", "REBOOT", "REBUILD", "MIGRATING", "RESIZE"}),
    "SHUTOFF": frozenset({"SHUTOFF", "RESIZE", "REBUILD"}),
}
_VM_STATE = {"ACTIVE": "active", "SHUTOFF": "stopped", "ERROR": "error"}
_POWER_STATE = {"ACTIVE": 1, "SHUTOFF": 4}
_FLAVOR = {"id": "s6.small.1", "name": "s6.small.1", "disk": "0", "vcpus": "1", "ram": "1024"}
# A fixed namespace, so every derived id (old image, volume, port...) is the same on every run.
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "reimage:ecs-simulator")


def is_uuid(value: object) -> bool:
    return isinstance(value, str) and UUID_PATTERN.fullmatch(value) is not None


@dataclass(frozen=True)
class SimulatorConfig:
    """What the simulated account looks like and how its jobs behave."""

    ak: str
    sk: str
    project_id: str
    job_seconds: float = 5.0
    fail_ratio: float = 0.0
    seed: int = 0
    images: frozenset[str] | None = None  # None: every well-formed image id exists and is active
    auth_token: str | None = None
    rate_limit: float | None = None  # requests per second over every API call, None: unlimited
    burst: int | None = None  # bucket size; None: one second's worth of rate_limit

    def __post_init__(self) -> None:
        if not (self.ak and self.sk and self.project_id):
            raise ValueError("ak, sk and project_id are required")
        if not (math.isfinite(self.job_seconds) and self.job_seconds >= 0):
            raise ValueError("job_seconds must be a finite number >= 0")
        if not 0.0 <= self.fail_ratio <= 1.0:
            raise ValueError("fail_ratio must be within [0, 1]")
        if self.images is not None and not all(is_uuid(image) for image in self.images):
            raise ValueError("images must be UUIDs")
        if self.rate_limit is not None and not (
            math.isfinite(self.rate_limit) and self.rate_limit > 0
        ):
            raise ValueError("rate_limit must be > 0")
        if self.burst is not None and (self.burst < 1 or self.rate_limit is None):
            raise ValueError("burst must be >= 1 and needs rate_limit")

    @property
    def bucket_size(self) -> int:
        return self.burst or max(1, math.ceil(self.rate_limit or 1))


@dataclass(frozen=True)
class ApiError:
    """An error answer: the ECS nested body, or the API gateway's flat one when `gateway`."""

    status: int
    code: str
    message: str
    gateway: bool = False

    def body(self, request_id: str) -> JsonObject:
        if self.gateway:
            return {"error_code": self.code, "error_msg": self.message, "request_id": request_id}
        return {"error": {"code": self.code, "message": self.message, "details": []}}


# What every Cloud operation answers: the success body, or the error to send instead.
Reply = JsonObject | ApiError


def ecs_error(code: str, message: str, status: int = 400) -> ApiError:
    return ApiError(status=status, code=code, message=message)


def gateway_error(status: int, code: str, message: str) -> ApiError:
    return ApiError(status=status, code=code, message=message, gateway=True)


def _invalid(message: str) -> ApiError:
    return ecs_error("Ecs.0005", message)


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


def _decode_option(body: bytes) -> JsonObject | ApiError:
    try:
        data = json.loads(body)
    except ValueError:
        return _invalid("The request body is not valid JSON.")
    option = data.get("os-change") if isinstance(data, dict) else None
    if not isinstance(option, dict):
        return _invalid("The request body must hold an os-change object.")
    return option


def _metadata(option: JsonObject) -> JsonObject:
    metadata = option.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def _check_field_types(option: JsonObject) -> ApiError | None:
    if not is_uuid(option.get("imageid")):
        return _invalid("imageid is missing or is not a UUID.")
    for name in ("adminpass", "keyname", "userid", "mode", "isAutoPay"):
        value = option.get(name)
        if value is not None and not (isinstance(value, str) and value):
            return _invalid(f"{name} must be a non-empty string.")
    if option.get("metadata") is not None and not isinstance(option["metadata"], dict):
        return _invalid("metadata must be an object.")
    return None


def _check_credentials(option: JsonObject, *, cloud_init: bool) -> ApiError | None:
    has_password = option.get("adminpass") is not None
    has_key = option.get("keyname") is not None
    if has_password and has_key:
        return _invalid("adminpass and keyname cannot both be given.")
    if has_password or has_key:
        return None
    # Only Cloud-Init images can take their password from user_data instead.
    if cloud_init and _metadata(option).get("user_data") is not None:
        return None
    return _invalid("One of adminpass and keyname is required.")


def _check_password(option: JsonObject) -> ApiError | None:
    password = option.get("adminpass")
    if password is None or password_is_complex(password):
        return None
    return ecs_error("Ecs.0011", "The password does not meet the complexity requirements.")


def _check_byol(option: JsonObject) -> ApiError | None:
    byol = _metadata(option).get("BYOL")
    if byol is None or byol == "true":
        return None
    return _invalid("metadata.BYOL can only be true.")


def _check_mode(option: JsonObject) -> ApiError | None:
    mode = option.get("mode")
    if mode is None or mode == WITH_STOP_SERVER:
        return None
    return _invalid(f"mode can only be {WITH_STOP_SERVER}.")


def _check_user_data(option: JsonObject, *, cloud_init: bool) -> ApiError | None:
    user_data = _metadata(option).get("user_data")
    if user_data is None:
        return None
    if not cloud_init:
        return _invalid("user_data is only accepted by the v2 (Cloud-Init) changeos API.")
    if not isinstance(user_data, str):
        return _invalid("user_data must be a base64 string.")
    try:
        decoded = base64.b64decode(user_data, validate=True)
    except (binascii.Error, ValueError):
        return _invalid("user_data is not valid base64.")
    if len(decoded) > USER_DATA_MAX_BYTES:
        return _invalid(f"user_data exceeds {USER_DATA_MAX_BYTES} bytes once decoded.")
    return None


@dataclass
class SimServer:
    """A server at rest. Its live status and image are derived from its jobs, never stored."""

    id: str
    name: str
    status: str
    image_id: str
    locked: bool
    charging_mode: str
    has_system_disk: bool
    tags: tuple[str, ...]
    key_name: str | None
    created_at: float
    job_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SimJob:
    """A changeos job: its whole timeline is fixed when it is accepted."""

    id: str
    sub_job_id: str
    server_id: str
    image_id: str
    key_name: str | None
    created_at: float
    running_at: float
    finished_at: float
    fails: bool

    def is_final(self, now: float) -> bool:
        return now >= self.finished_at

    def status(self, now: float) -> str:
        if self.is_final(now):
            return "FAIL" if self.fails else "SUCCESS"
        return "RUNNING" if now >= self.running_at else "INIT"


@dataclass(frozen=True)
class _Observed:
    status: str
    task_state: str
    image_id: str
    key_name: str | None
    updated_at: float


def _unit_hash(*parts: object) -> float:
    """A stable number in [0, 1) (Python's hash() changes between runs)."""
    digest = hashlib.sha256(":".join(str(part) for part in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _derived_uuid(*parts: object) -> str:
    return str(uuid.uuid5(_NAMESPACE, ":".join(str(part) for part in parts)))


class Cloud:
    """One simulated project: the servers, their changeos jobs and what was asked of them."""

    def __init__(self, config: SimulatorConfig, *, wall_offset: float = 0.0) -> None:
        """`wall_offset` turns the monotonic `now` into Unix time for the timestamps shown."""
        self.config = config
        self._wall_offset = wall_offset
        self._known_images = (
            None if config.images is None else frozenset(i.lower() for i in config.images)
        )
        self.reset()

    def reset(self) -> None:
        """Forget every server, job, counter and spent token."""
        self._servers: dict[str, SimServer] = {}
        self._jobs: dict[str, SimJob] = {}
        self._pending_ends: list[float] = []  # heap of finish times of jobs maybe not final
        self._accepted: Counter[str] = Counter()
        self._duplicates = 0
        self._requests: dict[str, int] = dict.fromkeys(REQUEST_KINDS, 0)
        self._errors: Counter[str] = Counter()
        self._max_concurrent = 0
        self._tokens = float(self.config.bucket_size)
        self._tokens_at: float | None = None

    # --- the gateway's part -------------------------------------------------------------

    def admit(self, now: float) -> ApiError | None:
        """Take a token from the global bucket; an error when it is empty (or None: go on)."""
        rate = self.config.rate_limit
        if rate is None:
            return None
        size = self.config.bucket_size
        if self._tokens_at is not None:
            self._tokens = min(size, self._tokens + max(0.0, now - self._tokens_at) * rate)
        self._tokens_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        self._requests["rejected_429"] += 1
        self._errors["APIGW.0308"] += 1
        return gateway_error(
            429,
            "APIGW.0308",
            "The throttling threshold has been reached: policy user over ratelimit,"
            f"limit:{rate:g},time:1 second",
        )

    def record_error(self, code: str) -> None:
        """Count an error answered outside this model (authentication, unknown routes)."""
        self._errors[code] += 1

    # --- the ECS API ---------------------------------------------------------------------

    def change_os(
        self, project_id: str, server_id: str, body: bytes, *, cloud_init: bool, now: float
    ) -> Reply:
        """changeos v1 (`cloud_init=False`) or v2: `{"job_id": ...}` or the first rule broken."""
        self._requests["changeos"] += 1
        return self._answer(self._change_os(project_id, server_id, body, cloud_init, now))

    def show_job(self, project_id: str, job_id: str, *, now: float) -> Reply:
        self._requests["show_job"] += 1
        error = self._check_project(project_id)
        if error is not None:
            return self._answer(error)
        job = self._jobs.get(job_id)
        if job is None:
            # Also what the cloud answers once it has purged a finished job (about a day later).
            return self._answer(ecs_error("Common.0011", f"Querying the job {job_id} failed."))
        return self._job_body(job, now)

    def show_server(self, project_id: str, server_id: str, *, now: float) -> Reply:
        self._requests["show_server"] += 1
        error = self._check_project(project_id)
        if error is not None:
            return self._answer(error)
        server = self._find_server(server_id, now)
        if server is None:
            return self._answer(_server_not_found(server_id))
        return {"server": self._server_body(server, now)}

    def list_servers(self, project_id: str, query: Mapping[str, str], *, now: float) -> Reply:
        """ListServersDetails: filters, then `marker` (or page-number `offset`) and `limit`."""
        self._requests["list_servers"] += 1
        error = self._check_project(project_id)
        if error is not None:
            return self._answer(error)
        paging = _parse_paging(query)
        if isinstance(paging, ApiError):
            return self._answer(paging)
        limit, page = paging
        keep = self._server_filter(query, now)
        matching = [server for server in self._servers.values() if keep(server)]
        marker = query.get("marker")
        if marker:
            if marker not in self._servers:
                return self._answer(_invalid(f"marker {marker} is not a known server id."))
            # Insertion order is the listing order, so "after the marker" is stable across pages.
            order = {server_id: index for index, server_id in enumerate(self._servers)}
            after = [s for s in matching if order[s.id] > order[marker]]
            shown = after[:limit]
        else:
            start = (max(page, 1) - 1) * limit
            shown = matching[start : start + limit]
        return {
            "count": len(matching),
            "servers": [self._server_body(server, now) for server in shown],
        }

    # --- for tests and the stats endpoint --------------------------------------------------

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
    ) -> str:
        """Create a server with chosen attributes (the list API serves it); answer its id."""
        server_id = server_id or _derived_uuid(self.config.seed, "added", len(self._servers))
        if not is_uuid(server_id) or server_id in self._servers:
            raise ValueError(f"server id {server_id!r} is not a UUID or already exists")
        server = self._new_server(server_id, now)
        server.name = name if name is not None else server.name
        server.tags = tuple(tags)
        server.status = status
        server.locked = locked
        server.charging_mode = charging_mode
        server.has_system_disk = has_system_disk
        server.image_id = image_id or server.image_id
        server.key_name = key_name
        return server_id

    def stats(self, now: float) -> JsonObject:
        """The counters and the ground truth that tests and benchmarks check a client against."""
        truth: JsonObject = {}
        for server in self._servers.values():
            if not server.job_ids:
                continue
            latest = self._jobs[server.job_ids[-1]]
            seen = self._observe(server, now)
            truth[server.id] = {
                "job_id": latest.id,
                "job_status": latest.status(now),
                "image_id": seen.image_id,
                "status": seen.status,
            }
        return {
            "changeos_accepted": dict(self._accepted),
            "duplicate_submissions": self._duplicates,
            "requests": dict(self._requests),
            "errors_by_code": dict(self._errors),
            "max_concurrent_jobs": self._max_concurrent,
            "truth": truth,
        }

    # --- internals -------------------------------------------------------------------------

    def _answer(self, reply: Reply) -> Reply:
        if isinstance(reply, ApiError):
            self._errors[reply.code] += 1
        return reply

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
        if self._known_images is not None and request.image_id.lower() not in self._known_images:
            return ecs_error("Ecs.0031", f"The image {request.image_id} does not exist.")
        server = self._find_server(server_id, now)
        if server is None:
            return _server_not_found(server_id)
        error = self._check_server_state(server, request, now)
        if error is not None:
            return error
        return {"job_id": self._start_job(server, request, now).id}

    def _check_server_state(
        self, server: SimServer, request: OsChangeRequest, now: float
    ) -> ApiError | None:
        if server.locked:
            return ecs_error("Ecs.0605", "The server is locked.")
        if not server.has_system_disk:
            return ecs_error("Ecs.0105", "The server has no system disk.")
        if server.charging_mode == "2":
            return ecs_error("Ecs.0100", "The OS of a spot-priced server cannot be changed.")
        latest = self._latest_job(server)
        if latest is not None and not latest.is_final(now):
            return ecs_error(
                "Ecs.0603", "Other commands are being executed on this server.", status=501
            )
        if server.status == "ACTIVE" and not request.with_stop_server:
            return ecs_error(
                "Ecs.0100",
                "The server status does not meet requirements: it is running "
                f"and mode is not {WITH_STOP_SERVER}.",
            )
        return None

    def _start_job(self, server: SimServer, request: OsChangeRequest, now: float) -> SimJob:
        seconds = self.config.job_seconds
        if self._repeats_a_standing_change(server, request.image_id, now):
            self._duplicates += 1
        job = SimJob(
            id=uuid.uuid4().hex,  # random: job ids must not repeat across simulator restarts
            sub_job_id=uuid.uuid4().hex,
            server_id=server.id,
            image_id=request.image_id,
            key_name=request.key_name,
            created_at=now,
            running_at=now + min(1.0, 0.1 * seconds),
            finished_at=now + seconds,
            fails=self._fails(server.id),
        )
        self._jobs[job.id] = job
        server.job_ids.append(job.id)
        self._accepted[server.id] += 1
        heapq.heappush(self._pending_ends, job.finished_at)
        while self._pending_ends and self._pending_ends[0] <= now:
            heapq.heappop(self._pending_ends)
        self._max_concurrent = max(self._max_concurrent, len(self._pending_ends))
        return job

    def _repeats_a_standing_change(self, server: SimServer, image_id: str, now: float) -> bool:
        """Whether the last change of this server to the same image did not fail."""
        for job_id in reversed(server.job_ids):
            job = self._jobs[job_id]
            if job.image_id.lower() == image_id.lower():
                return job.status(now) != "FAIL"
        return False

    def _fails(self, server_id: str) -> bool:
        return _unit_hash(self.config.seed, server_id, "fail") < self.config.fail_ratio

    def _latest_job(self, server: SimServer) -> SimJob | None:
        return self._jobs[server.job_ids[-1]] if server.job_ids else None

    def _find_server(self, server_id: str, now: float) -> SimServer | None:
        """Any well-formed id exists: it is created on first reference."""
        if not is_uuid(server_id):
            return None
        return self._servers.get(server_id) or self._new_server(server_id, now)

    def _new_server(self, server_id: str, now: float) -> SimServer:
        server = SimServer(
            id=server_id,
            name=f"ecs-{server_id[:8]}",
            status="ACTIVE",
            # Derived from the seed and the id, so it never equals a requested image by chance.
            image_id=_derived_uuid(self.config.seed, server_id, "image"),
            locked=False,
            charging_mode="0",
            has_system_disk=True,
            tags=(),
            key_name=None,
            created_at=now,
        )
        self._servers[server_id] = server
        return server

    def _observe(self, server: SimServer, now: float) -> _Observed:
        status, task_state = server.status, ""
        image_id, key_name, updated_at = server.image_id, server.key_name, server.created_at
        for job in (self._jobs[job_id] for job_id in server.job_ids):
            if not job.is_final(now):
                status, task_state = "REBUILD", "rebuilding"
                continue
            updated_at = job.finished_at
            if not job.fails:
                image_id, key_name = job.image_id, job.key_name or key_name
        return _Observed(status, task_state, image_id, key_name, updated_at)

    def _server_filter(self, query: Mapping[str, str], now: float) -> Callable[[SimServer], bool]:
        server_ids = query.get("server_id")
        if server_ids:  # documented: server_id overrides every other filter
            wanted = frozenset(server_ids.split(","))
            return lambda server: server.id in wanted
        checks: list[Callable[[SimServer], bool]] = []
        name = query.get("name")
        if name:
            checks.append(lambda server: name in server.name)
        status = query.get("status")
        if status:
            allowed = _STATUS_FILTER.get(status, frozenset({status}))
            checks.append(lambda server: self._observe(server, now).status in allowed)
        tag = query.get("tags")
        if tag:
            checks.append(lambda server: tag in server.tags)
        not_tag = query.get("not-tags")
        if not_tag:
            checks.append(lambda server: not_tag not in server.tags)
        flavor = query.get("flavor")
        if flavor:
            checks.append(lambda server: flavor == _FLAVOR["id"])
        return lambda server: all(check(server) for check in checks)

    def _job_body(self, job: SimJob, now: float) -> JsonObject:
        status = job.status(now)
        failed = status == "FAIL"
        end_time = self._iso_ms(job.finished_at) if job.is_final(now) else ""
        entities: JsonObject = {"server_id": job.server_id}
        if status != "INIT":  # as captured: a job has no sub-jobs until it starts running
            entities["sub_jobs_total"] = 1
            entities["sub_jobs"] = [
                {
                    "status": status,
                    "entities": {
                        "server_id": job.server_id,
                        "errorcode_message": JOB_FAIL_REASON if failed else None,
                    },
                    "job_id": job.sub_job_id,
                    "job_type": JOB_TYPE,
                    "begin_time": self._iso_ms(job.running_at),
                    "end_time": end_time,
                    "error_code": JOB_FAIL_CODE if failed else None,
                    "fail_reason": JOB_FAIL_REASON if failed else None,
                }
            ]
        return {
            "status": status,
            "entities": entities,
            "job_id": job.id,
            "job_type": JOB_TYPE,
            "begin_time": self._iso_ms(job.created_at),
            "end_time": end_time,
            "error_code": JOB_FAIL_CODE if failed else None,
            "fail_reason": JOB_FAIL_REASON if failed else None,
        }

    def _server_body(self, server: SimServer, now: float) -> JsonObject:
        """The ShowServer shape captured from the SDK, every key included."""
        seen = self._observe(server, now)
        seed = self.config.seed
        vpc_id = _derived_uuid(seed, self.config.project_id, "vpc")
        nic = hashlib.sha256(f"{seed}:{server.id}:nic".encode()).digest()
        return {
            "id": server.id,
            "name": server.name,
            "status": seen.status,
            "addresses": {
                vpc_id: [
                    {
                        "version": "4",
                        "addr": f"192.168.{nic[0]}.{nic[1] % 250 + 2}",
                        "OS-EXT-IPS:type": "fixed",
                        "OS-EXT-IPS-MAC:mac_addr": "fa:16:3e:" + nic[2:5].hex(":"),
                        "OS-EXT-IPS:port_id": _derived_uuid(seed, server.id, "port"),
                        "primary": True,
                    }
                ]
            },
            "image": {"id": seen.image_id},
            "flavor": dict(_FLAVOR),
            "key_name": seen.key_name,
            "metadata": {
                "metering.image_id": seen.image_id,
                "os_type": "Linux",
                "charging_mode": server.charging_mode,
                "vpc_id": vpc_id,
            },
            "OS-EXT-STS:vm_state": _VM_STATE.get(server.status, server.status.lower()),
            "OS-EXT-STS:task_state": seen.task_state,
            "OS-EXT-STS:power_state": _POWER_STATE.get(server.status, 0),
            "OS-EXT-AZ:availability_zone": "sim-az1",
            "tenant_id": self.config.project_id,
            "user_id": uuid.UUID(_derived_uuid(seed, self.config.ak, "user")).hex,
            "created": self._iso_seconds(server.created_at),
            "updated": self._iso_seconds(seen.updated_at),
            "os-extended-volumes:volumes_attached": (
                [
                    {
                        "id": _derived_uuid(seed, server.id, "system-disk"),
                        "delete_on_termination": "true",
                        "bootIndex": "0",
                    }
                ]
                if server.has_system_disk
                else []
            ),
            "locked": server.locked,
            "tags": list(server.tags),
            "sys_tags": [{"key": "_sys_enterprise_project_id", "value": "0"}],
            "enterprise_project_id": "0",
        }

    def _wall(self, now: float) -> datetime:
        return datetime.fromtimestamp(now + self._wall_offset, UTC)

    def _iso_ms(self, now: float) -> str:
        moment = self._wall(now)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"

    def _iso_seconds(self, now: float) -> str:
        return self._wall(now).strftime("%Y-%m-%dT%H:%M:%SZ")


def _server_not_found(server_id: str) -> ApiError:
    return ecs_error("Ecs.0114", f"The server {server_id} does not exist.", status=404)


def _parse_paging(query: Mapping[str, str]) -> tuple[int, int] | ApiError:
    """(limit, page number) from ListServersDetails' `limit` and deprecated `offset`."""
    try:
        limit = int(query.get("limit") or DEFAULT_LIST_LIMIT)
        page = int(query.get("offset") or 1)
    except ValueError:
        return _invalid("limit and offset must be integers.")
    if not 1 <= limit <= MAX_LIST_LIMIT:
        return _invalid(f"limit must be within [1, {MAX_LIST_LIMIT}].")
    if page < 0:
        return _invalid("offset must be >= 0.")
    return limit, page
