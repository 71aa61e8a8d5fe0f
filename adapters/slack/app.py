"""The Slack adapter: slack-bolt's AsyncApp in Socket Mode (default) or over the HTTP Events API.

Here: starting and stopping, which workspaces are served, and the Bolt listeners. Slack events
become chat-layer calls (adapters.chat), and the chat layer's messages go back through the Web API:
- each message is handed to adapters/slack/messages.py, which gathers its facts for the router
  (adapters.chat.routing: a mention, a DM, a thread Parley holds, a `reply all` channel, the files)
  and carries out its action; in Slack an @mention answers in the message's thread (a thread
  Parley joins midway is read first), a DM is one conversation (a thread inside it is its own);
- answers stream with chat.startStream/appendStream where the workspace has them, else into a
  placeholder with chat.update within Slack's edit rate (adapters/slack/replies.py); the
  assistant panel, feedback buttons and Home tab: attach_ai_surface; failures that concern only
  the asker are shown to them alone (ephemeral);
- documents shared where Parley reads are downloaded with the bot token and indexed for that
  channel (adapters/slack/sharing.py); other files are never downloaded;
- the "Summarize thread" shortcut and /llm-summarize: adapters/slack/summaries.py; deleting a
  file or its message forgets its document (adapters/slack/documents.py);
- the slash commands are acked at once and answered ephemerally.
Events are deduplicated by event id, message and file (Slack retries deliveries, possibly to
another process, and a message can come as both app_mention and message): none is answered
twice. The tokens only go to Slack's own hosts and are never logged.
"""
from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING

from aiohttp import web
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from adapters.chat.conversations import DmConversations
from adapters.chat.memory import open_thread_memory
from adapters.chat.records import open_records
from adapters.chat.tasks import KeyedLocks, TaskSet
from adapters.slack.commands import register_commands, register_fresh_start
from adapters.slack.documents import SlackDocuments, deleted_message
from adapters.slack.events import ANSWERED_SUBTYPES, SlackUsers, team_of
from adapters.slack.files import FileFetcher
from adapters.slack.history import SlackHistory
from adapters.slack.markup import mentions
from adapters.slack.messages import SlackMessages
from adapters.slack.replies import SlackReplies, attach_ai_surface
from adapters.slack.sharing import SlackSharing
from adapters.slack.summaries import SlackSummaries
from engine.config import Config
from engine.types import Conversation

if TYPE_CHECKING:  # the engine object is handed in; importing it here would pull the model code in
    from engine.core import Engine

log = logging.getLogger(__name__)

SLACK_API_URL = "https://slack.com/api/"
MESSAGE_LIMIT = 3900  # Slack accepts ~40k, but a reader scrolls: keep each message a screenful
MESSAGE_SOFT_LIMIT = 3000  # prefer to cut at a paragraph after this many characters
SHUTDOWN_GRACE_S = 10.0


class SlackStartError(RuntimeError):
    """Slack refused to let the adapter start (a wrong or revoked token); the message says which."""


