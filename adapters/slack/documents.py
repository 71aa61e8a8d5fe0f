"""Slack's hooks for documents (adapters.chat.documents): a shared file is remembered by its file
id and by the message that carried it, and deleting either forgets the document it became:
- `file_deleted` (the file removed from Slack: subscribe to it in the manifest);
- a `message` of subtype `message_deleted` whose message carried files.
Nothing is posted: whoever deleted the file meant it to go.

A channel made private (or public) says so in a `message` of subtype `channel_convert_to_private`
(`channel_convert_to_public`): the documents shared there leave (join) the workspace scope at
once, not at the channel's next question.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from adapters.chat.documents import SharedDocuments
from adapters.chat.ingest import SharedFile
from adapters.chat.records import open_records
from adapters.chat.tasks import TaskSet
from adapters.slack.events import Origin
from engine.types import Conversation, User

if TYPE_CHECKING:
    from slack_bolt.app.async_app import AsyncApp

    from engine.config import Config
    from engine.core import Engine

log = logging.getLogger(__name__)


def file_key(file_id: str) -> str:
    return f"file:{file_id}"


def message_key(channel: str, ts: str) -> str:
    return f"msg:{channel}:{ts}"


# A channel's conversion, as Slack says it (a message subtype), and who can read it now.
CONVERSIONS = {"channel_convert_to_private": "private", "channel_convert_to_public": "public"}


def deleted_message(event: dict) -> bool:
    """A message deleted: `message_deleted`, or, for one with replies, its `message_changed` into a
    tombstone ("This message was deleted.")."""
    if event.get("subtype") == "message_deleted":
        return True
    return event.get("subtype") == "message_changed" and (event.get("message") or {}).get("subtype") == "tombstone"


class SlackDocuments:
    def __init__(self, engine: Engine, config: Config, tasks: TaskSet):
        self.records = open_records(config, "slack", "shared_files")
        self.shared = SharedDocuments(engine, self.records)
        self.tasks = tasks

    def register(self, app: AsyncApp) -> None:
        app.event("file_deleted")(self._on_file_deleted)

    async def close(self) -> None:
        await self.records.close()

    def watch(self, shared: SharedFile, file_id: str, origin: Origin, user: User) -> SharedFile:
        """`shared`, remembered under its file id and its message once downloaded."""
        keys = [file_key(file_id)] + ([message_key(origin.channel, origin.ts)] if origin.ts else [])
        return self.shared.watch(shared, origin.where, user, keys)

    async def _on_file_deleted(self, event: dict) -> None:
        file_id = event.get("file_id") or ""
        if file_id:
            self.tasks.spawn(self._forget([file_key(file_id)]), name=f"slack-file-deleted-{file_id}")

    def message_deleted(self, event: dict) -> None:
        """A deleted message (deleted_message): forget what its files became."""
        channel = event.get("channel") or ""
        previous = event.get("previous_message") or {}
        ts = event.get("deleted_ts") or previous.get("ts") or (event.get("message") or {}).get("ts") or ""
        files = [f.get("id") for f in previous.get("files") or [] if isinstance(f, dict) and f.get("id")]
        keys = ([message_key(channel, ts)] if channel and ts else []) + [file_key(f) for f in files]
        if keys:
            self.tasks.spawn(self._forget(keys), name=f"slack-message-deleted-{channel}-{ts}")

    def channel_converted(self, team: str, event: dict) -> str | None:
        """A channel made private or public (CONVERSIONS): its documents follow. Its visibility now, or
        None when the event is not one."""
        visibility = CONVERSIONS.get(event.get("subtype") or "")
        channel = event.get("channel") or ""
        if visibility is None or not channel:
            return None
        where = Conversation("slack", team, channel, "", visibility=visibility)
        self.tasks.spawn(self.shared.channel_changed(where), name=f"slack-channel-converted-{channel}")
        return visibility

    async def _forget(self, keys: list[str]) -> None:
        forgotten = []
        for key in keys:
            forgotten += await self.shared.forget(key)
        if forgotten:
            log.info("documents of a deleted Slack file forgotten", extra={"files": forgotten, "keys": keys})
