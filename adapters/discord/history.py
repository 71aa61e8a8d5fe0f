"""Discord's hook for thread context (adapters.chat.context): a thread's earlier messages, read
from its history (GET /channels/{id}/messages, newest first, turned oldest first), and for a
reply, the chain of messages it answers; and for summaries, a channel's or a thread's newest
messages, one history request (a page of 100) at a time while the summary's PageBudget allows."""
from __future__ import annotations

import datetime as dt

import discord

from adapters.chat.context import ReadThread, ThreadPost
from adapters.chat.summaries import PageBudget

CONVERSATION_TYPES = (discord.MessageType.default, discord.MessageType.reply)
PAGE = 100  # messages per history request, Discord's most


async def newest_messages(channel: discord.abc.Messageable, limit: int, budget: PageBudget, *,
                          after: dt.datetime | None = None,
                          before: discord.abc.Snowflake | None = None) -> list[discord.Message]:
    """The newest `limit` conversation messages between `after` and `before`, oldest first, read
    a page at a time (each one history request) while `budget` allows; it notes what it cut."""
    found: list[discord.Message] = []  # newest first
    while len(found) < limit and budget.take("newest"):
        # limit=PAGE: discord.py makes exactly one request, filtered to `after`
        page = [m async for m in channel.history(limit=PAGE, before=before, after=after, oldest_first=False)]
        found += [m for m in page if m.type in CONVERSATION_TYPES]
        if len(page) < PAGE:
            break  # the window's start (or the channel's) is reached
        before = page[-1]
    return found[:limit][::-1]


def post_of(message: discord.Message, bot_id: int) -> ThreadPost:
    """One Discord message as a thread post; mentions shown as @names (clean_content)."""
    author = message.author
    by_parley = author.id == bot_id
    return ThreadPost(message_id=str(message.id), author_id=str(author.id),
                      author_name=getattr(author, "display_name", "") or author.name,
                      text=message.clean_content, files=tuple(a.filename for a in message.attachments),
                      by_parley=by_parley, by_bot=not by_parley and (author.bot or message.webhook_id is not None))


def thread_reader(channel: discord.abc.Messageable, before: discord.abc.Snowflake | None, bot_id: int,
                  starter: discord.PartialMessage | None = None) -> ReadThread:
    """The thread's messages before `before` (the one being answered; None: all of them), oldest
    first; `starter`, the message a thread was opened on (it lives in the parent channel), first."""

    async def read(limit: int) -> list[ThreadPost]:
        found = [m async for m in channel.history(limit=limit, before=before)]
        first: list[discord.Message] = []
        if starter is not None and len(found) < limit:
            try:
                first = [await starter.fetch()]
            except discord.HTTPException:  # not opened on a message, or the message is gone
                first = []
        return [post_of(m, bot_id) for m in first + found[::-1] if m.type in CONVERSATION_TYPES]

    return read


def reply_chain_reader(message: discord.Message, bot_id: int) -> ReadThread:
    """For a reply: the chain of messages it answers (the one it replies to, the one that replied
    to, …), oldest first; a deleted or unreadable link ends the chain."""

    async def read(limit: int) -> list[ThreadPost]:
        chain: list[discord.Message] = []
        reference = message.reference
        while reference is not None and reference.message_id and len(chain) < limit:
            resolved = reference.resolved
            linked = resolved if isinstance(resolved, discord.Message) else reference.cached_message
            if linked is None:
                if isinstance(reference.resolved, discord.DeletedReferencedMessage):
                    break
                try:
                    linked = await message.channel.fetch_message(reference.message_id)
                except discord.HTTPException:
                    break
            chain.append(linked)
            reference = linked.reference
        return [post_of(m, bot_id) for m in reversed(chain) if m.type in CONVERSATION_TYPES]

    return read
