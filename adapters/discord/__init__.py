"""Discord: its events, message targets, markup, command registration and credentials.

client.py is the adapter (a discord.py Client); access.py what Parley asks of Discord and who
may reach it; text.py the question text, thread names and the DISCORD markup; commands.py
registers the chat layer's commands as application commands.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

import discord

from adapters.discord.access import DISCORD_API_URL, api_base, explain
from adapters.discord.client import DiscordAdapter, open_discord_adapter
from engine.config import Config

if TYPE_CHECKING:
    from engine.core import Engine

__all__ = ["DISCORD_API_URL", "DiscordAdapter", "api_base", "configured", "discord_configured", "open_discord_adapter",
           "run", "run_discord"]

log = logging.getLogger(__name__)


def discord_configured(env: Mapping[str, str], config: Config) -> bool:
    """Whether the environment holds a bot token."""
    return bool((env.get("DISCORD_TOKEN") or "").strip())


async def run_discord(engine: Engine, config: Config, env: Mapping[str, str], stop: asyncio.Event) -> None:
    """Serve Discord until `stop` is set, then stop taking messages and let answers in hand finish."""
    adapter = open_discord_adapter(engine, config, api_url=env.get("DISCORD_API_URL") or DISCORD_API_URL)
    runner = asyncio.create_task(adapter.start(env["DISCORD_TOKEN"].strip()), name="discord-gateway")
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({runner, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        await adapter.close()
        if not runner.done():
            runner.cancel()
        try:
            await runner  # the gateway loop ends by itself only on a fatal error: raise it
        except asyncio.CancelledError:
            pass
        except (discord.LoginFailure, discord.PrivilegedIntentsRequired) as exc:
            log.error(explain(exc))
            raise


configured = discord_configured  # what bot.py calls (PLATFORMS)
run = run_discord
