"""Drives one batch in-process as the tick and the workers would (submissions, polls, probes),
at the instants of a clock the test moves: the deterministic tests of the health gate, the
rollback and the backup share it."""

from __future__ import annotations

from typing import Any

import aiohttp
from sqlalchemy import select

from orchestrator.db.models import Batch, BatchServer, ServerHistory
from orchestrator.runtime import Runtime
from orchestrator.services.dispatch import run_tick
from orchestrator.services.polling import poll_servers
from orchestrator.services.submission import submit_servers
from orchestrator.services.verification import probe_servers
from tests.support.service_world import PROJECT, ListDispatcher, SharedClock, World

LEASE_S = 30.0


class Gate:
    """Drives one batch as the tick and the workers would, at the clock's instants."""

    def __init__(self, world: World, clock: SharedClock, rt: Runtime, batch_id: str) -> None:
        self.world, self.clock, self.rt, self.batch_id = world, clock, rt, batch_id

    async def step(self) -> ListDispatcher:
        sent = ListDispatcher()
        run_tick(self.rt.sessions, sent, now=self.clock.utc(), lease_s=LEASE_S, call_timeout_s=1)
        if sent.submits:
            await submit_servers(self.rt, sent.submits)
        for polls in sent.polls:
            await poll_servers(self.rt, polls)
        for probes in sent.probes:
            await probe_servers(self.rt, probes)
        return sent

    async def advance(self, seconds: float, *, by: float = 1.0) -> None:
        """Move the clock in steps of `by`, one tick and its tasks at each."""
        moved = 0.0
        while moved < seconds:
            self.clock.advance(by)
            moved += by
            await self.step()

    def batch(self) -> Batch:
        with self.rt.sessions() as session:
            return session.get_one(Batch, self.batch_id)

    def rows(self) -> list[BatchServer]:
        with self.rt.sessions() as session:
            return list(
                session.scalars(
                    select(BatchServer)
                    .where(BatchServer.batch_id == self.batch_id)
                    .order_by(BatchServer.position)
                )
            )

    def states(self) -> list[str]:
        return [r.state for r in self.rows()]

    def history(self, row_id: int) -> list[tuple[str, str, dict[str, Any]]]:
        with self.rt.sessions() as session:
            return [
                (h.to_state, h.reason, h.details)
                for h in session.scalars(
                    select(ServerHistory)
                    .where(ServerHistory.batch_server_id == row_id)
                    .order_by(ServerHistory.id)
                )
            ]

    async def stats(self) -> dict[str, Any]:
        return await self.world.stats()

    async def server(self, server_id: str) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http:
            client = self.rt.ecs_client(http, project_id=PROJECT, region="cn-north-4")
            return (await client.show_server(server_id)).snapshot().as_dict()

    async def healthy(self, server_id: str) -> bool:
        url = f"{self.world.endpoint}/_sim/health/{server_id}"
        async with aiohttp.ClientSession() as http, http.get(url) as answer:
            return answer.status == 200
