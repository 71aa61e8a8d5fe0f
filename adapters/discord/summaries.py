"""Summaries on Discord (the flow is adapters.chat.summaries): where each is read and shown.

- `/llm-summarize [hours] [since] [limit]`: the channel's (or thread's) recent messages,
  answered ephemerally (the interaction is deferred, then edited as parts finish);
- the message context menu "Summarize" (Apps → Summarize on a message): the thread the message
  is in, or the thread started from it, posted in that thread;
- "@Parley summarize" in a thread: that thread, posted in it; in a channel: its last 24 hours,
  as a reply to the mention (when a message asks for one is the router's call,
  adapters.chat.routing; adapters/discord/messages.py calls `thread` or `channel_reply`).
"""
from __future__ import annotations

import datetime as dt
import functools
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import discord
from discord import app_commands

from adapters.chat.context import ThreadPost
from adapters.chat.summaries import SummaryWindow, TargetBoard, empty_text, parse_window, post_summary
from adapters.discord.history import CONVERSATION_TYPES, post_of, thread_reader
from adapters.discord.target import DiscordTarget
from adapters.discord.text import DISCORD, NO_MENTIONS, escape_mentions
from engine.errors import ParleyError
from engine.types import Conversation, User

if TYPE_CHECKING:
    from engine.core import Engine

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 2000
THREAD_LIMIT = 2000  # a thread summary reads at most this many messages, its newest
SCAN_LIMIT = 10_000  # a channel summary looks through at most this many messages of its window


def window_reader(channel: discord.abc.Messageable, window: SummaryWindow, bot_id: int):
    """A channel's messages in `window`, its newest `window.limit`, oldest first."""

    async def read() -> list[ThreadPost]:
        after = dt.datetime.fromtimestamp(window.oldest, dt.timezone.utc)
        newest: deque = deque(maxlen=window.limit)
        async for m in channel.history(limit=SCAN_LIMIT, after=after, oldest_first=True):
            if m.type in CONVERSATION_TYPES:
                newest.append(m)
        return [post_of(m, bot_id) for m in newest]

    return read


class InteractionBoard:
    """An ephemeral summary: the deferred interaction's reply, edited as parts finish."""

    def __init__(self, interaction: discord.Interaction):
        self.interaction = interaction

    async def progress(self, text: str) -> None:
        await self.interaction.edit_original_response(content=escape_mentions(text)[:MESSAGE_LIMIT],
                                                      allowed_mentions=NO_MENTIONS)

    async def finish(self, text: str) -> None:
        await self.interaction.edit_original_response(content=escape_mentions(text)[:MESSAGE_LIMIT],
                                                      allowed_mentions=NO_MENTIONS)


Scope = Callable[[discord.Interaction], Awaitable[Conversation | None]]  # a command's channel; None: not served
UserOf = Callable[[discord.abc.User, discord.Permissions | None], User]


