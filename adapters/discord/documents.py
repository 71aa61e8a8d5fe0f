"""Discord's hooks for documents (adapters.chat.documents): an attachment is remembered by the
message that carried it, and deleting that message (one at a time, or in a bulk delete)
forgets the document it became. Nothing is posted. A channel @everyone can no longer view (or
now can) takes its documents out of (into) the workspace scope at once, not at its next question.
Also: display names for /llm-docs.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord

from adapters.chat.documents import SharedDocuments
from adapters.chat.ingest import SharedFile
from adapters.chat.records import open_records
from adapters.chat.tasks import TaskSet
from adapters.discord.rooms import guild_conversation, visibility_of
from engine.types import Conversation, User

if TYPE_CHECKING:
    from engine.config import Config
    from engine.core import Engine

log = logging.getLogger(__name__)


def message_key(message_id: int | str) -> str:
    return f"msg:{message_id}"


class DiscordDocuments:
    def __init__(self, engine: Engine, config: Config, tasks: TaskSet):
        self.records = open_records(config, "discord", "shared_files")
        self.shared = SharedDocuments(engine, self.records)
        self.tasks = tasks

    async def close(self) -> None:
        await self.records.close()

    def watch(self, shared: SharedFile, message: discord.Message, where: Conversation,
              user: User) -> SharedFile:
        """`shared`, remembered under the message that carried it once downloaded."""
        return self.shared.watch(shared, where, user, [message_key(message.id)])

    def deleted(self, message_ids: list[int]) -> None:
        """Messages were deleted (raw events: also those discord.py never cached)."""
        for message_id in message_ids:
            self.tasks.spawn(self._forget(message_id), name=f"discord-message-deleted-{message_id}")

    def channel_changed(self, before: discord.abc.GuildChannel, after: discord.abc.GuildChannel) -> None:
        """A guild channel was updated: where who can view it changed (its permission overwrites),
        its documents follow. A category's channels get updates of their own when synced."""
        if visibility_of(before) == visibility_of(after) or isinstance(after, discord.CategoryChannel):
            return
        where = guild_conversation(str(after.guild.id), str(after.id), after)
        self.tasks.spawn(self.shared.channel_changed(where), name=f"discord-channel-changed-{after.id}")

    async def _forget(self, message_id: int) -> None:
        forgotten = await self.shared.forget(message_key(message_id))
        if forgotten:
            log.info("documents of a deleted Discord message forgotten", extra={"files": forgotten,
                                                                                "message_id": str(message_id)})


async def display_name(client: discord.Client, guild: discord.Guild | None, user_id: str) -> str:
    """A user's display name in `guild` (the member cache, else one REST lookup), else their name."""
    if not user_id.isdigit():
        return user_id
    uid = int(user_id)
    if guild is not None:
        member = guild.get_member(uid)
        if member is None:
            try:
                member = await guild.fetch_member(uid)
            except discord.HTTPException:
                member = None
        if member is not None:
            return member.display_name
    user = client.get_user(uid)
    return user.display_name if user is not None else user_id
