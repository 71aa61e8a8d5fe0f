"""Discord's hook for thread context (adapters.chat.context): a thread's earlier messages, read
from its history (GET /channels/{id}/messages, newest first, turned oldest first)."""
from __future__ import annotations

import discord

from adapters.chat.context import ReadThread, ThreadPost

CONVERSATION_TYPES = (discord.MessageType.default, discord.MessageType.reply)


def post_of(message: discord.Message, bot_id: int) -> ThreadPost:
    """One Discord message as a thread post; mentions shown as @names (clean_content)."""
    author = message.author
    by_parley = author.id == bot_id
    return ThreadPost(message_id=str(message.id), author_id=str(author.id),
                      author_name=getattr(author, "display_name", "") or author.name,
                      text=message.clean_content, files=tuple(a.filename for a in message.attachments),
                      by_parley=by_parley, by_bot=not by_parley and (author.bot or message.webhook_id is not None))


def thread_reader(channel: discord.abc.Messageable, before: discord.Message, bot_id: int) -> ReadThread:
    """The thread's messages before `before` (the one being answered), oldest first."""

    async def read(limit: int) -> list[ThreadPost]:
        found = [m async for m in channel.history(limit=limit, before=before)]
        return [post_of(m, bot_id) for m in reversed(found) if m.type in CONVERSATION_TYPES]

    return read
