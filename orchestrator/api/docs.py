"""`/api/v1/openapi.json` and a browsable page of it at `/api/v1/docs`, rendered on the server
from the same document (plain HTML: no script, no download, nothing to build)."""

from __future__ import annotations

import html
import json
from typing import Any

from aiohttp import web

from orchestrator.api.jsonbody import json_response
from orchestrator.api.keys import DOCS_PAGE, OPENAPI


async def openapi_json(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI])


def _schema_name(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        return f'<a href="#schema-{name}">{html.escape(name)}</a>'
    if "anyOf" in schema:
        return " | ".join(_schema_name(s) for s in schema["anyOf"])
    return html.escape(json.dumps(schema))


def _operation_html(path: str, method: str, op: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td><code>{html.escape(p['name'])}</code></td><td>{p['in']}</td>"
        f"<td><code>{html.escape(json.dumps(p['schema']))}</code></td>"
        f"<td>{html.escape(p.get('description', ''))}</td></tr>"
        for p in op.get("parameters", [])
    )
    params = f"<table><tr><th>name</th><th>in</th><th>schema</th><th></th></tr>{rows}</table>"
    body = ""
    if "requestBody" in op:
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        need = "required" if op["requestBody"].get("required") else "optional"
        body = f"<p>Body ({need}): {_schema_name(schema)}</p>"
    answers = "".join(
        f"<li><b>{status}</b> {html.escape(resp['description'])}"
        + (
            f" → {_schema_name(resp['content']['application/json']['schema'])}"
            if "application/json" in resp.get("content", {})
            else ""
        )
        + "</li>"
        for status, resp in op["responses"].items()
    )
    return (
        f'<section class="op"><h3><span class="method">{method.upper()}</span> '
        f"<code>{html.escape(path)}</code></h3><p>{html.escape(op['summary'])}. "
        f"{html.escape(op['description'])}</p>{params if rows else ''}{body}<ul>{answers}</ul>"
        "</section>"
    )


def render_docs_page(document: dict[str, Any]) -> str:
    """The browsable page of an OpenAPI document (the app renders it once)."""
    operations = "".join(
        _operation_html(path, method, op)
        for path, methods in document["paths"].items()
        for method, op in methods.items()
    )
    schemas = "".join(
        f'<section id="schema-{html.escape(name)}"><h3>{html.escape(name)}</h3>'
        f"<pre>{html.escape(json.dumps(schema, indent=2))}</pre></section>"
        for name, schema in document["components"]["schemas"].items()
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>reimage API {document['info']['version']}</title>"
        '<link rel="stylesheet" href="/static/app.css"></head><body class="docs">'
        f"<h1>reimage API {html.escape(document['info']['version'])}</h1>"
        f"<p>{html.escape(document['info']['description'])}</p>"
        '<p>Machine-readable: <a href="/api/v1/openapi.json">/api/v1/openapi.json</a>. '
        "Send <code>Authorization: Bearer &lt;token&gt;</code> on every /api/ call but these "
        "two pages.</p>"
        f"<h2>Operations</h2>{operations}<h2>Schemas</h2>{schemas}</body></html>"
    )


async def docs_page(request: web.Request) -> web.Response:
    return web.Response(text=request.app[DOCS_PAGE], content_type="text/html")
