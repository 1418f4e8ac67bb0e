"""What a worker or API process holds for its lifetime: settings, database, rate budget, clock,
one Redis client, and the HTTP sessions its cloud calls go through (`cloud.http_session`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import aiohttp
import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.clock import Clock, utcnow
from orchestrator.cloud.catalog import EvsClient, ImsClient
from orchestrator.cloud.catalog_cache import CatalogCache
from orchestrator.cloud.client import Credentials, EcsClient, RateGate, SignedApi, Timeouts
from orchestrator.cloud.credentials import CredentialStore, load_credentials
from orchestrator.cloud.facts import FactsCache
from orchestrator.cloud.http_session import HttpSessions
from orchestrator.cloud.ratelimit import FleetRateLimiter, RateBudget
from orchestrator.config import Settings
from orchestrator.db.engine import make_engine, make_session_factory
from orchestrator.observability.metrics import CloudCallMetrics, Metrics

ApiT = TypeVar("ApiT", bound=SignedApi)


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    rate_gate: RateGate | None
    facts: FactsCache | None = None
    clock: Clock = field(default=utcnow)
    # Image and flavor facts for pre-flight, shared through Redis when there is one.
    catalog: CatalogCache = field(default_factory=lambda: CatalogCache(None))
    # Counters shared by every process (in the same Redis as the rate budget); None: not kept.
    metrics: Metrics | None = None
    # Cloud and probe sessions: kept on a worker's loop, per use elsewhere.
    http: HttpSessions = field(default_factory=HttpSessions)
    # The process's one client of the shared Redis (rate budget, facts, metrics, locks).
    redis: redis.Redis | None = None
    # Sessions for reads that change nothing (the API's GETs): autocommit, so a request costs
    # no BEGIN and no ROLLBACK round trip; None: the ordinary sessions.
    reads: sessionmaker[Session] | None = None
    # Read once, when first needed; commands check the file at startup (check_credentials).
    _credentials: CredentialStore | None = field(default=None, repr=False)

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        with_rate_limit: bool = True,
        buffered_metrics: bool = False,
        db_pool_size: int = 5,
    ) -> Runtime:
        """`buffered_metrics`: a worker's, written once per task (`Metrics.flush`).
        `db_pool_size`: connections kept open (as many again may open for a burst)."""
        engine = make_engine(settings.database_url, pool_size=db_pool_size)
        gate: RateGate | None = None
        facts: FactsCache | None = None
        metrics: Metrics | None = None
        catalog = CatalogCache(None)
        client: redis.Redis | None = None
        if with_rate_limit:
            client = redis.Redis.from_url(settings.client_redis_url, socket_timeout=5)
            metrics = Metrics(client, buffered=buffered_metrics)
            gate = FleetRateLimiter(
                client,
                RateBudget.from_settings(settings.ecs_rate, settings.ecs_burst),
                metrics=metrics,
            )
            facts = FactsCache(client)
            catalog = CatalogCache(client)
        return cls(
            settings,
            engine,
            make_session_factory(engine),
            gate,
            facts,
            metrics=metrics,
            catalog=catalog,
            http=HttpSessions(settings.ecs_ca_bundle),
            redis=client,
            # An engine of its own (its pool opens connections only for a process that
            # reads: an API process, not a worker), one per thread that may read at most, with
            # none opened past them: the process's cap on the database grows by that, not twice.
            reads=make_session_factory(
                make_engine(
                    settings.database_url, pool_size=db_pool_size, autocommit=True, max_overflow=0
                )
            ),
        )

    def cloud_rate(self) -> float:
        """Calls a second the fleet's rate budget allows, as this process last saw it (the
        rate found or configured); infinite without a budget."""
        return self.rate_gate.rate if self.rate_gate is not None else math.inf

    @property
    def read_sessions(self) -> sessionmaker[Session]:
        """Where the API's GETs read: every statement sees what is committed when it runs."""
        return self.reads if self.reads is not None else self.sessions

    def credentials(self, project_id: str) -> Credentials:
        """The project's own credentials (ORCH_CREDENTIALS_FILE), else the default ones."""
        if self._credentials is None:
            self._credentials = load_credentials(self.settings)
        return self._credentials.for_project(project_id)

    def ecs_client(self, http: aiohttp.ClientSession, *, project_id: str, region: str) -> EcsClient:
        return self._client(EcsClient, "ecs", http, project_id=project_id, region=region)

    def ims_client(self, http: aiohttp.ClientSession, *, project_id: str, region: str) -> ImsClient:
        return self._client(ImsClient, "ims", http, project_id=project_id, region=region)

    def evs_client(self, http: aiohttp.ClientSession, *, project_id: str, region: str) -> EvsClient:
        return self._client(EvsClient, "evs", http, project_id=project_id, region=region)

    def _client(
        self,
        kind: type[ApiT],
        service: Literal["ecs", "ims", "evs"],
        http: aiohttp.ClientSession,
        *,
        project_id: str,
        region: str,
    ) -> ApiT:
        return kind(
            http,
            endpoint=self.settings.endpoint_for(region, service),
            project_id=project_id,
            region=region,
            credentials=self.credentials(project_id),
            timeouts=Timeouts(
                self.settings.ecs_connect_timeout_s, self.settings.ecs_read_timeout_s
            ),
            rate_gate=self.rate_gate,
            observer=CloudCallMetrics(self.metrics) if self.metrics is not None else None,
        )

    def dispose(self) -> None:
        self.engine.dispose()
        if self.reads is not None:
            bind = self.reads.kw["bind"]
            if isinstance(bind, Engine) and bind is not self.engine:
                bind.dispose()
