"""What Parley asks of Discord, and who may reach it: intents, permissions, the invite URL, the
API address, the lines that explain a refused start, and who may talk to it in DMs."""
from __future__ import annotations

import logging
import time

import discord

log = logging.getLogger(__name__)

DISCORD_API_URL = "https://discord.com/api/v10"
API_VERSION = "v10"
DM_CHECK_CACHE_S = 600.0
# Exactly what Parley does: read channels, post, open public threads on messages and post in
# them, read a message it replies to. No embeds, files, reactions or moderation.
PERMISSIONS = discord.Permissions(view_channel=True, send_messages=True, send_messages_in_threads=True,
                                  create_public_threads=True, read_message_history=True)
SCOPES = ("bot", "applications.commands")


def parley_intents() -> discord.Intents:
    """Guilds (channels, threads, roles), guild and DM messages, and their content (privileged)."""
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.dm_messages = True
    intents.message_content = True
    return intents


def invite_url(application_id: int) -> str:
    return discord.utils.oauth_url(application_id, permissions=PERMISSIONS, scopes=SCOPES)


def api_base(url: str | None) -> str:
    """DISCORD_API_URL as discord.py's Route.BASE wants it: ending in the API version."""
    url = (url or DISCORD_API_URL).rstrip("/")
    last = url.rsplit("/", 1)[-1]
    return url if last.startswith("v") and last[1:].isdigit() else f"{url}/{API_VERSION}"


def explain(exc: BaseException) -> str:
    """A line an operator can act on, for the failures that need their action."""
    if isinstance(exc, discord.PrivilegedIntentsRequired):
        return ("Discord refused the Message Content intent: turn on Bot → Privileged Gateway Intents → "
                "Message Content Intent in the developer portal, then restart.")
    return "Discord refused DISCORD_TOKEN: copy the bot token again from the developer portal (Bot → Reset Token)."


class DmAccess:
    """With a guild allowlist, DMs are for members of a listed guild (checked over REST: the
    members intent is not needed to look one member up), cached for a while."""

    def __init__(self, client: discord.Client):
        self.client = client
        self._checked: dict[int, tuple[float, bool]] = {}

    async def allowed(self, user_id: int) -> bool:
        guilds = self.client.guilds_allowed
        if not guilds:
            return True
        now = time.monotonic()
        cached = self._checked.get(user_id)
        if cached and now - cached[0] < DM_CHECK_CACHE_S:
            return cached[1]
        allowed = False
        for gid in guilds:
            guild = self.client.get_guild(int(gid)) if gid.isdigit() else None
            if guild is None:
                continue
            try:
                await guild.fetch_member(user_id)
                allowed = True
                break
            except discord.NotFound:
                continue
            except discord.HTTPException as exc:
                log.warning("member lookup failed", extra={"guild": gid, "status": exc.status})
        self._checked[user_id] = (now, allowed)
        return allowed
