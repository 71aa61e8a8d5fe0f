"""How a Slack answer is shown: which reply streams it, its status line, its documents, its buttons.

- In a thread (a channel mention, a panel thread, a DM thread) with `slack.native_streaming`:
  NativeStreamingReply (chat.startStream / appendStream / stopStream), falling back per
  workspace to chat.update streaming; at the top level of a DM (Slack streams replies in
  threads only) and with native streaming off: chat.update streaming (StreamingReply).
- In a thread, the status line under it says "is thinking…", "is reading report.pdf…",
  "is queued, 2 ahead…" until the first words (assistant.threads.setStatus).
- A panel thread answers from the documents of the channel the user is viewing.
- Every finished answer carries 👍 / 👎 (adapters/slack/feedback.py).
- A suggested prompt with `action: documents` lists the viewed channel's documents (/llm-docs).
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from slack_bolt.app.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from adapters.chat.answering import Progress, stream_answer
from adapters.chat.commands import run_command
from adapters.chat.memory import ThreadMemory
from adapters.chat.edit_budget import SharedEditBudget, open_edit_buckets
from adapters.chat.streaming import EditBudget, StreamingReply
from adapters.chat.tasks import TaskSet
from adapters.slack.assistant import PanelContexts, build_assistant, panel_contexts
from adapters.slack.commands import WORDING
from adapters.slack.events import Origin, SlackUsers, tell_privately
from adapters.slack.feedback import FeedbackThread, register_feedback
from adapters.slack.home import register_home
from adapters.slack.markup import SLACK
from adapters.slack.native_stream import NativeStreamingReply, StreamSupport
from engine.types import ChatRequest, Conversation, SharedPicture, ThreadMessage, User

if TYPE_CHECKING:
    from engine.config import Config
    from engine.core import Engine

log = logging.getLogger(__name__)

# chat.update is a Tier 3 method: about 50 calls a minute per workspace, with short bursts.
EDIT_RATE_PER_S = 50 / 60
EDIT_BURST = 10

MessageListener = Callable[[dict, dict, object], Awaitable[None]]  # Bolt's (body, event, context)


class SlackReplies:
    """Shows answers: `limit` / `soft_limit` are a message's most and preferred characters."""

    def __init__(self, engine: Engine, config: Config, client: AsyncWebClient, panels: PanelContexts,
                 users: SlackUsers, *, limit: int, soft_limit: int):
        self.engine = engine
        self.config = config
        self.client = client
        self.panels = panels
        self.limit = limit
        self.soft_limit = soft_limit

        async def name_of(user_id: str) -> str:
            return (await users.get(user_id)).name

        self.wording = dataclasses.replace(WORDING, people=name_of)
        self.support = StreamSupport()
        self.budgets: dict[str, EditBudget | SharedEditBudget] = {}  # per workspace, shared by concurrent answers
        self.edit_buckets = open_edit_buckets(config)  # with redis: one bucket per workspace for every replica

    async def open(self) -> None:
        await self.panels.open()

    async def close(self) -> None:
        await self.panels.close()
        if self.edit_buckets is not None:
            await self.edit_buckets.close()

    async def answer(self, origin: Origin, user: User, text: str, earlier: tuple[ThreadMessage, ...],
                     pictures: tuple[SharedPicture, ...] = ()) -> None:
        where = origin.where
        documents = await self.panels.scope(where.workspace, origin.channel, origin.reply_thread_ts) \
            if origin.is_dm else None
        if origin.is_dm and self.asks_for_documents(text) and await self.panels.is_panel(origin.channel,
                                                                                          origin.reply_thread_ts):
            return await self.list_documents(origin, user, documents)
        request = ChatRequest(where=where, user=user, text=text, message_id=origin.ts, earlier=earlier,
                              documents=documents, pictures=pictures)  # the asker's own, this turn's
        reply = self.reply(origin)
        await stream_answer(self.engine, request, reply, SLACK,
                            private=lambda note: tell_privately(self.client, origin, note),
                            progress=self.progress(origin), feedback=True)

    def asks_for_documents(self, text: str) -> bool:
        """The message of a suggested prompt whose action is to list the documents."""
        return any(p.action == "documents" and p.message.strip() == text.strip()
                   for p in self.config.slack.assistant.prompts)

    async def list_documents(self, origin: Origin, user: User, viewed: Conversation | None) -> None:
        """The documents a panel answer may use here (the viewed channel's), listed without the model."""
        if viewed is None:
            text = ("You're not looking at a channel, so I have no channel's documents to use here. "
                    "Open me from a channel to ask about its documents.")
        else:
            text = await run_command("llm-docs", self.engine, viewed, user, "", SLACK, self.wording)
        await self.client.chat_postMessage(channel=origin.channel, thread_ts=origin.reply_thread_ts,
                                           text=SLACK.guard(text))

    def budget(self, workspace: str) -> EditBudget | SharedEditBudget:
        budget = self.budgets.get(workspace)
        if budget is None:
            budget = EditBudget(EDIT_RATE_PER_S, EDIT_BURST) if self.edit_buckets is None \
                else SharedEditBudget(self.edit_buckets, workspace, EDIT_RATE_PER_S, EDIT_BURST)
            self.budgets[workspace] = budget
        return budget

    def reply(self, origin: Origin) -> StreamingReply | NativeStreamingReply:
        slack = self.config.slack
        limit = self.limit
        soft_limit = self.soft_limit

        def edited() -> StreamingReply:
            return StreamingReply(FeedbackThread(self.client, origin.channel, origin.reply_thread_ts),
                                  interval_s=slack.stream_interval_s, limit=limit, soft_limit=soft_limit,
                                  render=SLACK.render, budget=self.budget(origin.where.workspace))

        if not (slack.native_streaming and origin.reply_thread_ts):
            return edited()
        return NativeStreamingReply(self.client, origin.channel, origin.reply_thread_ts,
                                    workspace=origin.where.workspace, user_id=origin.user_id, support=self.support,
                                    fallback=edited, interval_s=slack.stream_interval_s, limit=limit,
                                    soft_limit=soft_limit)

    def progress(self, origin: Origin) -> Callable[[Progress], Awaitable[None]] | None:
        """The thread's status line while the answer is prepared (threads only)."""
        thread_ts = origin.reply_thread_ts
        if not thread_ts:
            return None

        async def set_status(progress: Progress) -> None:
            await self.client.assistant_threads_setStatus(channel_id=origin.channel, thread_ts=thread_ts,
                                                          status=progress.words())

        return set_status


def attach_ai_surface(app: AsyncApp, engine: Engine, config: Config, memory: ThreadMemory, users: SlackUsers,
                      tasks: TaskSet, *, allowed: Callable[[str, str], bool],
                      on_message: MessageListener) -> PanelContexts:
    """Register Slack's AI-app surface on the Bolt app (after its dedupe middleware): the assistant
    panel (whose messages go to `on_message`, the adapter's message listener), the feedback buttons
    and form, the Home tab; returns the panels' contexts (which channel each panel is viewing)."""
    panels = panel_contexts(config)
    app.assistant(build_assistant(config, panels, memory, on_message,  # access read at each panel: engine.access
                                  lambda where, user: engine.access.admit(where, user)))
    register_feedback(app, engine, users, tasks, allowed)
    register_home(app, engine, users, tasks, allowed)
    return panels
