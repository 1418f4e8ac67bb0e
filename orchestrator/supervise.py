"""Keep a child process running: restart it when it dies on its own, stop it when told to.

`reimage worker` runs the Celery worker under this, because a worker can exit on a broker
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


def supervise(command: Sequence[str], *, max_backoff_s: float = 30.0) -> int:
    """Run `command` until SIGTERM/SIGINT; answer the child's last exit code."""
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    backoff = 1.0
    try:
        while True:
            started = time.monotonic()
            child = subprocess.Popen(list(command))
            code = child.wait()
            if stopping:
                return code
            if time.monotonic() - started > 60:
                backoff = 1.0  # it ran a good while: this is a new failure, not a crash loop
            log.warning("worker exited with code %s; restarting in %.0f s", code, backoff)
            print(
                f"reimage: worker exited with code {code}; restarting in {backoff:.0f} s",
                flush=True,
            )
            deadline = time.monotonic() + backoff
            while time.monotonic() < deadline and not stopping:
                time.sleep(0.1)
            if stopping:
                return code
            backoff = min(max_backoff_s, backoff * 2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
