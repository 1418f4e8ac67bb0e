"""The API asks for a tick after a request that changed something (issue 17 part 3).

A batch accepted, resumed, approved, retried or cancelled is work for the tick; without a kick
it waits for the beat's next tick (up to ORCH_TICK_SECONDS). The kick itself is given to the
app by whoever starts it (`reimage api` gives `workers.api_kicker.TickKicker`; the protocol is
`orchestrator.services.tick_kicks`); it goes out on the executor after the answer is decided,
so a broker that is slow or away never slows or fails a request: the beat's tick comes anyway.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from orchestrator.api.keys import KICK

_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
Kick = Callable[[], None]


@web.middleware
async def kick_on_change(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    response = await handler(request)
    kick = request.app.get(KICK)
    if kick is not None and request.method not in _SAFE and response.status < 400:
        # Not awaited: the answer does not wait for the broker.
        asyncio.get_running_loop().run_in_executor(None, kick)
    return response
