"""Files shared in Slack, each taken in hand once: a document is downloaded with the bot token
(adapters/slack/files.py) and indexed for its channel (adapters.chat.ingest), its notes posted in
the share's thread, a refusal that concerns only the sharer shown to them alone.

Slack announces one share up to three ways (the message with subtype file_share, the
file_shared event, and retries of either, possibly to another process): the first claim of
channel + file does the work, and a question sent with the file waits for it to be indexed.
Which files of a message are indexed is the router's call (adapters.chat.routing); the
file_shared event only ever indexes a document, the message event deciding everything else.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from slack_sdk.errors import SlackApiError

from adapters.chat.ingest import ingest_shared_file
from adapters.chat.memory import ThreadMemory
from adapters.chat.tasks import KeyedLocks, TaskSet
from adapters.slack.documents import SlackDocuments
from adapters.slack.events import (Origin, SlackChannels, SlackThread, SlackUsers, share_origin, team_of,
                                   tell_privately)
from adapters.slack.files import FileFetcher, slack_document
from adapters.slack.markup import SLACK
from engine.types import User

if TYPE_CHECKING:
    from slack_bolt.app.async_app import AsyncApp
    from slack_sdk.web.async_client import AsyncWebClient

    from engine.core import Engine

log = logging.getLogger(__name__)

MAX_INGESTS = 1000  # claims kept in this process before the finished ones are dropped
OTHER_INGEST_WAIT_S = 600.0  # a question sent with a file waits this long for another delivery's ingest

Claim = tuple[bool, asyncio.Future]  # (this delivery indexes it, done when it is indexed)


class SlackSharing:
    def __init__(self, engine: Engine, client: AsyncWebClient, memory: ThreadMemory, locks: KeyedLocks,
                 tasks: TaskSet, users: SlackUsers, fetcher: FileFetcher, documents: SlackDocuments, *,
                 interval_s: float, allowed: Callable[[str, str], bool]):
        self.engine = engine
        self.client = client
        self.memory = memory
        self.locks = locks
        self.tasks = tasks
        self.users = users
        self.fetcher = fetcher
        self.documents = documents
        self.interval_s = interval_s
        self.allowed = allowed
        self._ingests: dict[str, asyncio.Future] = {}
        self.channels = SlackChannels(client)

    def register(self, app: AsyncApp) -> None:
        app.event("file_shared")(self._on_file_shared)

    async def claim(self, channel: str, file_id: str) -> Claim:
        """(True, future) for the first delivery of a file share in a channel, else (False, the
        first one's future) so a question sent with the file waits for the file to be indexed."""
        key = f"file:{channel}:{file_id}"
        future = self._ingests.get(key)
        first_here = future is None
        if first_here:  # made before anything is awaited: a racing delivery finds it
            if len(self._ingests) > MAX_INGESTS:
                for k in [k for k, f in self._ingests.items() if f.done()]:
                    del self._ingests[k]
            future = asyncio.get_running_loop().create_future()
            self._ingests[key] = future
        owner = await self.memory.claim(key)
        if first_here and not owner:
            future.set_result(None)  # taken in hand elsewhere (another process, or before a restart)
        return owner, future

    async def take(self, file: dict, claim: Claim, origin: Origin, user: User, *, waits: bool) -> None:
        """Index `file` if this delivery claimed it; else, when `waits` (a question came with it),
        wait until whoever claimed it is done."""
        owner, done = claim
        if owner:
            try:
                await self.ingest(file, origin, user)
            finally:
                if not done.done():
                    done.set_result(None)
        elif waits:
            await asyncio.wait([done], timeout=OTHER_INGEST_WAIT_S)

    async def ingest(self, file: dict, origin: Origin, user: User) -> None:
        # Who can read the channel goes with the document: the workspace-wide scope reaches only
        # public channels' documents (file_shared and app_mention events do not say: asked of Slack)
        origin = dataclasses.replace(origin, where=await self.channels.known(origin.where, origin.channel))
        shared = self.documents.watch(self.fetcher.shared(file, self.client.files_info), file["id"], origin, user)
        await ingest_shared_file(self.engine, shared, origin.where, user,
                                 SlackThread(self.client, origin.channel, origin.reply_thread_ts), SLACK,
                                 self.interval_s, private=lambda note: tell_privately(self.client, origin, note))

    async def _on_file_shared(self, body: dict, event: dict, context) -> None:
        """A file shared somewhere Parley reads (if the app subscribes to file_shared; the message
        with subtype file_share usually comes too, and whichever is first does the work)."""
        team, enterprise = team_of(body, event)
        channel = event.get("channel_id", "")
        file_id = event.get("file_id", "")
        user_id = event.get("user_id", "")
        if not (channel and file_id and user_id) or user_id == context.bot_user_id or not self.allowed(team, enterprise):
            return
        self.tasks.spawn(self._file_shared(team, channel, file_id, user_id), name=f"slack-file-{file_id}",
                         bounded=True)  # a flood of shares past the bound is refused, not queued

    async def _file_shared(self, team: str, channel: str, file_id: str, user_id: str) -> None:
        owner, done = await self.claim(channel, file_id)
        if not owner:
            return
        try:
            file = (await self.client.files_info(file=file_id))["file"]
            if not slack_document(file):
                log.info("file not a document: ignored", extra={"file": file_id, "type": file.get("filetype")})
                return
            origin = share_origin(team, channel, file, file_id, user_id)
            if not (await self.engine.access.admit(origin.where, User(user_id))).allowed:
                return  # a channel switched off or denied, a person or DMs turned away (engine/access.py)
            async with self.locks.lock(origin.where.session_key):
                if origin.reply_thread_ts:
                    await self.memory.mark(origin.where.session_key, team, channel)
                await self.ingest(file, origin, await self.users.get(user_id, team))
        except SlackApiError as exc:
            log.warning("files.info failed", extra={"file": file_id, "error": exc.response.get("error")})
        finally:
            if not done.done():
                done.set_result(None)