class DiscordSummaries:
    def __init__(self, engine: Engine, client: discord.Client, user_of: UserOf, scope: Scope):
        self.engine = engine
        self.client = client  # the connection to Discord: who Parley is, channels looked up
        self.user_of = user_of
        self.scope = scope

    @property
    def bot_id(self) -> int:
        return self.client.user.id if self.client.user else 0

    def register(self, tree: app_commands.CommandTree) -> None:
        @tree.command(name="llm-summarize",
                      description="Summarise this channel's recent messages (only you see it)")
        @app_commands.guild_only()
        @app_commands.describe(hours="how far back, in hours (default 24)",
                               since="instead of hours: 09:00 (UTC), 2024-05-01 [14:30] or yesterday",
                               limit="at most this many of the newest messages (default 500)")
        async def llm_summarize(interaction: discord.Interaction, hours: int | None = None,
                                since: str | None = None, limit: int | None = None) -> None:
            args = " ".join(x for x in (str(hours) if hours else "", f"since {since}" if since else "",
                                        f"limit {limit}" if limit else "") if x)
            await self.command(interaction, args)

        @tree.context_menu(name="Summarize")
        @app_commands.guild_only()
        async def summarize_thread(interaction: discord.Interaction, message: discord.Message) -> None:
            await self.context_menu(interaction, message)

    async def command(self, interaction: discord.Interaction, args: str) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        where = await self.scope(interaction)
        if where is None:
            await interaction.edit_original_response(content="Parley is not enabled for this server.",
                                                  allowed_mentions=NO_MENTIONS)
            return
        try:
            window = parse_window(args)
        except ParleyError as exc:
            head, _, usage = exc.user_message.partition("Usage:")
            text = f"{head.strip()}\n```\nUsage:{usage.rstrip()}\n```"
            await interaction.edit_original_response(content=escape_mentions(text), allowed_mentions=NO_MENTIONS)
            return
        user = self.user_of(interaction.user, interaction.permissions)
        if not await self.admitted(interaction, where, user):
            return
        read = window_reader(interaction.channel, window, self.bot_id)
        await post_summary(self.engine, where, user, read, InteractionBoard(interaction), DISCORD,
                           window.label, empty_text(window.label))

    async def context_menu(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """The thread of `message` (it is in one, or one was started from it), summarised in it."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        where = await self.scope(interaction)
        thread = await self._thread_of(message)
        if where is None or thread is None:
            await interaction.edit_original_response(
                content="Parley is not enabled for this server." if where is None else
                "That message is not in a thread. `/llm-summarize` summarises this channel's recent messages.",
                allowed_mentions=NO_MENTIONS)
            return
        user = self.user_of(interaction.user, interaction.permissions)
        if not await self.admitted(interaction, where, user):
            return
        await interaction.edit_original_response(content=f"Summarising {thread.mention}…",
                                                  allowed_mentions=NO_MENTIONS)
        in_thread = Conversation("discord", where.workspace, str(thread.parent_id or where.channel), str(thread.id))
        await self.thread(thread, in_thread, user, None)
        await interaction.edit_original_response(content=f"Posted the summary in {thread.mention}.",
                                                  allowed_mentions=NO_MENTIONS)

    async def admitted(self, interaction: discord.Interaction, where: Conversation, user: User) -> bool:
        """Whether `user` may have a summary here (engine/access.py); if not, they alone are told why."""
        decision = await self.engine.access.admit(where, user, command=True)
        if not decision.allowed:
            await interaction.edit_original_response(content=decision.reason, allowed_mentions=NO_MENTIONS)
        return decision.allowed

    async def _thread_of(self, message: discord.Message) -> discord.Thread | None:
        if isinstance(message.channel, discord.Thread):
            return message.channel
        if message.thread is not None:
            return message.thread
        try:  # a thread started from a message has the message's id
            found = self.client.get_channel(message.id) or await self.client.fetch_channel(message.id)
        except discord.HTTPException:
            return None
        return found if isinstance(found, discord.Thread) else None

    async def thread(self, thread: discord.abc.Messageable, where: Conversation, user: User,
                     before: discord.abc.Snowflake | None) -> None:
        """Summarise `thread` (before `before`) and post the summary in it; `where` is the thread's
        conversation (its server, its parent channel, the thread)."""
        read = functools.partial(thread_reader(thread, before, self.bot_id), THREAD_LIMIT)  # the whole thread
        await post_summary(self.engine, where, user, read,
                           TargetBoard(DiscordTarget(thread)), DISCORD, "this thread", empty_text("this thread"))

    async def channel_reply(self, message: discord.Message, where: Conversation, user: User) -> None:
        """"@Parley summarize" in a channel: its last 24 hours, as a reply to the mention."""
        window = parse_window("")
        read = window_reader(message.channel, window, self.bot_id)

        async def before_mention() -> list[ThreadPost]:
            return [p for p in await read() if int(p.message_id) < message.id]

        await post_summary(self.engine, where, user, before_mention,
                           TargetBoard(DiscordTarget(message.channel, reference=message)), DISCORD, window.label,
                           empty_text(window.label))
