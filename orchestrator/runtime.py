"""What a worker or API process holds for its lifetime: settings, database, rate budget, clock."""

from __future__ import annotations

from dataclasses import dataclass, field

import aiohttp
import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.clock import Clock, utcnow
from orchestrator.config import Settings
from orchestrator.db.engine import make_engine, make_session_factory
from orchestrator.ecs.client import Credentials, EcsClient, RateGate, Timeouts
from orchestrator.facts import FactsCache
from orchestrator.ratelimit import FleetRateLimiter, RateBudget


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    rate_gate: RateGate | None
    facts: FactsCache | None = None
    clock: Clock = field(default=utcnow)

    @classmethod
    def build(cls, settings: Settings, *, with_rate_limit: bool = True) -> Runtime:
        engine = make_engine(settings.database_url)
        gate: RateGate | None = None
        facts: FactsCache | None = None
        if with_rate_limit:
            client = redis.Redis.from_url(settings.client_redis_url, socket_timeout=5)
            gate = FleetRateLimiter(client, RateBudget(settings.ecs_rate, settings.ecs_burst))
            facts = FactsCache(client)
        return cls(settings, engine, make_session_factory(engine), gate, facts)

    def credentials(self) -> Credentials:
        s = self.settings
        return Credentials(
            access_key=s.cloud_ak.get_secret_value() if s.cloud_ak else None,
            secret_key=s.cloud_sk.get_secret_value() if s.cloud_sk else None,
            security_token=(
                s.cloud_security_token.get_secret_value() if s.cloud_security_token else None
            ),
            auth_token=s.cloud_auth_token.get_secret_value() if s.cloud_auth_token else None,
        )

    def ecs_client(self, http: aiohttp.ClientSession, *, project_id: str, region: str) -> EcsClient:
        return EcsClient(
            http,
            endpoint=self.settings.endpoint_for(region),
            project_id=project_id,
            region=region,
            credentials=self.credentials(),
            timeouts=Timeouts(
                self.settings.ecs_connect_timeout_s, self.settings.ecs_read_timeout_s
            ),
            rate_gate=self.rate_gate,
        )

    def dispose(self) -> None:
        self.engine.dispose()
