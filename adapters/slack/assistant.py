"""Slack's assistant side panel (Agents & AI Apps), through slack-bolt's AsyncAssistant.

- assistant_thread_started: a greeting in the new panel thread and the suggested prompts of
  config.yaml (slack.assistant), and the channel the user is viewing is kept for the thread;
- assistant_thread_context_changed: the user moved to another channel: kept (Bolt's default
  listener saves it through PanelContexts, the thread context store given to AsyncAssistant);
- a user message in a panel thread: the first one titles the thread (assistant.threads.setTitle),
  and it is answered like any DM (adapters/slack/app.py), with its status line and streaming
  (adapters/slack/replies.py) and the documents of the channel being viewed (`scope`).

Which documents a panel answer may use is the channel Slack says the user is viewing (the
context comes in Slack-signed events, and a user can only view a channel they may read), with
that channel's scope (workspace-wide: the public channels' documents too, never another private
channel's); a DM or no context at all means no channel's documents, only the panel thread's own.

The panel is a DM: someone the access lists turn away, or anyone where DMs are off
(engine/access.py), is told so instead of the greeting, and their messages get the same note
(adapters/slack/messages.py).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING

from slack_bolt.context.assistant.thread_context import AssistantThreadContext
from slack_bolt.context.assistant.thread_context_store.async_store import AsyncAssistantThreadContextStore
from slack_bolt.middleware.assistant.async_assistant import AsyncAssistant

from adapters.chat.memory import ThreadMemory
from adapters.slack.events import team_of
from adapters.slack.markup import defuse, slack_to_plain
from engine.types import Conversation, User

if TYPE_CHECKING:
    from engine.access import Admit
    from engine.config import Config

log = logging.getLogger(__name__)

MAX_PROMPTS = 4  # Slack shows at most four suggested prompts
TITLE_CHARS = 60


class PanelContexts(AsyncAssistantThreadContextStore):
    """The channel each panel thread's user is viewing: "channel/thread_ts" -> Slack's context
    ({channel_id, team_id, enterprise_id}), in a SqliteDict table or Redis (blocking calls off the loop)."""

    def __init__(self, open_mapping: Callable[[], MutableMapping]):
        self._open = open_mapping
        self._db: MutableMapping = {}  # until open()

    async def open(self) -> None:
        self._db = await asyncio.to_thread(self._open)

    async def save(self, *, channel_id: str, thread_ts: str, context: dict[str, str]) -> None:
        value = {k: str(v) for k, v in (context or {}).items() if k in ("channel_id", "team_id", "enterprise_id") and v}
        await asyncio.to_thread(self._db.__setitem__, f"{channel_id}/{thread_ts}", value)

    async def find(self, *, channel_id: str, thread_ts: str) -> AssistantThreadContext | None:
        value = await asyncio.to_thread(self._db.get, f"{channel_id}/{thread_ts}")
        return AssistantThreadContext(value) if value and value.get("channel_id") else None

    async def is_panel(self, channel_id: str, thread_ts: str | None) -> bool:
        return bool(thread_ts) and await asyncio.to_thread(self._db.__contains__, f"{channel_id}/{thread_ts}")

    async def scope(self, team: str, channel_id: str, thread_ts: str | None) -> Conversation | None:
        """The conversation whose documents a panel thread's answers use: the viewed channel."""
        if not thread_ts:
            return None
        context = await self.find(channel_id=channel_id, thread_ts=thread_ts)
        viewed = (context or {}).get("channel_id", "")
        if not viewed or viewed.startswith("D") or (context.get("team_id") and context["team_id"] != team
                                                    and context.get("enterprise_id") != team):
            return None  # no channel, a DM, or another workspace's channel: none of its documents
        return Conversation("slack", team, viewed, "")

    async def close(self) -> None:
        close = getattr(self._db, "close", None)
        if close is not None:
            await asyncio.to_thread(close)


def panel_contexts(config: Config) -> PanelContexts:
    """Kept where the other state is: data_dir/slack_panels.sqlite, or Redis (opened by open())."""

    def open_mapping() -> MutableMapping:
        from engine.redis_sessions import open_state_mapping

        return open_state_mapping(config, "slack_panels.sqlite", "panels", "slack:panel:",
                                  config.sessions.idle_expiry_hours * 3600)

    return PanelContexts(open_mapping)


def suggested_prompts(config: Config) -> list[dict[str, str]]:
    return [{"title": p.title, "message": p.message} for p in config.slack.assistant.prompts[:MAX_PROMPTS]]


def thread_title(text: str) -> str:
    """A panel thread's title from its first message (Slack's text): its words on one line, cut
    at a word, mentions as @name, and nothing left in it that could mention anyone."""
    line = " ".join(slack_to_plain(text).split())
    if len(line) > TITLE_CHARS:
        line = line[: line.rfind(" ", 0, TITLE_CHARS - 1) if " " in line[:TITLE_CHARS] else TITLE_CHARS - 1] + "…"
    return defuse(line)


def build_assistant(config: Config, contexts: PanelContexts, memory: ThreadMemory,
                    on_message: Callable[[dict, dict, object], Awaitable[None]],
                    admit: Admit) -> AsyncAssistant:
    """The panel's listeners; `on_message` is the adapter's own message listener (DMs), `admit`
    the engine's access policy (engine/access.py)."""
    assistant = AsyncAssistant(thread_context_store=contexts, logger=log)

    @assistant.thread_started
    async def started(body: dict, event: dict, say, set_suggested_prompts) -> None:
        thread = event.get("assistant_thread") or {}
        channel = thread.get("channel_id", "")
        panel = Conversation("slack", team_of(body, event)[0], channel, thread.get("thread_ts", ""))
        decision = await admit(panel, User(thread.get("user_id", "")))
        if not decision.allowed:
            await say(decision.reason)  # no greeting, no prompts: Parley is not theirs here
            return
        await contexts.save(channel_id=channel, thread_ts=thread.get("thread_ts", ""),
                            context=thread.get("context") or {})
        await say(config.slack.assistant.greeting)
        prompts = suggested_prompts(config)
        if prompts:
            await set_suggested_prompts(prompts=prompts, title="Try one of these:")
        log.info("assistant thread started", extra={"channel": thread.get("channel_id"),
                                                    "viewing": (thread.get("context") or {}).get("channel_id")})

    @assistant.user_message
    async def user_message(body: dict, event: dict, context, set_title) -> None:
        channel = event.get("channel", "")
        thread_ts = event.get("thread_ts")
        if await contexts.is_panel(channel, thread_ts) and event.get("text", "").strip() \
                and await memory.claim(f"title:{channel}:{thread_ts}"):
            try:
                await set_title(thread_title(event["text"]))
            except Exception:  # noqa: BLE001 - an untitled thread still gets its answer
                log.warning("could not title the assistant thread", extra={"channel": channel}, exc_info=True)
        await on_message(body, event, context)  # answered as a DM: a panel thread is one

    return assistant
