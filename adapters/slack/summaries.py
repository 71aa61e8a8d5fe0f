"""Summaries in Slack (the flow is adapters.chat.summaries): where each is read and shown.

- `/llm-summarize [HOURS] [since WHEN] [limit N]`: the channel's recent messages (threads
  included), answered ephemerally through the command's response_url;
- the message shortcut "Summarize thread" (callback id `summarize_thread`) on any message: its
  thread, posted in the thread;
- "@Parley summarize" in a thread: that thread, posted in it (at the top level of a channel:
  the channel's last 24 hours, posted in the mention's thread); when a message asks for one is
  the router's call (adapters.chat.routing), adapters/slack/messages.py calls `thread` or
  `channel_in_thread`.
Each is admitted by the engine before anything is read (adapters.chat.summaries.post_summary),
and reads at most summaries.max_history_pages pages of history. The asker's profile (users.info)
is asked only when it could change an answer: their access, or their rate limits, when an admin's
would pass.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

from slack_sdk.errors import SlackApiError

from adapters.chat.answering import Private
from adapters.chat.summaries import PageBudget, ReadPosts, TargetBoard, empty_text, parse_window, post_summary
from adapters.chat.tasks import BUSY_TEXT, Busy, TaskSet
from adapters.slack.events import SlackThread, SlackUsers, team_of
from adapters.slack.history import LATEST, SlackHistory
from adapters.slack.markup import SLACK
from engine.errors import ErrorCode, ParleyError
from engine.types import Conversation, User

if TYPE_CHECKING:
    from slack_bolt.app.async_app import AsyncApp
    from slack_sdk.web.async_client import AsyncWebClient

    from engine.core import Engine

log = logging.getLogger(__name__)

SHORTCUT_ID = "summarize_thread"


class RespondBoard:
    """An ephemeral summary through a response_url: the first progress line, then the summary."""

    def __init__(self, respond: Callable[..., Any]):
        self.respond = respond
        self.told = False

    async def progress(self, text: str) -> None:
        if not self.told:  # one "working on it" line; a response_url is not for a stream of edits
            self.told = True
            await self.respond(text=SLACK.guard(text), response_type="ephemeral")

    async def finish(self, text: str) -> None:
        await self.respond(text=SLACK.guard(text), response_type="ephemeral")


class SlackSummaries:
    def __init__(self, engine: Engine, client: AsyncWebClient, users: SlackUsers, history: SlackHistory,
                 tasks: TaskSet, allowed: Callable[[str, str], bool], bot_user_id: Callable[[], str]):
        self.engine = engine
        self.client = client
        self.users = users
        self.history = history
        self.tasks = tasks
        self.allowed = allowed
        self.bot_user_id = bot_user_id

    def budget(self) -> PageBudget:
        """The pages of history one summary may read (summaries.max_history_pages)."""
        return PageBudget(self.engine.config.summaries.max_history_pages)

    def register(self, app: AsyncApp) -> None:
        app.command("/llm-summarize")(self._on_command)
        app.message_shortcut(SHORTCUT_ID)(self._on_shortcut)

    @staticmethod
    def _busy(user_id: str, respond) -> Busy:
        return Busy(user_id, lambda: respond(text=BUSY_TEXT, response_type="ephemeral"))

    def _resolve(self, user_id: str, team: str):
        """The asker's profile, for admission to ask only when it could spare them."""
        return lambda: self.users.get(user_id, team)

    # ---- /llm-summarize ----------------------------------------------------------------------

    async def _on_command(self, ack, body: dict, respond) -> None:  # Bolt passes arguments by these names
        await ack()  # within Slack's 3 s; the summary follows through response_url
        self.tasks.spawn(self._command(body, respond), name="slack-llm-summarize",
                         busy=self._busy(body.get("user_id", ""), respond))

    async def _command(self, body: dict, respond) -> None:
        team, enterprise = team_of(body)
        channel = body.get("channel_id", "")
        if not self.allowed(team, enterprise):
            await respond(text="Parley is not enabled for this workspace.", response_type="ephemeral")
            return
        try:
            window = parse_window(body.get("text") or "")
        except ParleyError as exc:
            head, _, usage = exc.user_message.partition("Usage:")
            await respond(text=SLACK.guard(f"{head.strip()}\n```\nUsage:{usage.rstrip()}\n```"),  # quotes the input
                          response_type="ephemeral")
            return
        user_id = body.get("user_id", "")
        where = Conversation("slack", team, channel, "")
        user = await self.admitted(where, user_id, respond)
        if user is None:
            return
        budget = self.budget()
        read = self.history.channel_since(channel, window.oldest, window.limit, self.bot_user_id(), budget)
        await post_summary(self.engine, where, user, _friendly(read), RespondBoard(respond), SLACK,
                           window.label, empty_text(window.label), budget=budget,
                           resolve=self._resolve(user_id, team))

    # ---- the "Summarize thread" shortcut -----------------------------------------------------

    async def _on_shortcut(self, ack, body: dict, respond) -> None:
        await ack()
        self.tasks.spawn(self._shortcut(body, respond), name="slack-summarize-thread",
                         busy=self._busy((body.get("user") or {}).get("id", ""), respond))

    async def _shortcut(self, body: dict, respond) -> None:
        team, enterprise = team_of(body)
        if not self.allowed(team, enterprise):
            await respond(text="Parley is not enabled for this workspace.", response_type="ephemeral")
            return
        channel = (body.get("channel") or {}).get("id", "")
        message = body.get("message") or {}
        thread_ts = message.get("thread_ts") or message.get("ts") or ""
        where = Conversation("slack", team, channel, thread_ts)
        user = await self.admitted(where, (body.get("user") or {}).get("id", ""), respond)
        if user is None:
            return
        await self.thread(where, user, LATEST, private=RespondBoard(respond).finish)

    async def admitted(self, where: Conversation, user_id: str, respond) -> User | None:
        """The asker, if they may have a summary here (engine/access.py); if not, they alone are
        told why. Their profile is asked only when a bare id is turned away (an admin's commands pass)."""
        user = User(user_id)
        decision = await self.engine.access.admit(where, user, command=True)
        if not decision.allowed:
            user = await self.users.get(user_id, where.workspace)
            decision = await self.engine.access.admit(where, user, command=True)
        if not decision.allowed:
            await respond(text=decision.reason, response_type="ephemeral")
            return None
        return user

    # ---- a thread, or a channel, in a thread -------------------------------------------------

    async def thread(self, where: Conversation, user: User, before_ts: str, *, private: Private | None = None) -> None:
        """Summarise thread `where.thread` (its messages before `before_ts`) and post it there;
        a refusal (where Parley cannot read, a limit) goes to `private`, before anything is posted."""
        budget = self.budget()
        read = self.history.whole_thread(where.channel, where.thread, before_ts, self.bot_user_id(), budget)
        target = SlackThread(self.client, where.channel, where.thread)
        await post_summary(self.engine, where, user, _friendly(read), TargetBoard(target), SLACK, "this thread",
                           empty_text("this thread"), budget=budget, resolve=self._resolve(user.id, where.workspace),
                           private=private)

    async def channel_in_thread(self, where: Conversation, user: User, reply_ts: str, *,
                                private: Private | None = None) -> None:
        """"@Parley summarize" at the top of a channel: its last 24 hours, in the mention's thread."""
        window = parse_window("")
        budget = self.budget()
        read = self.history.channel_since(where.channel, window.oldest, window.limit, self.bot_user_id(), budget)
        await post_summary(self.engine, where, user, _before(_friendly(read), reply_ts),
                           TargetBoard(SlackThread(self.client, where.channel, reply_ts)), SLACK,
                           window.label, empty_text(window.label), budget=budget,
                           resolve=self._resolve(user.id, where.workspace), private=private)


def _friendly(read: ReadPosts) -> ReadPosts:
    """A channel Parley is not in cannot be read: say how to fix it rather than a bare error."""

    async def wrapped():
        try:
            return await read()
        except SlackApiError as exc:
            if exc.response.get("error") in ("not_in_channel", "channel_not_found"):
                raise ParleyError(ErrorCode.INVALID_REQUEST, "I can't read this channel: invite me with "
                                  "`/invite @Parley` first.") from None
            raise

    return wrapped


def _before(read: ReadPosts, ts: str) -> ReadPosts:
    async def wrapped():
        return [p for p in await read() if float(p.message_id or 0) < float(ts)]

    return wrapped
