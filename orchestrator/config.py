"""The one typed settings object, read from the environment at the edge and passed inward."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from orchestrator import ids


class SettingsError(Exception):
    """A missing or malformed setting; the message is one line naming the variable."""


class Settings(BaseSettings):
    """Everything a process of reimage needs to know about its surroundings."""

    model_config = SettingsConfigDict(
        extra="ignore", populate_by_name=True, frozen=True, env_ignore_empty=True
    )

    database_url: str = Field("sqlite:///reimage.db", validation_alias="ORCH_DATABASE_URL")
    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias="ORCH_REDIS_URL")
    ecs_endpoint: str = Field(
        "https://ecs.{region}.myhuaweicloud.com", validation_alias="ORCH_ECS_ENDPOINT"
    )
    # Per-region overrides of the template, e.g. {"eu-west-101": "https://ecs.eu-west-101.myhuaweicloud.eu"}
    ecs_endpoints: dict[str, str] = Field(
        default_factory=dict, validation_alias="ORCH_ECS_ENDPOINTS"
    )
    # IMS and EVS (pre-flight facts), signed like ECS; templates and per-region overrides.
    regions: list[str] | None = Field(
        None,
        validation_alias="ORCH_REGIONS",
        description="the regions a batch may name (JSON list); default: the SDK's public "
        "regions; either way, plus every region with an endpoint override",
    )
    ims_endpoint: str = Field(
        "https://ims.{region}.myhuaweicloud.com", validation_alias="ORCH_IMS_ENDPOINT"
    )
    ims_endpoints: dict[str, str] = Field(
        default_factory=dict, validation_alias="ORCH_IMS_ENDPOINTS"
    )
    evs_endpoint: str = Field(
        "https://evs.{region}.myhuaweicloud.com", validation_alias="ORCH_EVS_ENDPOINT"
    )
    evs_endpoints: dict[str, str] = Field(
        default_factory=dict, validation_alias="ORCH_EVS_ENDPOINTS"
    )
    cloud_ak: SecretStr | None = Field(None, validation_alias="HUAWEICLOUD_SDK_AK")
    cloud_sk: SecretStr | None = Field(None, validation_alias="HUAWEICLOUD_SDK_SK")
    cloud_security_token: SecretStr | None = Field(
        None, validation_alias="HUAWEICLOUD_SDK_SECURITY_TOKEN"
    )
    cloud_auth_token: SecretStr | None = Field(None, validation_alias="ORCH_ECS_AUTH_TOKEN")
    api_token: SecretStr | None = Field(None, validation_alias="ORCH_API_TOKEN")
    secret_key: SecretStr | None = Field(None, validation_alias="ORCH_SECRET_KEY")
    tick_seconds: float = Field(1.0, gt=0, le=3600, validation_alias="ORCH_TICK_SECONDS")
    # A ceiling, not the rate: the fleet finds the cloud's rate from its answers (ratelimit.py).
    ecs_rate: float | None = Field(None, gt=0, validation_alias="ORCH_ECS_RATE")
    ecs_burst: int = Field(20, ge=1, validation_alias="ORCH_ECS_BURST")
    ecs_connect_timeout_s: float = Field(5.0, gt=0, validation_alias="ORCH_ECS_CONNECT_TIMEOUT")
    ecs_read_timeout_s: float = Field(30.0, gt=0, validation_alias="ORCH_ECS_READ_TIMEOUT")
    # How long after an unknown changeos outcome we wait before reading the server: a job
    # accepted by the cloud may take a moment to put the server into REBUILD.
    reconcile_grace_s: float = Field(20.0, ge=0, validation_alias="ORCH_RECONCILE_GRACE_S")
    # How old a list sweep's view of a server may be when the pre-flight check before its
    # changeos relies on it (0: always read the server itself, one call per server).
    facts_max_age_s: float = Field(30.0, ge=0, le=300, validation_alias="ORCH_FACTS_MAX_AGE_S")
    # A task message that has not made progress after this long is sent again (it was lost).
    task_lease_s: float = Field(120.0, gt=0, validation_alias="ORCH_TASK_LEASE_S")

    # Observability: one JSON object per log line (or plain text for a terminal).
    log_format: Literal["json", "text"] = Field("json", validation_alias="ORCH_LOG_FORMAT")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", validation_alias="ORCH_LOG_LEVEL"
    )

    # Webhooks: a URL called for every batch (besides each batch's own notify_url), the key
    # that signs every delivery, how many attempts before giving up.
    notify_url: str | None = Field(None, validation_alias="ORCH_NOTIFY_URL")
    webhook_secret: SecretStr | None = Field(None, validation_alias="ORCH_WEBHOOK_SECRET")
    webhook_max_attempts: int = Field(8, ge=1, le=50, validation_alias="ORCH_WEBHOOK_MAX_ATTEMPTS")
    # Hosts a notify_url may point at (exact names or "*.example.com"); empty: any host.
    notify_allowed_hosts: list[str] = Field(
        default_factory=list, validation_alias="ORCH_NOTIFY_ALLOWED_HOSTS"
    )

    # Hosts a health-check template may name besides the server's own addresses and name
    # (exact names or "*.example.com"); a probe never reaches any other address.
    health_allowed_hosts: list[str] = Field(
        default_factory=list, validation_alias="ORCH_HEALTH_ALLOWED_HOSTS"
    )

    # How often the retention sweep looks for backup images to delete (policy.backup).
    backup_sweep_s: float = Field(60.0, gt=0, le=86400, validation_alias="ORCH_BACKUP_SWEEP_S")

    # Hostile input: the largest request body and the most servers one batch may hold.
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, validation_alias="ORCH_MAX_BODY_BYTES")
    max_servers_per_batch: int = Field(
        100_000, ge=1, le=1_000_000, validation_alias="ORCH_MAX_SERVERS_PER_BATCH"
    )
    # Bad tokens one client address may present per minute before it is refused (429).
    auth_failure_limit: int = Field(20, ge=1, validation_alias="ORCH_AUTH_FAILURE_LIMIT")
    # How long the API may answer a repeated hot GET from memory (api/read_cache.py); 0: never.
    api_read_cache_s: float = Field(1.0, ge=0, le=60, validation_alias="ORCH_API_READ_CACHE_S")
    # Cloud credentials per project: a JSON file readable by its owner only.
    credentials_file: str | None = Field(None, validation_alias="ORCH_CREDENTIALS_FILE")
    # CA certificates (PEM) the cloud's endpoints are verified against, instead of the
    # system's: a private cloud, a TLS-inspecting proxy, the simulator's `--tls-dir`.
    ecs_ca_bundle: str | None = Field(None, validation_alias="ORCH_ECS_CA_BUNDLE")

    @field_validator("ecs_ca_bundle")
    @classmethod
    def _pem_ca_bundle(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        try:
            text = Path(value).read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read {value}: {exc.strerror or exc}") from None
        if b"-----BEGIN CERTIFICATE-----" not in text:
            raise ValueError(f"{value} holds no PEM certificate") from None
        try:
            ssl.create_default_context(cafile=value)
        except (ssl.SSLError, ValueError) as exc:
            raise ValueError(f"{value} is not a PEM CA bundle ({exc})") from None
        return value

    @field_validator("notify_url")
    @classmethod
    def _http_notify_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("must be a sqlite:// or postgresql+psycopg:// URL")
        return value

    @field_validator("ecs_endpoints", "ims_endpoints", "evs_endpoints")
    @classmethod
    def _http_endpoints(cls, value: dict[str, str]) -> dict[str, str]:
        for region, url in value.items():
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{region}: must start with http:// or https://")
        return {region: url.rstrip("/") for region, url in value.items()}

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://", "redis+socket://")):
            raise ValueError("must be a redis:// or unix:// URL")
        return value

    @field_validator("ecs_endpoint", "ims_endpoint", "evs_endpoint")
    @classmethod
    def _http_endpoint(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @property
    def broker_url(self) -> str:
        """The Redis URL in Celery's (kombu's) spelling: unix sockets are `redis+socket://`."""
        if self.redis_url.startswith("unix://"):
            return "redis+socket://" + self.redis_url.removeprefix("unix://")
        return self.redis_url

    @property
    def client_redis_url(self) -> str:
        """The Redis URL in redis-py's spelling."""
        if self.redis_url.startswith("redis+socket://"):
            return "unix://" + self.redis_url.removeprefix("redis+socket://")
        return self.redis_url

    def accepts_region(self, region: str) -> bool:
        """Whether a batch may name this region: a known one, or one with its own endpoint."""
        known = ids.PUBLIC_REGIONS if self.regions is None else frozenset(self.regions)
        overridden = {*self.ecs_endpoints, *self.ims_endpoints, *self.evs_endpoints}
        return region in known or region in overridden

    def endpoint_for(self, region: str, service: Literal["ecs", "ims", "evs"] = "ecs") -> str:
        """The service's endpoint in the region: its per-region override, else its template."""
        overrides, template = {
            "ecs": (self.ecs_endpoints, self.ecs_endpoint),
            "ims": (self.ims_endpoints, self.ims_endpoint),
            "evs": (self.evs_endpoints, self.evs_endpoint),
        }[service]
        return overrides.get(region) or template.replace("{region}", region)


def load_settings(**overrides: object) -> Settings:
    """Read the environment; raise SettingsError with one line naming the bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        alias = (
            Settings.model_fields[field].validation_alias
            if field in Settings.model_fields
            else None
        )
        name = alias if isinstance(alias, str) else field
        raise SettingsError(f"{name}: {first['msg']}") from None
