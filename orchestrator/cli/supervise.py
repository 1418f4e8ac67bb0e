"""Keep child processes running: restart one when it dies on its own, stop all when told to.

`reimage worker` runs its Celery workers under this, because a worker can exit on a broker
failure it does not recover from (seen with Celery 5.7 / kombu when Redis restarts while
tasks are unacknowledged); the work itself is safe (the tick re-sends what was lost), but a
worker that stays dead is not.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Sequence
from types import FrameType

log = logging.getLogger("reimage.supervise")


def supervise(
    named_commands: Sequence[tuple[str, Sequence[str]]], *, max_backoff_s: float = 30.0
) -> int:
    """Run every (name, command) until SIGTERM/SIGINT; answer the worst exit code at the end."""
    commands = [command for _, command in named_commands]
    stopping = False
    children: list[subprocess.Popen[bytes] | None] = [None] * len(commands)
    backoff = [1.0] * len(commands)
    restart_at = [0.0] * len(commands)
    started_at = [0.0] * len(commands)

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child is not None and child.poll() is None:
                child.send_signal(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stopping:
            now = time.monotonic()
            for i, command in enumerate(commands):
                child = children[i]
                if child is None and now >= restart_at[i]:
                    children[i], started_at[i] = subprocess.Popen(list(command)), now
                elif child is not None and child.poll() is not None and not stopping:
                    if now - started_at[i] > 60:
                        backoff[i] = 1.0  # it ran a good while: a new failure, not a crash loop
                    print(
                        f"reimage: {command[-1]} worker exited with code {child.returncode}; "
                        f"restarting in {backoff[i]:.0f} s",
                        flush=True,
                    )
                    children[i], restart_at[i] = None, now + backoff[i]
                    backoff[i] = min(max_backoff_s, backoff[i] * 2)
            time.sleep(0.1)
        codes = [c.wait() for c in children if c is not None]
        return max(codes, default=0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
