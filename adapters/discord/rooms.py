"""Who can read a Discord channel, for the documents shared in it (Conversation.visibility).

- a DM: "dm"; a group DM: "group_dm";
- a guild channel @everyone cannot view (its permission overwrites, its category's when synced):
  "private"; one it can: "public";
- a private thread: "private", and its documents are its own (Conversation.document_channel), not
  its parent channel's, whose other members cannot read it; a public thread: its channel's.
"""
from __future__ import annotations

import discord

from engine.types import Conversation


def is_private_thread(channel: object) -> bool:
    return isinstance(channel, discord.Thread) and channel.type is discord.ChannelType.private_thread


def visibility_of(channel: object) -> str:
    """"public", "private", "group_dm", "dm", or "unknown" (a channel not in discord.py's cache)."""
    if isinstance(channel, discord.DMChannel):
        return "dm"
    if isinstance(channel, discord.GroupChannel):
        return "group_dm"
    if isinstance(channel, discord.Thread):
        if is_private_thread(channel):
            return "private"
        parent = channel.parent
        return visibility_of(parent) if parent is not None else "unknown"
    if isinstance(channel, discord.abc.GuildChannel):
        everyone = channel.guild.default_role
        return "public" if channel.permissions_for(everyone).view_channel else "private"
    return "unknown"


def guild_conversation(guild: str, channel_id: str, channel: object, thread: str = "") -> Conversation:
    """The conversation of `channel` (a guild channel or thread) whose settings are `channel_id`'s
    (a thread's parent): with its visibility, and a private thread's own documents."""
    own = str(getattr(channel, "id", "")) if is_private_thread(channel) else ""
    return Conversation("discord", guild, channel_id, thread, visibility=visibility_of(channel), document_channel=own)
