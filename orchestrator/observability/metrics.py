"""Prometheus metrics shared by every process: counters and histograms kept in Redis hashes,
gauges computed at scrape time from the database and the broker, and the text exposition.

Worker processes on any machine record with one pipelined round trip (HINCRBYFLOAT) per task;
the API process reads the hashes back and renders text format 0.0.4. A recording that fails
never breaks the work it describes. Labels carry aggregates only: no server, batch or project
ids, and never a secret.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.cloud.errors import EcsError, OutcomeUnknown
from orchestrator.cloud.models import Job
from orchestrator.db.models import Batch
from orchestrator.domain.states import BatchState, ServerState
from orchestrator.domain.timing import job_duration_s

log = logging.getLogger("reimage.metrics")

PREFIX = "reimage:metrics"
COUNTERS_KEY = f"{PREFIX}:counters"
HISTOGRAMS_KEY = f"{PREFIX}:histograms"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Kind = Literal["counter", "gauge", "histogram"]
Labels = Mapping[str, str]


@dataclass(frozen=True)
class Definition:
    name: str
    kind: Kind
    help: str
    buckets: tuple[float, ...] = ()
    # A counter without labels is always shown, zero until it counts.
    labelled: bool = True


CHANGEOS_CALLS = Definition(
    "reimage_changeos_calls_total",
    "counter",
    "changeos calls by result: accepted, the cloud's error code, transport_error or "
    "unknown_outcome.",
)
ECS_REQUESTS = Definition(
    "reimage_ecs_requests_total", "counter", "ECS API requests by operation and HTTP status."
)
RATE_WAITS = Definition(
    "reimage_rate_limiter_waits_total",
    "counter",
    "Cloud calls that waited for a token of the fleet's rate budget.",
    labelled=False,
)
RATE_WAIT_SECONDS = Definition(
    "reimage_rate_limiter_wait_seconds_total",
    "counter",
    "Seconds spent waiting for tokens of the fleet's rate budget.",
    labelled=False,
)
THROTTLED = Definition(
    "reimage_throttled_total",
    "counter",
    "Cloud answers that throttled us (429 or APIGW.0308).",
    labelled=False,
)
JOB_DURATION = Definition(
    "reimage_job_duration_seconds",
    "histogram",
    "Cloud job duration from its begin to its end, by result (success, fail).",
    (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600),
)
POLL_LAG = Definition(
    "reimage_poll_lag_seconds",
    "histogram",
    "Seconds between a job's end (as the cloud reports it) and our noticing it.",
    (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
SERVERS = Definition("reimage_servers", "gauge", "Servers of all batches by state.")
BATCHES = Definition("reimage_batches", "gauge", "Batches by state.")
QUEUE_DEPTH = Definition(
    "reimage_queue_depth", "gauge", "Task messages waiting in each Celery queue."
)
QUEUE_UNACKED = Definition(
    "reimage_queue_unacked", "gauge", "Task messages delivered to a worker and not yet acked."
)

RECORDED: tuple[Definition, ...] = (
    CHANGEOS_CALLS,
    ECS_REQUESTS,
    RATE_WAITS,
    RATE_WAIT_SECONDS,
    THROTTLED,
    JOB_DURATION,
    POLL_LAG,
)
_BY_NAME = {d.name: d for d in RECORDED}
# Codes are the cloud's words: keep only what looks like a code, so a label stays bounded.
_CODE = re.compile(r"^[A-Za-z0-9_.\-]{1,40}$")
# The Celery queues (workers/app.py; importing it would build the Celery app, and a unit test
# keeps the two equal).
CELERY_QUEUES = ("reimage.submit", "reimage.poll", "reimage.tick", "reimage.webhooks")
# kombu's Redis transport: a queue is a list named after it, priorities as suffixed lists.
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)
_UNACKED_KEY = "unacked"


def changeos_result(error: EcsError | None) -> str:
    """The `result` label of a changeos call that answered `error` (None: accepted)."""
    if error is None:
        return "accepted"
    if isinstance(error, OutcomeUnknown) and error.http_status is None:
        return "unknown_outcome"
    if error.code.startswith("Connection."):
        return "transport_error"
    return error.code if _CODE.match(error.code) else "other"


class CloudCallMetrics:
    """The cloud client's `CallObserver`: its calls and answers as counters."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def request_answered(self, operation: str, status: str) -> None:
        self._metrics.inc(ECS_REQUESTS, {"operation": operation, "status": status})

    def changeos_answered(self, error: EcsError | None) -> None:
        self._metrics.inc(CHANGEOS_CALLS, {"result": changeos_result(error)})

    def throttled(self) -> None:
        self._metrics.inc(THROTTLED, {})


