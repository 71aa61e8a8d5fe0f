"""👍 / 👎 on Discord answers: the same feedback as Slack's (adapters.chat.feedback), as buttons.

An answer's last message carries a view of two buttons whose custom ids name the answer
("parley:fb:up:<id>"); they are discord.py DynamicItems, so a press is understood after a restart
too. The presser alone is thanked (an ephemeral reply); after a 👎 the reply offers "Tell us what
was wrong", a short modal whose text is kept with the vote. Someone the access policy turns away
here (engine/access.py) is told so instead, and nothing is counted.
"""
from __future__ import annotations

import logging
import re

import discord

from adapters.chat.feedback import COMMENT_THANKS, FeedbackTag, record_comment, record_press
from adapters.discord.text import NO_MENTIONS
from engine.types import Conversation, User

log = logging.getLogger(__name__)


def _presser(interaction: discord.Interaction) -> User:
    return interaction.client.user_of(interaction.user, interaction.permissions)  # type: ignore[attr-defined]


def _where(interaction: discord.Interaction) -> Conversation:
    """Where the press was: the server and channel (a thread's parent channel), or the DM."""
    if interaction.guild_id is None:
        return Conversation("discord", "dm", str(interaction.channel_id or ""), "")
    channel = getattr(interaction.channel, "parent_id", None) or interaction.channel_id
    return Conversation("discord", str(interaction.guild_id), str(channel or ""), "")


async def _refused(interaction: discord.Interaction, engine) -> bool:
    """True (and the presser told why, privately) when the access policy turns them away here."""
    decision = await engine.access.admit(_where(interaction), _presser(interaction), command=True)
    if not decision.allowed:
        await interaction.response.send_message(decision.reason, ephemeral=True, allowed_mentions=NO_MENTIONS)
    return not decision.allowed


class FeedbackButton(discord.ui.DynamicItem[discord.ui.Button],
                     template=r"parley:fb:(?P<rating>up|down):(?P<answer>[0-9a-f]{16})"):
    def __init__(self, rating: str, answer_id: str):
        super().__init__(discord.ui.Button(style=discord.ButtonStyle.secondary, emoji="👍" if rating == "up" else "👎",
                                           custom_id=f"parley:fb:{rating}:{answer_id}"))
        self.rating = rating
        self.answer_id = answer_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str]):
        return cls(match["rating"], match["answer"])

    async def callback(self, interaction: discord.Interaction) -> None:
        engine = interaction.client.engine  # type: ignore[attr-defined]
        if await _refused(interaction, engine):
            return
        outcome = await record_press(engine, self.answer_id, _presser(interaction), positive=self.rating == "up")
        view = discord.ui.View(timeout=None)
        if outcome.offer_comment:
            view.add_item(CommentButton(self.answer_id))
        await interaction.response.send_message(outcome.text, ephemeral=True, view=view,
                                                allowed_mentions=NO_MENTIONS)


class CommentButton(discord.ui.DynamicItem[discord.ui.Button], template=r"parley:fbc:(?P<answer>[0-9a-f]{16})"):
    def __init__(self, answer_id: str):
        super().__init__(discord.ui.Button(style=discord.ButtonStyle.primary, label="Tell us what was wrong",
                                           custom_id=f"parley:fbc:{answer_id}"))
        self.answer_id = answer_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str]):
        return cls(match["answer"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_modal(CommentForm(self.answer_id))


class CommentForm(discord.ui.Modal, title="What was wrong?"):
    text: discord.ui.TextInput = discord.ui.TextInput(label="Tell us", style=discord.TextStyle.paragraph,
                                                      max_length=1000,
                                                      placeholder="Wrong facts, missed the question, too long…")

    def __init__(self, answer_id: str):
        super().__init__(timeout=None, custom_id=f"parley:fbform:{answer_id}")
        self.answer_id = answer_id

    async def on_submit(self, interaction: discord.Interaction) -> None:
        engine = interaction.client.engine  # type: ignore[attr-defined]
        if await _refused(interaction, engine):
            return
        await record_comment(engine, self.answer_id, _presser(interaction), str(self.text.value or ""))
        await interaction.response.send_message(COMMENT_THANKS, ephemeral=True, allowed_mentions=NO_MENTIONS)


def feedback_view(tag: FeedbackTag) -> discord.ui.View:
    """The buttons under an answer."""
    view = discord.ui.View(timeout=None)
    view.add_item(FeedbackButton("up", tag.answer_id))
    view.add_item(FeedbackButton("down", tag.answer_id))
    return view


DYNAMIC_ITEMS = (FeedbackButton, CommentButton)
