"""The HTTP sessions a process talks to the cloud (and to its servers' health checks) through.

A worker process runs every task on one event loop of its own (`workers.tasks`), and that loop
*keeps* its sessions (`HttpSessions.keep_on`): one cloud session whose connection pool
(keep-alive, TLS verified against `ORCH_ECS_CA_BUNDLE` or the system's CAs) every server of
every task reuses, so a fleet costs a handful of TCP connections and TLS handshakes instead of
one per server. Any other loop (the API's pre-flight reads, a script's `asyncio.run`) gets a
session for the duration of its `async with`, as before, closed at its end.

Never a context with verification turned off: a certificate the bundle does not vouch for is
an error (`orchestrator.cloud.client` raises it as a `ConfigError`).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Literal

import aiohttp

# No cap on a cloud session's connections (0: unlimited): idle ones are reused, but a request
# never waits for a free one. A wait there would sit between the record of a changeos and its
# send (DESIGN.md invariant 3), and aiohttp counts it against the connect timeout: with a cap
# of 64, a worker busy with more calls than that timed out changeos calls that never left
# (outcome unknown, a reconcile 40 s later; the SIGKILL fault scenario missed its deadline).
CLOUD_POOL_SIZE = 0
# An idle connection is closed after this long (the cloud's gateways keep theirs for longer,
# so our side closes first: a request never races a close from the far end).
KEEPALIVE_S = 15.0
# Health probes go to many hosts, each probed now and then: a fresh connection per probe,
# as a new client of the server would open one.
PROBE_POOL_SIZE = 64


def cloud_ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
    """Verification on, hostnames checked; `ca_bundle` (PEM) replaces the system's CAs."""
    return ssl.create_default_context(cafile=ca_bundle)


@dataclass
class _Kept:
    cloud: aiohttp.ClientSession | None = None
    probes: aiohttp.ClientSession | None = None


class HttpSessions:
    """A process's HTTP sessions: kept per event loop that asked for it, else per use."""

    def __init__(self, ca_bundle: str | None = None) -> None:
        self.ca_bundle = ca_bundle
        self._ssl: ssl.SSLContext | None = None
        self._kept: dict[asyncio.AbstractEventLoop, _Kept] = {}
        # How many cloud sessions were opened (a test proves reuse with it).
        self.cloud_sessions_opened = 0

    @property
    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:  # loading the CAs costs milliseconds: once per process
            self._ssl = cloud_ssl_context(self.ca_bundle)
        return self._ssl

    def keep_on(self, loop: asyncio.AbstractEventLoop) -> None:
        """Sessions used on `loop` stay open until `close` (the loop must outlive them)."""
        for stale in [other for other in self._kept if other.is_closed()]:
            del self._kept[stale]
        self._kept.setdefault(loop, _Kept())

    def _new_cloud(self) -> aiohttp.ClientSession:
        self.cloud_sessions_opened += 1
        connector = aiohttp.TCPConnector(
            limit=CLOUD_POOL_SIZE, keepalive_timeout=KEEPALIVE_S, ssl=self.ssl_context
        )
        return aiohttp.ClientSession(connector=connector)

    @staticmethod
    def _new_probes() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=PROBE_POOL_SIZE, force_close=True)
        return aiohttp.ClientSession(connector=connector)

    def cloud(self) -> AbstractAsyncContextManager[aiohttp.ClientSession]:
        """The session for cloud calls (ECS, IMS, EVS) on the running loop."""
        return self._session("cloud", self._new_cloud)

    def probes(self) -> AbstractAsyncContextManager[aiohttp.ClientSession]:
        """The session for health probes to servers (no cloud CA: the system's trust)."""
        return self._session("probes", self._new_probes)

    @asynccontextmanager
    async def _session(
        self, kind: Literal["cloud", "probes"], new: Callable[[], aiohttp.ClientSession]
    ) -> AsyncIterator[aiohttp.ClientSession]:
        """The loop's kept session of `kind` (made again if closed), or one for this use."""
        kept = self._kept.get(asyncio.get_running_loop())
        if kept is None:
            async with new() as session:
                yield session
            return
        session = getattr(kept, kind)
        if session is None or session.closed:
            session = new()
            setattr(kept, kind, session)
        yield session

    async def close(self) -> None:
        """Close the sessions kept on the running loop (at the process's exit)."""
        kept = self._kept.pop(asyncio.get_running_loop(), None)
        if kept is None:
            return
        for session in (kept.cloud, kept.probes):
            if session is not None and not session.closed:
                await session.close()