def _field(name: str, labels: Labels, le: str | None = None) -> str:
    """A hash field naming one series (one bucket, for histograms): unambiguous JSON."""
    return json.dumps([name, sorted(labels.items()), le], separators=(",", ":"))


class Metrics:
    """Records into the shared hashes; failures are logged at debug and counted here.

    `buffered` (worker processes): increments are summed in memory and written in one pipelined
    round trip by `flush` (after every task) or by the first record a second after the last
    write. Unbuffered, every record is its own round trip (the API process, tests)."""

    # A buffer is written when it gets this old (a long task's figures do not wait for its end).
    MAX_BUFFER_AGE_S = 1.0

    def __init__(
        self,
        client: redis.Redis,
        *,
        buffered: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = client
        self._buffered = buffered
        self._clock = clock
        self._pending: dict[tuple[str, str], float] = {}
        self._since = clock()
        self.dropped = 0

    @property
    def redis(self) -> redis.Redis:
        return self._redis

    def inc(self, definition: Definition, labels: Labels | None = None, amount: float = 1) -> None:
        self._record([(COUNTERS_KEY, _field(definition.name, labels or {}), amount)])

    def observe(self, definition: Definition, value: float, labels: Labels | None = None) -> None:
        labels = labels or {}
        le = next((b for b in definition.buckets if value <= b), math.inf)
        # Each observation counts in one bucket only; the renderer makes them cumulative.
        self._record(
            [
                (HISTOGRAMS_KEY, _field(definition.name, labels, _le(le)), 1),
                (HISTOGRAMS_KEY, _field(definition.name, labels, "sum"), value),
            ]
        )

    def job_ended(self, job: Job, *, noticed_at: datetime, submitted_at: datetime | None) -> None:
        """A cloud job that ended: its duration (the cloud's begin to end, else our submission
        to its end) and how late we noticed its end. Jobs not final are not counted."""
        if not job.is_final:
            return
        status = job.status
        ended = _parse_time(job.end_time)
        duration = job_duration_s(job.begin_time, job.end_time)
        if duration is None and ended is not None and submitted_at is not None:
            duration = max(0.0, (ended - submitted_at).total_seconds())
        if duration is not None:
            self.observe(
                JOB_DURATION, duration, {"result": "success" if status == "SUCCESS" else "fail"}
            )
        if ended is not None:
            # Clocks of the cloud and of this machine differ a little: never a negative lag.
            self.observe(POLL_LAG, max(0.0, (noticed_at - ended).total_seconds()))

    def rate_wait(self, seconds: float) -> None:
        self._record(
            [
                (COUNTERS_KEY, _field(RATE_WAITS.name, {}), 1),
                (COUNTERS_KEY, _field(RATE_WAIT_SECONDS.name, {}), seconds),
            ]
        )

    def _record(self, increments: list[tuple[str, str, float]]) -> None:
        if not self._buffered:
            # Written at once, sharing nothing: the API may record from several threads.
            self._write([((key, name), amount) for key, name, amount in increments])
            return
        for key, name, amount in increments:
            self._pending[(key, name)] = self._pending.get((key, name), 0.0) + amount
        if self._clock() - self._since >= self.MAX_BUFFER_AGE_S:
            self.flush()

    def flush(self) -> None:
        """Write what is buffered, in one round trip (a worker process has one thread)."""
        pending, self._pending = self._pending, {}
        self._since = self._clock()
        if pending:
            self._write(list(pending.items()))

    def _write(self, increments: list[tuple[tuple[str, str], float]]) -> None:
        try:
            pipe = self._redis.pipeline(transaction=False)
            for (key, name), amount in increments:
                # Always the float command: an integer is a valid float to Redis, and a field
                # once written as a float (a sum of seconds) refuses HINCRBY.
                pipe.hincrbyfloat(key, name, amount)
            pipe.execute()
        except (redis.RedisError, OSError) as exc:
            self.dropped += 1
            log.debug("metrics not recorded: %s", type(exc).__name__)


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- reading and rendering ----------------------------------------------------------------


@dataclass
class Family:
    definition: Definition
    # (suffix, labels, value): suffix "" for plain series, "_bucket"/"_sum"/"_count" else.
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else format_value(bound)


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def render(families: Iterable[Family]) -> str:
    """Prometheus text exposition format 0.0.4."""
    lines: list[str] = []
    for family in families:
        d = family.definition
        lines.append(f"# HELP {d.name} {escape_help(d.help)}")
        lines.append(f"# TYPE {d.name} {d.kind}")
        for suffix, labels, value in family.samples:
            text = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
            series = f"{d.name}{suffix}{{{text}}}" if text else f"{d.name}{suffix}"
            lines.append(f"{series} {format_value(value)}")
    return "\n".join(lines) + "\n"


def histogram_samples(
    definition: Definition, series: Mapping[tuple[tuple[str, str], ...], Mapping[str, float]]
) -> list[tuple[str, dict[str, str], float]]:
    """Cumulative `_bucket`s, `_sum` and `_count` per label set, from per-bucket counts
    (keyed by the bound as rendered: "2.5", "+Inf") and a "sum"."""
    samples: list[tuple[str, dict[str, str], float]] = []
    for key in sorted(series):
        counts, labels = series[key], dict(key)
        running = 0.0
        for bound in (*definition.buckets, math.inf):
            running += counts.get(_le(bound), 0.0)
            samples.append(("_bucket", {**labels, "le": _le(bound)}, running))
        samples.append(("_sum", labels, counts.get("sum", 0.0)))
        samples.append(("_count", labels, running))
    return samples


def recorded_families(client: redis.Redis) -> list[Family]:
    """Counters and histograms as every process recorded them."""
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(COUNTERS_KEY)
    pipe.hgetall(HISTOGRAMS_KEY)
    counters, histograms = pipe.execute()
    families = {d.name: Family(d) for d in RECORDED}
    for raw, value in sorted(counters.items()):
        name, labels, _ = json.loads(raw)
        if name in families:
            families[name].samples.append(("", dict(labels), float(value)))
    for d in RECORDED:
        if d.kind == "counter" and not d.labelled and not families[d.name].samples:
            families[d.name].samples.append(("", {}, 0.0))
    buckets: dict[str, dict[tuple[tuple[str, str], ...], dict[str, float]]] = {}
    for raw, value in histograms.items():
        name, labels, le = json.loads(raw)
        key = tuple((str(k), str(v)) for k, v in labels)
        series = buckets.setdefault(name, {}).setdefault(key, {})
        series[le] = series.get(le, 0.0) + float(value)
    for name, series_by_labels in buckets.items():
        if name in _BY_NAME:
            families[name].samples = histogram_samples(_BY_NAME[name], series_by_labels)
    return list(families.values())


def state_families(sessions: sessionmaker[Session]) -> list[Family]:
    """Servers and batches by state, every state present (zeros too), from the kept counts."""
    server_states = list(ServerState)
    with sessions() as session:
        sums = session.execute(
            select(
                *(func.coalesce(func.sum(getattr(Batch, f"n_{s.value}")), 0) for s in server_states)
            )
        ).one()
        by_state = dict(
            session.execute(select(Batch.state, func.count()).group_by(Batch.state)).all()
        )
    servers = Family(
        SERVERS,
        [("", {"state": s.value}, float(n)) for s, n in zip(server_states, sums, strict=True)],
    )
    batches = Family(
        BATCHES, [("", {"state": s.value}, float(by_state.get(s.value, 0))) for s in BatchState]
    )
    return [servers, batches]


def queue_families(client: redis.Redis, queues: Sequence[str]) -> list[Family]:
    """Waiting messages per queue (priority lists included) and unacked ones overall."""
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        pipe.llen(queue)
        for step in _PRIORITY_STEPS:
            pipe.llen(f"{queue}{_PRIORITY_SEP}{step}")
    pipe.hlen(_UNACKED_KEY)
    answers = pipe.execute()
    width = 1 + len(_PRIORITY_STEPS)
    depth = Family(
        QUEUE_DEPTH,
        [
            ("", {"queue": queue}, float(sum(answers[i * width : (i + 1) * width])))
            for i, queue in enumerate(queues)
        ],
    )
    return [depth, Family(QUEUE_UNACKED, [("", {}, float(answers[-1]))])]


def exposition(
    client: redis.Redis, sessions: sessionmaker[Session], queues: Sequence[str] = CELERY_QUEUES
) -> str:
    """Everything /metrics shows, read now (blocking: run it off the event loop)."""
    return render(
        [*recorded_families(client), *state_families(sessions), *queue_families(client, queues)]
    )
