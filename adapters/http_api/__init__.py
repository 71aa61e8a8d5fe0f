"""The OpenAI-compatible HTTP API: one more adapter, on the same Engine, limits and documents.

Off by default (config `http_api.enabled`, or `python bot.py --http-api`). Each request carries an
API key (`python bot.py keys create NAME`, engine/api_keys.py) that stands for one identity of the
authority model; what it may reach is checked here (its document scopes) and in the Engine (its
role, the rate limits). server.py builds the aiohttp app from routes.py's table of handlers.
"""
from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING

from engine.config import Config

if TYPE_CHECKING:
    from engine.core import Engine


def configured(env: Mapping[str, str], config: Config) -> bool:
    return config.http_api.enabled


async def run(engine: Engine, config: Config, env: Mapping[str, str], stop: asyncio.Event) -> None:
    """Serve until `stop` is set."""
    from adapters.http_api.server import ApiServer

    server = ApiServer(engine, config)
    await server.start()
    try:
        await stop.wait()
    finally:
        await server.stop()
