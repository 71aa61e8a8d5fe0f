"""Where Parley's Discord messages go: a channel, a thread or a DM (the chat layer's
AnswerTarget), optionally as a reply to the message being answered. Whatever is sent passes the
DISCORD guard and carries no allowed mentions (adapters/discord/text.py)."""
from __future__ import annotations

import discord

from adapters.chat.feedback import FeedbackTag
from adapters.discord.feedback import feedback_view
from adapters.discord.text import NO_MENTIONS, escape_mentions


class DiscordTarget:
    """Posts into one channel, thread or DM; the answer's last part carries 👍 / 👎."""

    def __init__(self, channel: discord.abc.Messageable, reference: discord.Message | None = None):
        self.channel = channel
        self.reference = reference  # reply to this message with the first post (no thread to answer in)

    async def post(self, text: str, feedback: FeedbackTag | None = None) -> discord.Message:
        reference = self.reference
        self.reference = None
        extra = {"view": feedback_view(feedback)} if feedback is not None else {}
        return await self.channel.send(escape_mentions(text), reference=reference, mention_author=False,
                                       suppress_embeds=True, allowed_mentions=NO_MENTIONS, **extra)

    async def edit(self, handle: discord.Message, text: str, feedback: FeedbackTag | None = None) -> None:
        await handle.edit(content=escape_mentions(text), allowed_mentions=NO_MENTIONS,
                          **({"view": feedback_view(feedback)} if feedback is not None else {}))

    async def delete(self, handle: discord.Message) -> None:
        await handle.delete()
