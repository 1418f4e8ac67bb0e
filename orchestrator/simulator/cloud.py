"""The simulated cloud: one project's state and the order in which an API call meets the gateway's
throttle, the injected faults and the ECS rules; plus the counters behind `/_sim/stats`.

Pure and clock-free: every method takes `now` (monotonic seconds) and job and server states are
derived from it when read, so tests never sleep and nothing runs in the background. The parts
live beside it (`config`, `validation`, `servers`, `jobs`, `faults`, `inventory`); the names this
module always offered are re-exported so it stays the one import callers need.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

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
from orchestrator.simulator.inventory import ServerSpec, generated_inventory
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
    parse_os_change,
    password_is_complex,
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

REQUEST_KINDS = ("changeos", "show_job", "show_server", "list_servers", "rejected_429")
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
        self._known_images = (
            None if config.images is None else frozenset(i.lower() for i in config.images)
        )
        self._draws = FaultDraws(config.seed)
        self._bucket = TokenBucket(config.rate_limit, config.bucket_size)
        self._servers = ServerRegistry(config.seed)
        self._jobs = JobBook()
        self._accepted: Counter[str] = Counter()
        self._received: Counter[str] = Counter()  # changeos per server id, whatever the answer
        self._show_calls: Counter[str] = Counter()  # ShowServer calls per server id
        self._poll_calls: Counter[str] = Counter()  # ShowJob calls per job id
        self._list_calls = 0
        self._duplicates = 0
        # Every changeos received: (Unix time, server id, "accepted" or the error code).
        self._changeos_log: list[tuple[float, str, str]] = []
        self._requests: dict[str, int] = dict.fromkeys(REQUEST_KINDS, 0)
        self._errors: Counter[str] = Counter()
        self._faults: Counter[str] = Counter()
        generated = generated_inventory(config.seed, config.inventory_size, config.inventory_tags)
        self.put_servers(
            (*config.inventory, *generated), now=self._created_at if now is None else now
        )

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

    def changeos_turned_away(self, server_id: str, code: str, *, now: float) -> None:
        """A changeos the gateway refused (authentication, throttling) still reached us."""
        self.count_changeos_received(server_id)
        self._changeos_log.append((self._timestamps.unix(now), server_id, code))

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
        key = ("changeos", server_id, self.count_changeos_received(server_id))
        # Transient errors and flow control come first: the cloud refused before doing anything.
        reply = (
            self._transient(key)
            or self._flow_control(key)
            or self._change_os(project_id, server_id, body, cloud_init, now)
        )
        drop = not isinstance(reply, ApiError) and self._draws.hits(
            "drop", self._drop_ratio(server_id), *key
        )
        if drop:
            self._faults["dropped"] += 1
            self._faults["dropped_failing"] += self._fails(server_id)
        answer = "accepted" if not isinstance(reply, ApiError) else reply.code
        self._changeos_log.append((self._timestamps.unix(now), server_id, answer))
        return self._deliver(reply, key, drop=drop)

    def _drop_ratio(self, server_id: str) -> float:
        config = self.config
        if config.drop_failing_ratio and self._fails(server_id):
            return max(config.drop_ratio, config.drop_failing_ratio)
        return config.drop_ratio

    def show_job(self, project_id: str, job_id: str, *, now: float) -> Reply:
        return self.answer_show_job(project_id, job_id, now=now).reply

    def answer_show_job(self, project_id: str, job_id: str, *, now: float) -> Answer:
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
            ids.append(self._servers.put(spec, now, first_job=settled).id)
        return ids

    def changeos_calls(self, since: float = 0.0) -> list[JsonObject]:
        """Every changeos received at or after Unix time `since`, oldest first, with its answer
        (`accepted`, dropped ones included, or the error code)."""
        return [
            {"at": at, "server_id": server_id, "answer": answer}
            for at, server_id, answer in self._changeos_log
            if at >= since
        ]

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
            "changeos_accepted": dict(self._accepted),
            "duplicate_submissions": self._duplicates,
            "requests": dict(self._requests),
            "errors_by_code": dict(self._errors),
            "max_concurrent_jobs": self._jobs.max_concurrent,
            "truth": truth,
            "faults": faults,
            "changeos_received_by_server": dict(self._received),
            "concurrent_jobs_now": self._jobs.running_count(now),
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
        if self._known_images is not None and request.image_id.lower() not in self._known_images:
            return ecs_error("Ecs.0031", f"The image {request.image_id} does not exist.")
        server = self._find_server(server_id, now)
        if server is None:
            return server_not_found(server_id)
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
        jobs = self._jobs.of_server(server.id)
        job_running = bool(jobs) and not jobs[-1].is_final(now)
        if job_running or server.busy_task(now) is not None:
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

    def _start_job(self, server: SimServer, request: OsChangeRequest, now: float) -> SimJob:
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
        fails = self._fails(server.id)
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
        )
        if stuck:
            self._faults["stuck"] += 1
        self._jobs.add(job, now)
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
        if not is_uuid(server_id):
            return None
        server = self._servers.get(server_id)
        if server is not None:
            return None if server.missing else server
        if self.config.strict_inventory:
            return None
        return self._servers.create(server_id, now)

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
        return server_body(
            server,
            self._observe(server, now),
            seed=self.config.seed,
            project_id=self.config.project_id,
            ak=self.config.ak,
            timestamps=self._timestamps,
        )
