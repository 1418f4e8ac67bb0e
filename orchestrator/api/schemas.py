"""Validation of the `POST /api/v1/batches` body into a typed, frozen `BatchRequest`.

Every problem in a body is reported at once, keyed by a field path such as `servers[3]`
or `os_change.metadata.BYOL`, so a client can fix a request in one round trip. Secrets
(`adminpass`, `metadata.user_data`) are held as `SecretStr` and never appear in a repr,
a dump or an error message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, NoReturn
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PlainSerializer,
    PlainValidator,
    SecretStr,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import WithJsonSchema
from pydantic_core import InitErrorDetails, PydanticCustomError

from orchestrator.domain.health import ProbeKind, fixed_host_problem, template_problem
from orchestrator.domain.policy import (
    DEFAULT_BACKUP_RETENTION_S,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_POLICY,
)
from orchestrator.domain.spread import kind_problem
from orchestrator.domain.webhooks import host_allowed
from orchestrator.domain.windows import cron_problem, never_opens, window_from_json
from orchestrator.ids import PROJECT_ID_PATTERN, REGION_PATTERN, UUID_PATTERN, canonical_uuid

Loc = tuple[int | str, ...]

USER_DATA_MAX_BYTES = 32768
ADMINPASS_SPECIALS = "!@$%^-_=+[{}]:,./?~#*"
# Cap on the paths listed in one error: a 100 000-entry list of garbage must not turn
# into a multi-megabyte error response.
MAX_REPORTED_FIELDS = 100
NO_SECRET_KEY = "cannot be accepted: ORCH_SECRET_KEY is not configured on the server"

_CTX_SECRET_KEY = "secret_key_configured"
_CTX_MAX_SERVERS = "max_servers"
_CTX_ALLOWED_HOSTS = "notify_allowed_hosts"
_CTX_HEALTH_HOSTS = "health_allowed_hosts"
_CTX_REGIONS = "accepts_region"
_DEFAULT_MAX_SERVERS = 100_000

_PERCENT = re.compile(r"([0-9]{1,3})%")


class RequestInvalid(Exception):
    """A request body that breaks the rules; `fields` maps each field path to a reason."""

    def __init__(self, message: str, fields: Mapping[str, str]) -> None:
        super().__init__(message)
        self.code = "invalid_request"
        self.message = message
        self.fields: dict[str, str] = dict(fields)


@dataclass(frozen=True)
class Percent:
    """A share of the batch such as `"10%"`, resolved to a count only once its size is known."""

    value: int

    def __str__(self) -> str:
        return f"{self.value}%"


# ---------------------------------------------------------------- reusable field types


def _fail(reason: str) -> NoReturn:
    # No message context is given, so braces in a reason are never read as placeholders.
    raise PydanticCustomError("invalid_field", reason)


def _matching(pattern: str, reason: str) -> AfterValidator:
    compiled = re.compile(pattern, re.ASCII)

    def check(value: str) -> str:
        if compiled.fullmatch(value) is None:
            _fail(reason)
        return value

    return AfterValidator(check)


def _uuid(value: str) -> str:
    return canonical_uuid(value) or _fail("not a UUID")


def _is_wave_number(value: object) -> bool:
    # bool is a subclass of int in Python, but `true` is not a wave number.
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _count_or_percent(value: object, *, min_count: int, min_percent: int) -> int | Percent:
    if isinstance(value, int) and not isinstance(value, bool) and value >= min_count:
        return value
    match = _PERCENT.fullmatch(value) if isinstance(value, str) else None
    if match is not None and min_percent <= int(match[1]) <= 100:
        return Percent(int(match[1]))
    _fail(
        f'must be an integer >= {min_count} or a percentage from {min_percent}% to 100%, like "10%"'
    )


def _at_least_one_or_percent(value: object) -> int | Percent:
    return _count_or_percent(value, min_count=1, min_percent=1)


def _zero_or_more_or_percent(value: object) -> int | Percent:
    return _count_or_percent(value, min_count=0, min_percent=0)


def _dump_count(value: int | Percent) -> int | str:
    return str(value) if isinstance(value, Percent) else value


_CountSerializer = PlainSerializer(_dump_count, return_type=int | str)
CountOrPercent = Annotated[
    int | Percent, PlainValidator(_at_least_one_or_percent), _CountSerializer
]
FailureLimit = Annotated[int | Percent, PlainValidator(_zero_or_more_or_percent), _CountSerializer]


def _documented(pattern: str) -> WithJsonSchema:
    """The pattern a validator enforces, stated in the OpenAPI document too."""
    return WithJsonSchema({"type": "string", "pattern": f"^{pattern}$"})


Uuid = Annotated[StrictStr, AfterValidator(_uuid), _documented(UUID_PATTERN)]
ProjectId = Annotated[
    StrictStr,
    _matching(PROJECT_ID_PATTERN, "must be 32 lowercase hex digits (the IAM project id)"),
    _documented(PROJECT_ID_PATTERN),
]
Region = Annotated[
    StrictStr,
    _matching(REGION_PATTERN, 'must be a region name like "cn-north-4"'),
    _documented(REGION_PATTERN),
]
KeyName = Annotated[
    StrictStr,
    _matching(r"[A-Za-z0-9_.-]{1,64}", "must be 1-64 characters of A-Z a-z 0-9 _ . -"),
    _documented(r"[A-Za-z0-9_.-]{1,64}"),
]
UserId = Annotated[
    StrictStr,
    _matching(r"[0-9a-fA-F]{32}", "must be 32 hexadecimal characters"),
    AfterValidator(str.lower),
    _documented(r"[0-9a-fA-F]{32}"),
]
WaveNumber = Annotated[StrictInt, Field(ge=1)]
Seconds = Annotated[float, Field(strict=True, allow_inf_nan=False)]

_FROZEN = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


def _adminpass_weakness(password: str) -> str | None:
    """Huawei's complexity rule (ecs-api.md section 1); the answer never quotes the password."""
    if not 8 <= len(password) <= 26:
        return "too weak: must be 8-26 characters long"
    if any(not (c.isascii() and c.isalnum()) and c not in ADMINPASS_SPECIALS for c in password):
        return f"too weak: only letters, digits and {ADMINPASS_SPECIALS} are allowed"
    kinds = (
        any(c.isascii() and c.isupper() for c in password),
        any(c.isascii() and c.islower() for c in password),
        any(c.isascii() and c.isdigit() for c in password),
        any(c in ADMINPASS_SPECIALS for c in password),
    )
    if sum(kinds) < 3:
        return (
            "too weak: use at least 3 of upper case letters, lower case letters, digits "
            f"and special characters ({ADMINPASS_SPECIALS})"
        )
    return None


