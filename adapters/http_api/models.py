"""`GET /v1/models`: the configured models, the live one first."""
from __future__ import annotations

from aiohttp import web

from adapters.http_api.context import engine_of


async def list_models(request: web.Request) -> web.Response:
    models = sorted(engine_of(request).list_models(), key=lambda m: not m.live)
    return web.json_response({"object": "list", "data": [
        {"id": m.name, "object": "model", "created": 0, "owned_by": "parley",
         "parley": {"live": m.live, "context_window": m.context_window, "source": m.source,
                    "description": m.description}}
        for m in models]})
