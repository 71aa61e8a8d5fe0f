"""`GET /healthz` on the API's listener (no key): 200 when the engine takes work, else 503."""
from __future__ import annotations

from aiohttp import web

from adapters.http_api.context import engine_of


async def healthz(request: web.Request) -> web.Response:
    snap = engine_of(request).snapshot()
    status = "ok" if snap.state == "ready" else snap.state
    if snap.state == "ready" and snap.overloaded:
        status = "overloaded"
    return web.json_response({"status": status, "model": snap.model_name}, status=200 if snap.state == "ready" else 503)