# ---------------------------------------------------------------- the models


class OsChangeMetadata(BaseModel):
    """`os_change.metadata`: the only keys the changeos API documents."""

    model_config = _FROZEN

    byol: Literal["true"] | None = Field(None, alias="BYOL")
    user_data: SecretStr | None = Field(None, strict=True)
    system_encrypted: Literal["0", "1"] | None = Field(None, alias="__system__encrypted")
    system_cmkid: StrictStr | None = Field(None, alias="__system__cmkid", max_length=64)

    @field_validator("user_data")
    @classmethod
    def _user_data_is_small_base64(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        encoded = value.get_secret_value()
        if not encoded:
            _fail("must not be empty")
        try:
            decoded = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            _fail("not valid base64")
        if len(decoded) > USER_DATA_MAX_BYTES:
            _fail(f"oversized: {len(decoded)} bytes decoded, at most {USER_DATA_MAX_BYTES}")
        return value


class ImagesByArchitecture(BaseModel):
    """`os_change.images`: the image for x86 servers and the one for Kunpeng (Arm) servers."""

    model_config = _FROZEN

    x86_64: Uuid | None = None
    aarch64: Uuid | None = None

    @model_validator(mode="after")
    def _at_least_one(self) -> ImagesByArchitecture:
        if self.x86_64 is None and self.aarch64 is None:
            _fail("give x86_64, aarch64 or both")
        return self


class OsChangeSpec(BaseModel):
    """`os_change`: what every server of the batch is changed to (the `os-change` body)."""

    model_config = _FROZEN

    imageid: Uuid | None = None
    # One image per CPU architecture instead of `imageid`: each server gets its flavor's.
    images: ImagesByArchitecture | None = None
    keyname: KeyName | None = None
    userid: UserId | None = None
    adminpass: SecretStr | None = Field(None, strict=True)
    metadata: OsChangeMetadata = Field(default_factory=OsChangeMetadata)
    mode: Literal["withStopServer"] | None = None
    is_auto_pay: Literal["true", "false"] | None = Field(None, alias="isAutoPay")

    @model_validator(mode="after")
    def _one_image_form(self) -> OsChangeSpec:
        if self.imageid is None and self.images is None:
            _raise_errors([(("imageid",), "required (or images: one image per architecture)")])
        if self.imageid is not None and self.images is not None:
            _raise_errors([(("images",), "give imageid or images, not both")])
        return self

    @field_validator("adminpass")
    @classmethod
    def _complex_enough(cls, value: SecretStr | None) -> SecretStr | None:
        weakness = None if value is None else _adminpass_weakness(value.get_secret_value())
        if weakness:
            _fail(weakness)
        return value


class HealthCheckSpec(BaseModel):
    """`policy.health_check`: how the new OS is probed before a server counts as done."""

    model_config = _FROZEN

    # One of the two: a URL template (a 2xx answer is healthy) or "host:port" (a connection).
    http: StrictStr | None = Field(None, min_length=1, max_length=2048)
    tcp: StrictStr | None = Field(None, min_length=1, max_length=512)
    initial_delay_s: Annotated[Seconds, Field(ge=0, le=86400)] = 120.0
    interval_s: Annotated[Seconds, Field(ge=1, le=3600)] = 10.0
    timeout_s: Annotated[Seconds, Field(gt=0, le=60)] = 5.0
    successes: Annotated[StrictInt, Field(ge=1, le=100)] = 1
    deadline_s: Annotated[Seconds, Field(ge=1, le=86400)] = 900.0

    @model_validator(mode="after")
    def _one_usable_target(self, info: ValidationInfo) -> HealthCheckSpec:
        if (self.http is None) == (self.tcp is None):
            _raise_errors([(("http",), 'give one of "http" (a URL template) or "tcp"')])
        kind = ProbeKind.HTTP if self.http is not None else ProbeKind.TCP
        template = self.http or self.tcp or ""
        problem = template_problem(kind, template) or fixed_host_problem(
            kind, template, _context(info).get(_CTX_HEALTH_HOSTS, ())
        )
        if problem:
            _raise_errors([((kind.value,), problem)])
        if self.deadline_s <= self.initial_delay_s:
            _raise_errors(
                [(("deadline_s",), "must be greater than initial_delay_s (no probe would run)")]
            )
        return self


class BackupSpec(BaseModel):
    """`policy.backup`: each system disk saved as an IMS private image before its change."""

    model_config = _FROZEN

    mode: Literal["image"]
    retention_s: Annotated[StrictInt, Field(ge=1, le=31_536_000)] = int(DEFAULT_BACKUP_RETENTION_S)


def _domain_kind(value: str) -> str:
    problem = kind_problem(value)
    if problem:
        _fail(problem)
    return value


DomainKind = Annotated[StrictStr, AfterValidator(_domain_kind)]


class SpreadSpec(BaseModel):
    """One failure-domain limit: at most `max_in_flight` servers of each value of `by`."""

    model_config = _FROZEN

    by: DomainKind
    max_in_flight: CountOrPercent


class WavesBySpec(BaseModel):
    """`policy.waves_by`: one group of waves per domain value (also given as just the kind)."""

    model_config = _FROZEN

    by: DomainKind
    order: tuple[Annotated[StrictStr, Field(min_length=1, max_length=128)], ...] = Field(
        (), max_length=100
    )


class WindowSpec(BaseModel):
    """One maintenance window: a cron schedule with a duration in a time zone, or a range."""

    model_config = _FROZEN

    cron: StrictStr | None = Field(None, min_length=1, max_length=200)
    duration_s: Annotated[Seconds, Field(gt=0, le=7 * 86400)] | None = None
    timezone: StrictStr = Field("UTC", min_length=1, max_length=64)
    start: AwareDatetime | None = None
    end: AwareDatetime | None = None

    @model_validator(mode="after")
    def _one_form(self) -> WindowSpec:
        if self.cron is not None:
            if self.start is not None or self.end is not None:
                _raise_errors([(("start",), "give cron (with duration_s) or start and end")])
            if self.duration_s is None:
                _raise_errors([(("duration_s",), "required with cron")])
            problem = cron_problem(self.cron, self.timezone)
            if problem:
                _raise_errors([(("timezone" if "time zone" in problem else "cron",), problem)])
            return self
        if self.start is None or self.end is None:
            _raise_errors([(("cron",), "give cron (with duration_s) or start and end")])
        if self.end <= self.start:
            _raise_errors([(("end",), "must be after start")])
        return self


class ApprovalsSpec(BaseModel):
    """`policy.approvals`: distinct approvers (never the submitter) before the start and after
    the listed waves."""

    model_config = _FROZEN

    before_start: Annotated[StrictInt, Field(ge=0, le=10)] = 0
    after_waves: tuple[WaveNumber, ...] = Field((), max_length=100)
    required: Annotated[StrictInt, Field(ge=1, le=10)] = 1

    @model_validator(mode="after")
    def _some_gate(self) -> ApprovalsSpec:
        if not self.before_start and not self.after_waves:
            _raise_errors([(("before_start",), "give before_start >= 1 or after_waves")])
        return self


class BatchPolicy(BaseModel):
    """`policy`: how fast and how carefully the batch is rolled out."""

    model_config = _FROZEN

    # The defaults are the domain's (`RolloutPolicy`): one place says what an unset field means.
    max_in_flight: CountOrPercent = DEFAULT_MAX_IN_FLIGHT
    poll_interval_s: Annotated[Seconds, Field(ge=1, le=3600)] = DEFAULT_POLICY.poll_interval_s
    job_timeout_s: Annotated[StrictInt, Field(ge=60, le=86400)] = DEFAULT_POLICY.job_timeout_s
    waves: tuple[CountOrPercent, ...] | None = None  # one wave of every server
    max_failures: FailureLimit | None = None  # no error budget
    pause_after_waves: StrictBool | tuple[WaveNumber, ...] = DEFAULT_POLICY.pause_after_waves
    wave_delay_s: Annotated[Seconds, Field(ge=0, le=86400)] = DEFAULT_POLICY.wave_delay_s
    skip_matching: StrictBool = DEFAULT_POLICY.skip_matching
    on_incompatible: Literal["reject", "skip"] = "reject"
    health_check: HealthCheckSpec | None = None
    on_unhealthy: Literal["keep", "rollback"] = "keep"
    backup: BackupSpec | None = None
    spread: tuple[SpreadSpec, ...] | None = Field(None, min_length=1, max_length=5)
    waves_by: WavesBySpec | None = None
    windows: tuple[WindowSpec, ...] | None = Field(None, min_length=1, max_length=20)
    approvals: ApprovalsSpec | None = None

    @field_validator("waves_by", mode="before")
    @classmethod
    def _kind_alone(cls, value: object) -> object:
        return {"by": value} if isinstance(value, str) else value

    @field_validator("spread")
    @classmethod
    def _one_rule_per_kind(
        cls, value: tuple[SpreadSpec, ...] | None
    ) -> tuple[SpreadSpec, ...] | None:
        kinds = [rule.by for rule in value or ()]
        repeated = sorted({kind for kind in kinds if kinds.count(kind) > 1})
        if repeated:
            _fail(f"one rule per kind of domain; repeated: {', '.join(repeated)}")
        return value

    @field_validator("windows")
    @classmethod
    def _some_window_opens(
        cls, value: tuple[WindowSpec, ...] | None
    ) -> tuple[WindowSpec, ...] | None:
        if value is not None:
            stored = [window_from_json(w.model_dump(mode="json")) for w in value]
            if never_opens(stored, datetime.now(UTC)):
                _fail("none of these windows opens from now on: the batch would never start")
        return value

    @model_validator(mode="after")
    def _rollback_needs_a_gate(self) -> BatchPolicy:
        if self.on_unhealthy == "rollback" and self.health_check is None:
            _raise_errors([(("on_unhealthy",), '"rollback" needs policy.health_check')])
        return self

    @field_validator("waves")
    @classmethod
    def _some_waves(
        cls, value: tuple[int | Percent, ...] | None
    ) -> tuple[int | Percent, ...] | None:
        if value is not None and not value:
            _fail("must not be empty")
        return value

    @field_validator("pause_after_waves", mode="before")
    @classmethod
    def _bool_or_wave_numbers(cls, value: object) -> object:
        # Checked here: a pydantic union would report errors under its member names.
        if isinstance(value, bool):
            return value
        if not isinstance(value, list | tuple):
            _fail("must be true, false or a list of wave numbers >= 1")
        bad: list[tuple[Loc, str]] = [
            ((i,), "must be a wave number >= 1")
            for i, item in enumerate(value)
            if not _is_wave_number(item)
        ]
        if bad:
            _raise_errors(bad)
        return value


ServerStatus = Literal["ACTIVE", "SHUTOFF", "ERROR", "REBUILD", "REBOOT", "RESIZE", "VERIFY_RESIZE"]
Tag = Annotated[
    StrictStr,
    _matching(r"[^=,\s]{1,128}=[^,]{0,255}", 'must be "key=value" (no comma, key without spaces)'),
]


class TargetSelector(BaseModel):
    """Servers chosen by their attributes, resolved once at submission into a frozen list."""

    model_config = _FROZEN

    tags: tuple[Tag, ...] = Field((), max_length=10)
    name: StrictStr | None = Field(None, min_length=1, max_length=64)
    status: ServerStatus | None = None
    not_image: Uuid | None = None

    @model_validator(mode="after")
    def _some_criterion(self) -> TargetSelector:
        if not (self.tags or self.name or self.status):
            _fail("give at least one of tags, name or status")
        return self

    def list_filters(self) -> dict[str, str]:
        """Filters the list API applies itself (it takes one tag; the rest are checked here)."""
        filters: dict[str, str] = {}
        if self.name:
            filters["name"] = self.name
        if self.status:
            filters["status"] = self.status
        if self.tags:
            filters["tags"] = self.tags[0]
        return filters


EXAMPLE_BATCH: dict[str, Any] = {
    "project_id": "0605767bd8b5d3f92f0ac0123456789a",
    "region": "cn-north-4",
    "servers": [
        "1b6f3f5e-4d0c-4f55-9a53-2f1c3f0d6a01",
        "1b6f3f5e-4d0c-4f55-9a53-2f1c3f0d6a02",
    ],
    "os_change": {"imageid": "e215580f-73ad-429d-b6f2-5433947433b0", "keyname": "ops-key"},
    "policy": {"waves": [1, "50%"], "max_in_flight": 10, "max_failures": "10%"},
}


class BatchRequest(BaseModel):
    """A validated `POST /api/v1/batches` body."""

    model_config = ConfigDict(**_FROZEN, json_schema_extra={"examples": [EXAMPLE_BATCH]})

    project_id: ProjectId
    region: Region
    servers: Annotated[
        tuple[str, ...],
        WithJsonSchema(
            {
                "type": "array",
                "items": {"type": "string", "pattern": f"^{UUID_PATTERN}$"},
                "uniqueItems": True,
                "description": "server UUIDs; at most ORCH_MAX_SERVERS_PER_BATCH",
            }
        ),
    ] = ()
    selector: TargetSelector | None = None
    on_conflict: Literal["reject", "skip"] = "reject"
    os_change: OsChangeSpec
    cloud_init: StrictBool = False
    policy: BatchPolicy = Field(default_factory=BatchPolicy)
    notify_url: StrictStr | None = Field(None, max_length=2048)

    @field_validator("servers", mode="before")
    @classmethod
    def _distinct_uuids(cls, value: object, info: ValidationInfo) -> tuple[str, ...]:
        # One pass over the raw list, so bad entries and duplicates are reported together.
        limit = _context(info).get(_CTX_MAX_SERVERS, _DEFAULT_MAX_SERVERS)
        if not isinstance(value, list | tuple):
            _fail("must be a list of server UUIDs")
        # Emptiness is judged with the selector, in _combination_errors.
        if len(value) > limit:
            _fail(f"at most {limit} servers per batch")
        servers, errors = _dedupe_uuids(value)
        if errors:
            _raise_errors(errors)
        return servers

    @field_validator("region")
    @classmethod
    def _known_region(cls, value: str, info: ValidationInfo) -> str:
        accepts = _context(info).get(_CTX_REGIONS)
        if accepts is not None and not accepts(value):
            _fail(
                "not a Huawei Cloud region this service knows (a typo?); "
                "ORCH_REGIONS lists the regions when yours is missing"
            )
        return value

    @field_validator("notify_url")
    @classmethod
    def _http_url_without_credentials(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            problem = _url_problem(value)
            if problem:
                _fail(problem)
            allowed = _context(info).get(_CTX_ALLOWED_HOSTS, ())
            if not host_allowed(value, allowed):
                _fail("host is not in ORCH_NOTIFY_ALLOWED_HOSTS: " + ", ".join(allowed))
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _combinations(
        cls, data: Any, handler: ModelWrapValidatorHandler[BatchRequest], info: ValidationInfo
    ) -> BatchRequest:
        # Rules spanning fields run on the raw body, beside the per-field checks rather
        # than after them, so one response lists every problem.
        combined = _combination_errors(data, _context(info)) if isinstance(data, dict) else []
        try:
            request = handler(data)
        except ValidationError as exc:
            _raise_errors([*_error_pairs(exc), *combined])
        if combined:
            _raise_errors(combined)
        return request

    def secrets(self) -> dict[str, str]:
        """The secret values present in the request, to be encrypted before storage."""
        found = {
            "adminpass": self.os_change.adminpass,
            "user_data": self.os_change.metadata.user_data,
        }
        return {name: secret.get_secret_value() for name, secret in found.items() if secret}

    def public_os_change(self) -> dict[str, Any]:
        """The `os-change` body fields that may be stored and logged: no secrets."""
        body = self.os_change.model_dump(
            by_alias=True,
            exclude_none=True,
            exclude={"adminpass": True, "metadata": {"user_data"}},
        )
        if not body.get("metadata"):
            body.pop("metadata", None)
        return body

    def canonical_fingerprint(self, key: bytes | None = None) -> str:
        """sha256 hex of the whole request in canonical form, for Idempotency-Key checks.

        Secrets enter only as digests; pass `key` (the server's secret key) to make those
        digests HMACs, so that the fingerprint cannot be used to guess a password offline.
        """
        document = self.model_dump(
            mode="json",
            by_alias=True,
            exclude={"os_change": {"adminpass": True, "metadata": {"user_data"}}},
        )
        document["secret_digests"] = {
            name: _digest(value, key) for name, value in sorted(self.secrets().items())
        }
        canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()


# ---------------------------------------------------------------- helpers of the models


def _digest(value: str, key: bytes | None) -> str:
    if key is None:
        return hashlib.sha256(value.encode()).hexdigest()
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def _context(info: ValidationInfo) -> dict[str, Any]:
    return info.context if isinstance(info.context, dict) else {}


def _dedupe_uuids(items: Iterable[object]) -> tuple[tuple[str, ...], list[tuple[Loc, str]]]:
    first_seen: dict[str, int] = {}
    servers: list[str] = []
    errors: list[tuple[Loc, str]] = []
    for index, item in enumerate(items):
        server = canonical_uuid(item)
        if server is None:
            errors.append(((index,), "not a UUID"))
            continue
        first = first_seen.setdefault(server, index)
        if first != index:
            errors.append(((index,), f"duplicate of servers[{first}]"))
        servers.append(server)
    return tuple(servers), errors


def _url_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - property access raises ValueError on a malformed port
    except ValueError:
        return "not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL"
    if parts.username is not None or parts.password is not None:
        return "must not contain credentials (user:password@)"
    if any(c.isspace() for c in url):
        return "must not contain whitespace"
    return None


def _target_errors(data: dict[Any, Any]) -> list[tuple[Loc, str]]:
    servers, selector = data.get("servers"), data.get("selector")
    if selector is not None or (isinstance(servers, list | tuple) and servers):
        return []
    if servers is None:
        return [(("servers",), "required unless a selector is given")]
    if isinstance(servers, list | tuple):
        return [(("servers",), "must not be empty")]
    return []


def _combination_errors(data: dict[Any, Any], context: dict[str, Any]) -> list[tuple[Loc, str]]:
    targets = _target_errors(data)
    os_change = data.get("os_change")
    if not isinstance(os_change, dict):
        return targets
    metadata = os_change.get("metadata", {})
    has_pass = os_change.get("adminpass") is not None
    has_key = os_change.get("keyname") is not None
    has_user_data = isinstance(metadata, dict) and metadata.get("user_data") is not None
    errors: list[tuple[Loc, str]] = []
    # Without a key the secrets could only be stored in clear text, so they are refused.
    if context.get(_CTX_SECRET_KEY) is False:
        if has_pass:
            errors.append((("os_change", "adminpass"), NO_SECRET_KEY))
        if has_user_data:
            errors.append((("os_change", "metadata", "user_data"), NO_SECRET_KEY))
    cloud_init = data.get("cloud_init", False)
    if isinstance(cloud_init, bool) and isinstance(metadata, dict):
        errors.extend(_credential_errors(cloud_init, has_pass, has_key, has_user_data))
    return targets + errors


def _credential_errors(
    cloud_init: bool, has_pass: bool, has_key: bool, has_user_data: bool
) -> list[tuple[Loc, str]]:
    """How the new OS gets its login: ecs-api.md sections 1 (v1) and 2 (v2, Cloud-Init)."""
    errors: list[tuple[Loc, str]] = []
    if has_user_data and not cloud_init:
        errors.append((("os_change", "metadata", "user_data"), "only allowed with cloud_init true"))
    if not cloud_init and has_pass == has_key:
        errors.append((("os_change",), "give exactly one of adminpass or keyname"))
    elif cloud_init and has_pass and has_key:
        errors.append((("os_change",), "give at most one of adminpass or keyname"))
    elif cloud_init and not (has_pass or has_key or has_user_data):
        errors.append((("os_change",), "give adminpass, keyname or metadata.user_data"))
    return errors


def _error_pairs(exc: ValidationError) -> list[tuple[Loc, str]]:
    return [
        (tuple(error["loc"]), _reason(error["type"], error["msg"]))
        for error in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


_REASONS = {
    "missing": "required",
    "extra_forbidden": "unknown field",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
}


def _reason(kind: str, message: str) -> str:
    # pydantic says "Input should be ..."; a client reads "must be ..." next to its field.
    return _REASONS.get(kind) or re.sub(r"^\w+ should\b", "must", message)


def _raise_errors(errors: Iterable[tuple[Loc, str]]) -> NoReturn:
    # `input` stays None: the input may be a password and errors end up in logs.
    details = [
        InitErrorDetails(type=PydanticCustomError("invalid_field", reason), loc=loc, input=None)
        for loc, reason in errors
    ]
    raise ValidationError.from_exception_data("BatchRequest", details)


# ---------------------------------------------------------------- the entry point


def parse_batch_request(
    payload: object,
    *,
    secret_key_configured: bool,
    max_servers: int = _DEFAULT_MAX_SERVERS,
    notify_allowed_hosts: Iterable[str] = (),
    health_allowed_hosts: Iterable[str] = (),
    accepts_region: Callable[[str], bool] | None = None,
) -> BatchRequest:
    """Validate a decoded JSON body; raise `RequestInvalid` listing every problem.
    `accepts_region`: the regions a batch may name (None: any well-formed one)."""
    if max_servers < 1:
        raise ValueError("max_servers must be at least 1")
    if not isinstance(payload, dict):
        raise RequestInvalid(
            "request body must be a JSON object", {"body": "must be a JSON object"}
        )
    context = {
        _CTX_SECRET_KEY: secret_key_configured,
        _CTX_MAX_SERVERS: max_servers,
        _CTX_ALLOWED_HOSTS: tuple(notify_allowed_hosts),
        _CTX_HEALTH_HOSTS: tuple(health_allowed_hosts),
        _CTX_REGIONS: accepts_region,
    }
    problems: list[tuple[Loc, str]] = []
    try:
        return BatchRequest.model_validate(payload, context=context)
    except ValidationError as exc:
        problems = _error_pairs(exc)
    # Raised outside the except block so the ValidationError is not chained to it.
    raise _request_invalid(problems)


def _request_invalid(problems: list[tuple[Loc, str]]) -> RequestInvalid:
    fields: dict[str, str] = {}
    for loc, reason in problems:
        path = _path(loc)
        if path in fields:
            if reason not in fields[path].split("; "):
                fields[path] = f"{fields[path]}; {reason}"
        elif len(fields) < MAX_REPORTED_FIELDS:
            fields[path] = reason
    total = len({_path(loc) for loc, _ in problems})
    message = f"request has {total} invalid field{'s' if total != 1 else ''}"
    if total > len(fields):
        message += f"; the first {len(fields)} are listed"
    return RequestInvalid(message, fields)


def _path(loc: Loc) -> str:
    """`("servers", 3)` -> `servers[3]`; `("os_change", "metadata", "BYOL")` -> dotted."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            # Unknown keys come from the client: keep them printable, one line and short.
            name = str(part)[:100].encode("unicode_escape").decode("ascii")
            path += f".{name}" if path else name
    return path or "body"
