"""The yardstick of the API load benchmark: a bare aiohttp handler, one process, answering every
GET with the same 1 KB JSON body from memory (no database, no auth, no middleware), so that
`api_load.py` can report the real API's throughput as a share of what aiohttp itself does on
the same machine in the same run.

    python -m benchmarks.bare_api --port 8099
"""

from __future__ import annotations

import argparse

import orjson
from aiohttp import web

BODY = orjson.dumps({"id": "0" * 36, "state": "running", "padding": "x" * 960})


async def answer(_: web.Request) -> web.Response:
    return web.Response(body=BODY, content_type="application/json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
