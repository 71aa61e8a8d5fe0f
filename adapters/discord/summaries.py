"""Summaries on Discord (the flow is adapters.chat.summaries): where each is read and shown.

- `/llm-summarize [hours] [since] [limit]`: the channel's (or thread's) recent messages,
  answered ephemerally (the interaction is deferred, then edited as parts finish);
- the message context menu "Summarize" (Apps → Summarize on a message): the thread the message
  is in, or the thread started from it, posted in that thread;
- "@Parley summarize" in a thread: that thread, posted in it; in a channel: its last 24 hours,
  as a reply to the mention (when a message asks for one is the router's call,
  adapters.chat.routing; adapters/discord/messages.py calls `thread` or `channel_reply`).
Each is admitted by the engine before anything is read (adapters.chat.summaries.post_summary),
and reads its newest messages a history request at a time, at most summaries.max_history_pages.
"""
from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import discord
from discord import app_commands

from adapters.chat.answering import Private
from adapters.chat.context import ThreadPost
from adapters.chat.summaries import (PageBudget, ReadPosts, SummaryWindow, TargetBoard, empty_text, parse_window,
                                     post_summary)
from adapters.discord.history import newest_messages, post_of
from adapters.discord.target import DiscordTarget
from adapters.discord.text import DISCORD, NO_MENTIONS, escape_mentions
from engine.errors import ParleyError
from engine.types import Conversation, User

if TYPE_CHECKING:
    from engine.core import Engine

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 2000
THREAD_LIMIT = 2000  # a thread summary reads at most this many messages, its newest


def window_reader(channel: discord.abc.Messageable, window: SummaryWindow, bot_id: int,
                  budget: PageBudget) -> ReadPosts:
    """A channel's messages in `window`, its newest `window.limit` as far as `budget` reaches, oldest first."""

    async def read() -> list[ThreadPost]:
        after = dt.datetime.fromtimestamp(window.oldest, dt.timezone.utc)
        return [post_of(m, bot_id) for m in await newest_messages(channel, window.limit, budget, after=after)]

    return read


def thread_posts(thread: discord.abc.Messageable, before: discord.abc.Snowflake | None, bot_id: int,
                 budget: PageBudget) -> ReadPosts:
    """A thread's newest messages (before `before`), at most THREAD_LIMIT, as far as `budget` reaches."""

    async def read() -> list[ThreadPost]:
        return [post_of(m, bot_id) for m in await newest_messages(thread, THREAD_LIMIT, budget, before=before)]

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

    def budget(self) -> PageBudget:
        """The pages of history one summary may read (summaries.max_history_pages)."""
        return PageBudget(self.engine.config.summaries.max_history_pages)

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
        budget = self.budget()
        read = window_reader(interaction.channel, window, self.bot_id, budget)
        await post_summary(self.engine, where, user, read, InteractionBoard(interaction), DISCORD,
                           window.label, empty_text(window.label), budget=budget)

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
        board = InteractionBoard(interaction)
        told: list[str] = []  # a refusal for the asker alone: it stays the menu's reply

        async def private(text: str) -> None:
            told.append(text)
            await board.finish(text)

        await self.thread(thread, in_thread, user, None, private=private)
        if not told:
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
                     before: discord.abc.Snowflake | None, *, private: Private | None = None) -> None:
        """Summarise `thread` (before `before`) and post the summary in it; `where` is the thread's
        conversation (its server, its parent channel, the thread); a refusal goes to `private`."""
        budget = self.budget()
        await post_summary(self.engine, where, user, thread_posts(thread, before, self.bot_id, budget),
                           TargetBoard(DiscordTarget(thread)), DISCORD, "this thread", empty_text("this thread"),
                           budget=budget, private=private)

    async def channel_reply(self, message: discord.Message, where: Conversation, user: User) -> None:
        """"@Parley summarize" in a channel: its last 24 hours, as a reply to the mention."""
        window = parse_window("")
        budget = self.budget()
        read = window_reader(message.channel, window, self.bot_id, budget)

        async def before_mention() -> list[ThreadPost]:
            return [p for p in await read() if int(p.message_id) < message.id]

        await post_summary(self.engine, where, user, before_mention,
                           TargetBoard(DiscordTarget(message.channel, reference=message)), DISCORD, window.label,
                           empty_text(window.label), budget=budget)