class SlackAdapter:
    """Parley's Slack app. `app` is the Bolt AsyncApp; `web_app()` its aiohttp app for HTTP mode."""

    def __init__(self, engine: Engine, config: Config, *, bot_token: str, app_token: str = "",
                 signing_secret: str = "", api_url: str = SLACK_API_URL):
        if not bot_token:
            raise ValueError("SLACK_BOT_TOKEN is required")
        if config.slack.mode == "http" and not signing_secret:
            raise ValueError("SLACK_SIGNING_SECRET is required in HTTP mode (request signatures are verified)")
        if config.slack.mode == "socket" and not app_token:
            raise ValueError("SLACK_APP_TOKEN is required in Socket Mode")
        self.engine = engine
        self.config = config
        self.mode = config.slack.mode
        self.api_url = api_url if api_url.endswith("/") else api_url + "/"
        self._app_token = app_token
        self.client = AsyncWebClient(
            token=bot_token, base_url=self.api_url,
            retry_handlers=[AsyncConnectionErrorRetryHandler(max_retry_count=2),
                            AsyncRateLimitErrorRetryHandler(max_retry_count=3)])
        # Request verification stays on: Bolt checks X-Slack-Signature / X-Slack-Request-Timestamp
        # with the signing secret on every HTTP request (Socket Mode needs none: the socket is ours).
        self.app = AsyncApp(client=self.client, signing_secret=signing_secret, request_verification_enabled=True,
                            ignoring_self_events_enabled=True, process_before_response=False)
        self.memory = open_thread_memory(config, "slack")
        self.tasks = TaskSet("slack", limit=config.limits.tasks_in_flight)
        self.locks = KeyedLocks()
        self.users = SlackUsers(self.client)
        self.history = SlackHistory(self.client, self.users)
        self.files = FileFetcher(bot_token, self.api_url, config.knowledge.max_file_mb)
        self.documents = SlackDocuments(engine, config, self.tasks)  # deleting a file forgets its document
        self.dms = DmConversations(open_records(config, "slack", "dms"))  # /llm-new, "new" in a DM
        self.summaries = SlackSummaries(engine, self.client, self.users, self.history, self.tasks,
                                        self.allowed, lambda: self.bot_user_id)
        self.sharing = SlackSharing(engine, self.client, self.memory, self.locks, self.tasks, self.users, self.files,
                                    self.documents, interval_s=config.slack.stream_interval_s, allowed=self.allowed)
        self.bot_user_id = ""
        self._runner: web.AppRunner | None = None
        self._socket = None  # the Socket Mode handler, once started
        self.http_port = 0  # the bound port in HTTP mode, once started
        self._register()

    # ---- lifecycle ---------------------------------------------------------------------------

    def _register(self) -> None:
        self.app.middleware(self._dedupe)
        self.app.event("app_mention")(self.on_app_mention)
        self.app.event("message")(self.on_message)
        self.sharing.register(self.app)
        register_commands(self.app, self.engine, self.tasks, self.users, self._command_scope)
        register_fresh_start(self.app, self.tasks, self.dms, self._command_scope,
                             lambda where, user: self.engine.access.admit(where, user, command=True))
        self.documents.register(self.app)
        self.summaries.register(self.app)
        # The assistant panel, feedback, Home tab; then how answers show, and what each message gets.
        panels = attach_ai_surface(self.app, self.engine, self.config, self.memory, self.users, self.tasks,
                                   allowed=self.allowed, on_message=self.on_message)
        self.replies = SlackReplies(self.engine, self.config, self.client, panels, self.users,
                                    limit=MESSAGE_LIMIT, soft_limit=MESSAGE_SOFT_LIMIT)
        self.messages = SlackMessages(
            self.engine, self.client, self.memory, self.locks, self.tasks, users=self.users, history=self.history,
            dms=self.dms, summaries=self.summaries, replies=self.replies, sharing=self.sharing,
            allowed=self.allowed, bot_user_id=lambda: self.bot_user_id,
            context_messages=self.config.sessions.thread_context_messages, started_at=time.time())
        self.app.error(self._on_error)

    async def start(self, host: str = "0.0.0.0", port: int | None = None) -> None:
        """Check the tokens, open the memory and start receiving events (Socket Mode or HTTP)."""
        await self._preflight()
        await self.memory.open()
        await self.replies.open()
        await self.files.open()
        if self.mode == "http":
            self.http_port = await self.start_http(host, self.config.slack.port if port is None else port)
            log.info("slack listening", extra={"mode": "http", "port": self.http_port, "path": self.config.slack.path})
        else:
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            self._socket = AsyncSocketModeHandler(self.app, app_token=self._app_token)
            await self._socket.connect_async()
            log.info("slack connected", extra={"mode": "socket"})

    async def _preflight(self) -> None:
        """Fail at start, with a clear reason, when Slack refuses a token (rather than retrying forever)."""
        try:
            auth = await self.client.auth_test()
        except SlackApiError as exc:
            raise SlackStartError(f"Slack refused SLACK_BOT_TOKEN: {exc.response.get('error')}") from None
        self.bot_user_id = auth.get("user_id", "")
        log.info("slack bot identified", extra={"team": auth.get("team_id"), "bot_user": self.bot_user_id})
        if self.mode == "socket":
            try:
                await self.client.apps_connections_open(app_token=self._app_token)
            except SlackApiError as exc:
                raise SlackStartError(f"Slack refused SLACK_APP_TOKEN: {exc.response.get('error')} "
                                      "(it needs the connections:write scope)") from None

    def web_app(self) -> web.Application:
        """The aiohttp application serving the Events API / slash commands at slack.path."""
        return self.app.web_app(path=self.config.slack.path, port=self.config.slack.port)

    async def start_http(self, host: str, port: int) -> int:
        """Serve web_app() on host:port (0 picks a free port); returns the bound port."""
        self._runner = web.AppRunner(self.web_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def close(self, grace_s: float = SHUTDOWN_GRACE_S) -> None:
        """Stop taking events, give answers in hand `grace_s` to finish, then end them."""
        self.tasks.closing = True
        if self._socket is not None:
            with contextlib.suppress(Exception):
                await self._socket.close_async()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.tasks.close(grace_s)
        await self.memory.close()
        await self.files.close()
        await self.replies.close()
        await self.documents.close()
        await self.dms.records.close()
        log.info("slack closed")

    async def idle(self) -> None:
        """Wait until every event taken in hand has been fully answered (tests, shutdown)."""
        await self.tasks.idle()

    # ---- who and where -----------------------------------------------------------------------

    def allowed(self, team_id: str, enterprise_id: str = "") -> bool:
        """Whether Parley serves this workspace (slack.workspaces; empty: every one)."""
        allowed = self.config.slack.workspaces
        return not allowed or team_id in allowed or (bool(enterprise_id) and enterprise_id in allowed)

    def _command_scope(self, body: dict) -> Conversation | None:
        team, enterprise = team_of(body)
        if not self.allowed(team, enterprise):
            return None
        return Conversation("slack", team, body.get("channel_id", ""), "")

    # ---- events ------------------------------------------------------------------------------

    async def _dedupe(self, body: dict, request, next):  # noqa: A002 - Bolt injects `next` by name
        """Events already in hand (a retry, or a redelivery after a restart) are acked and dropped."""
        if body.get("type") == "event_callback" and body.get("event_id"):
            # This process only: what must hold across restarts and processes is the answer/file key.
            if not await self.memory.claim("event:" + body["event_id"], shared=False):
                retry = (request.headers.get("x-slack-retry-num") or [None])[0]
                log.info("duplicate event ignored", extra={"event_id": body["event_id"], "retry": retry})
                return BoltResponse(status=200, body="")
        return await next()

    async def on_app_mention(self, body: dict, event: dict, context) -> None:
        self._take(body, event, context.bot_user_id or "", mentioned=True)

    async def on_message(self, body: dict, event: dict, context) -> None:
        """Bolt's `message` listener (the assistant panel's messages come here too)."""
        if deleted_message(event):
            self.documents.message_deleted(event)  # the files it carried are forgotten
            return
        team, enterprise = team_of(body)
        converted = self.documents.channel_converted(team, event) if self.allowed(team, enterprise) else None
        if converted:  # made private or public: its documents follow, and so does what this process knew
            self.sharing.channels.heard(event["channel"], converted)
            return
        if event.get("subtype") not in ANSWERED_SUBTYPES:
            return  # edits, deletions, joins, bot posts: not something said to answer
        bot_user = context.bot_user_id or ""
        self._take(body, event, bot_user, mentioned=mentions(event.get("text", ""), bot_user))

    def _take(self, body: dict, event: dict, bot_user_id: str, mentioned: bool) -> None:
        if bot_user_id:
            self.bot_user_id = bot_user_id
        self.messages.take(body, event, bot_user_id, mentioned)

    async def _on_error(self, error: Exception, body: dict) -> None:
        log.error("slack listener error", extra={"type": body.get("type") if isinstance(body, dict) else None},
                  exc_info=error)
