"""The operator web page: serves the single page app (`/`, `/static/<file>`) and puts the
security headers on every response of the API application."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from aiohttp import web

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"

CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}

# The page has no inline script or style and talks only to this origin; nothing may frame it.
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _assets() -> dict[str, Path]:
    """The files that may be served, by name: a request names one of these or gets a 404, so a
    path with `..`, a slash or an encoded slash can never reach another file."""
    return {
        path.name: path
        for path in STATIC_DIR.iterdir()
        if path.is_file() and path.suffix in CONTENT_TYPES
    }


def _file(path: Path) -> web.FileResponse:
    # no-cache: the browser revalidates (ETag / Last-Modified) so an upgrade shows at once.
    return web.FileResponse(
        path,
        headers={"Content-Type": CONTENT_TYPES[path.suffix], "Cache-Control": "no-cache"},
    )


async def _security_headers(_: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def add_web_routes(app: web.Application) -> None:
    """`GET /` and `GET /static/{name}` (no token: the page holds none; the API calls it makes
    do), and the security headers on every response the application prepares."""
    assets = _assets()

    async def index(_: web.Request) -> web.FileResponse:
        return _file(assets["index.html"])

    async def static(request: web.Request) -> web.FileResponse:
        path = assets.get(request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound()
        return _file(path)

    app.on_response_prepare.append(_security_headers)
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
