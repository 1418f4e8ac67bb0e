"""`reimage api [--processes N]`: the API on one port, served by one process or by N.

With N > 1 the parent opens N listening sockets on the same address with SO_REUSEPORT (the
kernel spreads new connections over them) and forks one child per socket. Each child builds its
own application (engine, connection pool, Redis client, event loop) after the fork, so nothing
is shared but the port. The parent only keeps them: a child that dies is started again on its
socket (which stays open in the parent, so connections arriving meanwhile wait in its backlog
rather than being refused), and SIGTERM or SIGINT stops them all.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from types import FrameType

from aiohttp import web

from orchestrator.api.app import create_app
from orchestrator.api.kick import Kick
from orchestrator.config import Settings

log = logging.getLogger("reimage.api.serve")
RESTART_PAUSE_S = 1.0  # a child that dies at once must not become a fork loop
STOP_GRACE_S = 10.0


def serve(
    settings: Settings,
    *,
    host: str,
    port: int,
    processes: int,
    make_kick: Callable[[], Kick] | None = None,
) -> None:
    """`make_kick`: builds, in each API process, what asks for a tick after a change."""
    if processes < 1:
        raise ValueError("processes must be at least 1")
    if processes == 1:
        web.run_app(
            create_app(settings, kick=make_kick() if make_kick else None),
            host=host,
            port=port,
            print=None,
            access_log=None,
        )
        return
    sockets = [_listening_socket(host, port)]
    chosen = sockets[0].getsockname()[1]  # port 0: every other socket takes the one chosen
    sockets += [_listening_socket(host, chosen) for _ in range(processes - 1)]
    _Keeper(settings, sockets, make_kick).run()


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


class _Keeper:
    def __init__(
        self,
        settings: Settings,
        sockets: list[socket.socket],
        make_kick: Callable[[], Kick] | None,
    ) -> None:
        self._settings = settings
        self._sockets = sockets
        self._make_kick = make_kick
        self._children: dict[int, int] = {}  # pid: socket index
        self._stopping = False

    def run(self) -> None:
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for first in range(len(self._sockets)):
                self._start(first)
            log.info(
                "api serving on port %d with %d processes",
                self._sockets[0].getsockname()[1],
                len(self._sockets),
            )
            while self._children:
                try:
                    pid, status = os.wait()
                except ChildProcessError:
                    break
                except InterruptedError:
                    continue
                index: int | None = self._children.pop(pid, None)
                if index is None or self._stopping:
                    continue
                log.warning("api process %d ended (status %d); starting another", pid, status)
                time.sleep(RESTART_PAUSE_S)
                if not self._stopping:
                    self._start(index)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._terminate_all()

    def _start(self, index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the child: its own app on its own socket, then gone
            code = 0
            try:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)
                for other, sock in enumerate(self._sockets):
                    if other != index:
                        sock.close()
                web.run_app(
                    create_app(self._settings, kick=self._make_kick() if self._make_kick else None),
                    sock=self._sockets[index],
                    print=None,
                    access_log=None,
                )
            except BaseException:  # reported; the keeper starts another
                log.exception("api process failed")
                code = 1
            finally:
                os._exit(code)
        self._children[pid] = index

    def _stop(self, _signum: int, _frame: FrameType | None) -> None:
        self._stopping = True
        for pid in list(self._children):
            _signal(pid, signal.SIGTERM)

    def _terminate_all(self) -> None:
        self._stopping = True
        deadline = time.monotonic() + STOP_GRACE_S
        for pid in list(self._children):
            _signal(pid, signal.SIGTERM)
        while self._children and time.monotonic() < deadline:
            for pid in list(self._children):
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done:
                    self._children.pop(pid, None)
            time.sleep(0.05)
        for pid in list(self._children):
            _signal(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        self._children.clear()
        for sock in self._sockets:
            sock.close()


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
