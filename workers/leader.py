"""A beat scheduler that only ticks while it holds a lease in Redis, so a second `reimage beat`
waits as a standby and takes over within one lease when the first one dies.

The schedule itself stays in memory (from the app's config): a Redis restarted empty loses the
lease, not the schedule, and whichever beat asks first leads again. A tick sent twice anyway
(a lease lost in mid-tick) is harmless: every claim the tick makes is a compare-and-set.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from typing import Any

import redis
from celery import beat

log = logging.getLogger("reimage.beat")

LEASE_KEY = "reimage:beat-leader"
# Renew if the lease is ours, take it if it is free; answer 1 when we lead.
_LEAD = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


class LeaderScheduler(beat.Scheduler):
    """Celery's in-memory scheduler, gated by a Redis lease."""

    lease_s: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        url = self.app.conf.get("reimage_redis_url") or self.app.conf.broker_url
        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._lead_script = self._redis.register_script(_LEAD)
        self._identity = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._leading: bool | None = None

    def _lead(self) -> bool:
        try:
            leading = bool(
                self._lead_script(keys=[LEASE_KEY], args=[self._identity, int(self.lease_s * 1000)])
            )
        except redis.RedisError:
            leading = False  # cannot tell: the broker is down too, so nothing could be sent
        if leading != self._leading:
            log.warning("beat %s %s", self._identity, "leads" if leading else "is on standby")
            self._leading = leading
        return leading

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if not self._lead():
            return min(1.0, self.lease_s / 4)
        # Never sleep past a third of the lease, so the lease is renewed in time.
        return min(float(super().tick(*args, **kwargs)), self.lease_s / 3)
