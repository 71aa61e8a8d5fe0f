"""The Slack adapter: slack-bolt's AsyncApp in Socket Mode (default) or over the HTTP Events API.

Slack events become chat-layer calls (adapters.chat), and the chat layer's messages go back
through the Web API:
- an @mention starts a thread on that message (or continues the thread it was posted in: a
  thread Parley joins midway is read with conversations.replies first, as context); later
  messages in a thread Parley is part of continue it without a mention; DMs are one conversation
  per DM (a thread inside a DM is its own conversation);
- answers stream with chat.startStream/appendStream where the workspace has them, else into a
  placeholder with chat.update within Slack's edit rate (adapters/slack/replies.py); the
  assistant panel, feedback buttons and Home tab: attach_ai_surface; failures that concern only
  the asker are shown to them alone (ephemeral);
- documents shared where Parley reads (the types engine/knowledge/formats.py knows) are downloaded
  with the bot token and ingested for that channel; other files (screenshots, archives) are never
  downloaded, and only a sharer who addressed Parley (a mention, a DM) is told why, privately;
- a thread of Parley's idle while Parley was down is read again at its next message (what it
  missed joins the conversation); "new" alone in a DM, or /llm-new, starts a fresh conversation;
- "@Parley summarize", the "Summarize thread" shortcut and /llm-summarize summarise a thread or
  a channel (adapters/slack/summaries.py); deleting a file or its message forgets its document
  (adapters/slack/documents.py);
- the slash commands are acked at once and answered ephemerally.
Events are deduplicated by event id, message and file (Slack retries deliveries, possibly to
another process, and a message can come as both app_mention and message): none is answered
twice. The tokens only go to Slack's own hosts and are never logged.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
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

from adapters.chat.context import read_earlier
from adapters.chat.ingest import ingest_shared_file, unsupported_text
from adapters.chat.memory import open_thread_memory
from adapters.chat.streaming import EditBudget
from adapters.chat.tasks import KeyedLocks, TaskSet
from adapters.chat.conversations import FRESH_TEXT, DmConversations, asks_for_fresh_start
from adapters.chat.records import open_records
from adapters.chat.summaries import asks_for_summary
from adapters.slack.commands import register_commands, register_fresh_start
from adapters.slack.documents import SlackDocuments, deleted_message
from adapters.slack.events import (ANSWERED_SUBTYPES, Origin, SlackThread, SlackUsers, message_origin,
                                   share_origin, team_of)
from adapters.slack.files import FileFetcher, shared_name, slack_document
from adapters.slack.history import SlackHistory
from adapters.slack.markup import SLACK, mentions, slack_to_plain
from adapters.slack.replies import attach_ai_surface
from adapters.slack.summaries import SlackSummaries
from engine.config import Config
from engine.types import Conversation

if TYPE_CHECKING:  # the engine object is handed in; importing it here would pull the model code in
    from engine.core import Engine

log = logging.getLogger(__name__)

SLACK_API_URL = "https://slack.com/api/"
MESSAGE_LIMIT = 3900  # Slack accepts ~40k, but a reader scrolls: keep each message a screenful
MESSAGE_SOFT_LIMIT = 3000  # prefer to cut at a paragraph after this many characters
# chat.update is a Tier 3 method: about 50 calls a minute per workspace, with short bursts.
EDIT_RATE_PER_S = 50 / 60
EDIT_BURST = 10
SHUTDOWN_GRACE_S = 10.0
MAX_INGESTS = 1000


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
        self.engine, self.config, self.mode = engine, config, config.slack.mode
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
        self.tasks = TaskSet("slack")
        self.locks = KeyedLocks()
        self.users = SlackUsers(self.client)
        self.history = SlackHistory(self.client, self.users)
        self.files = FileFetcher(bot_token, self.api_url, config.knowledge.max_file_mb)
        self.documents = SlackDocuments(engine, config, self.tasks)  # deleting a file forgets its document
        self.dms = DmConversations(open_records(config, "slack", "dms"))  # /llm-new, "new" in a DM
        self.summaries = SlackSummaries(engine, self.client, self.users, self.history, self.tasks,
                                        self._allowed, lambda: self.bot_user_id)
        self.started_at = time.time()  # threads idle since before this may have missed messages
        self.bot_user_id = ""
        self._edit_budgets: dict[str, EditBudget] = {}  # per workspace, shared by concurrent answers
        self._ingests: dict[str, asyncio.Future] = {}
        self._runner: web.AppRunner | None = None
        self._socket = None  # the Socket Mode handler, once started
        self.http_port = 0  # the bound port in HTTP mode, once started
        self._register()

    # ---- lifecycle ---------------------------------------------------------------------------

    def _register(self) -> None:
        self.app.middleware(self._dedupe)
        self.app.event("app_mention")(self._on_app_mention)
        self.app.event("message")(self._on_message)
        self.app.event("file_shared")(self._on_file_shared)
        register_commands(self.app, self.engine, self.tasks, self.users, self._command_scope)
        register_fresh_start(self.app, self.tasks, self.dms, self._command_scope)
        self.documents.register(self.app)
        self.summaries.register(self.app)
        self.replies = attach_ai_surface(self)  # assistant panel, feedback, Home tab; how answers show
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

    def _allowed(self, team_id: str, enterprise_id: str = "") -> bool:
        allowed = self.config.slack.workspaces
        return not allowed or team_id in allowed or (bool(enterprise_id) and enterprise_id in allowed)

    def _command_scope(self, body: dict) -> Conversation | None:
        team, enterprise = team_of(body)
        if not self._allowed(team, enterprise):
            return None
        return Conversation("slack", team, body.get("channel_id", ""), "")

    def _edit_budget(self, workspace: str) -> EditBudget:
        budget = self._edit_budgets.get(workspace)
        if budget is None:
            budget = self._edit_budgets[workspace] = EditBudget(EDIT_RATE_PER_S, EDIT_BURST)
        return budget

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

    async def _on_app_mention(self, body: dict, event: dict, context) -> None:
        if event.get("bot_id") or event.get("bot_profile"):
            return  # another bot mentioning us: bots do not talk to bots here
        self._take_message(body, event, context.bot_user_id or "", mentioned=True)

    async def _on_message(self, body: dict, event: dict, context) -> None:
        if deleted_message(event):
            self.documents.message_deleted(event)  # the files it carried are forgotten
            return
        if event.get("subtype") not in ANSWERED_SUBTYPES or event.get("bot_id") or event.get("bot_profile"):
            return  # edits, deletions, joins, and every bot's messages (ours included)
        bot_user = context.bot_user_id or ""
        if not event.get("user") or event.get("user") == bot_user:
            return
        self._take_message(body, event, bot_user, mentioned=mentions(event.get("text", ""), bot_user))

    def _take_message(self, body: dict, event: dict, bot_user_id: str, mentioned: bool) -> None:
        """Filter without awaiting anything; decide and answer in a task of its own."""
        if bot_user_id:
            self.bot_user_id = bot_user_id
        team, enterprise = team_of(body, event)
        origin = message_origin(event, team) if self._allowed(team, enterprise) else None
        if origin is None or origin.user_id == bot_user_id:
            return
        files = [f for f in event.get("files") or [] if isinstance(f, dict) and f.get("id")]
        documents = [f for f in files if slack_document(f)]
        ignored = [shared_name(f) for f in files if f not in documents]
        text = slack_to_plain(event.get("text", ""), bot_user_id)
        if ignored and not (text or documents or mentioned or origin.is_dm):
            return  # a screenshot or an archive shared in passing: nothing to read, nothing to say
        self.tasks.spawn(self._route(origin, text, documents, ignored, mentioned),
                         name=f"slack-msg-{origin.channel}-{origin.ts}")

    async def _route(self, origin: Origin, text: str, files: list[dict], ignored: list[str], mentioned: bool) -> None:
        """Answer what is for Parley (a mention, a DM, a thread of Parley's), index the documents
        shared; other files are never downloaded, and only the sharer of one addressed to Parley
        (a mention, a DM) is told why."""
        if ignored and (mentioned or origin.is_dm) and await self.memory.claim(f"ignored:{origin.channel}:{origin.ts}"):
            await self._ephemeral(origin, unsupported_text(ignored, SLACK))  # once, though two events came
        if ignored and not (text or files):
            return  # only files Parley cannot read: the thread is not marked, nothing is answered
        if origin.is_dm and not origin.in_thread:  # the DM's current conversation, or a fresh start
            if not files and asks_for_fresh_start(text):
                if await self.memory.claim(f"answer:{origin.channel}:{origin.ts}"):
                    await self.dms.fresh(origin.where, origin.ts)
                    await self._thread(origin).post(FRESH_TEXT)
                return
            origin = dataclasses.replace(origin, where=await self.dms.current(origin.where))
        elif not files and asks_for_summary(text) and await self.summaries.asked(origin, mentioned, self.memory):
            return
        answer = mentioned or origin.is_dm or (origin.in_thread and await self.memory.thread(origin.where.session_key)
                                                is not None)
        if answer and not await self.memory.claim(f"answer:{origin.channel}:{origin.ts}"):
            # The same message came as both app_mention and message, or went to another process too.
            log.info("message already taken in hand", extra={"channel": origin.channel, "ts": origin.ts})
            answer = False
        claimed = [(f, await self._claim_file(origin.channel, f["id"])) for f in files]
        if answer or any(owner for _, (owner, _) in claimed):
            await self._handle_message(origin, text, answer, claimed)
        elif not origin.is_dm and text:  # a channel set to `reply: all` answers without a mention
            await self._reply_all(origin, text)

    async def _reply_all(self, origin: Origin, text: str) -> None:
        try:
            settings = await self.engine.channel_settings(origin.where)
        except Exception:  # noqa: BLE001 - no settings, no unsolicited answer
            log.warning("channel settings unavailable", extra={"channel": origin.channel}, exc_info=True)
            return
        if settings.reply == "all" and await self.memory.claim(f"answer:{origin.channel}:{origin.ts}"):
            await self._handle_message(origin, text, True, [])

    async def _claim_file(self, channel: str, file_id: str) -> tuple[bool, asyncio.Future]:
        """(True, future) for the first delivery of a file share in a channel, else (False, the
        first one's future) so a question sent with the file waits for the file to be indexed."""
        key = f"file:{channel}:{file_id}"
        future = self._ingests.get(key)
        first_here = future is None
        if first_here:  # made before anything is awaited: a racing delivery finds it
            if len(self._ingests) > MAX_INGESTS:
                for k in [k for k, f in self._ingests.items() if f.done()]:
                    del self._ingests[k]
            future = self._ingests[key] = asyncio.get_running_loop().create_future()
        owner = await self.memory.claim(key)
        if first_here and not owner:
            future.set_result(None)  # taken in hand elsewhere (another process, or before a restart)
        return owner, future

    async def _handle_message(self, origin: Origin, text: str, answer: bool,
                              files: list[tuple[dict, tuple[bool, asyncio.Future]]]) -> None:
        async with self.locks.lock(origin.where.session_key):
            user = await self.users.get(origin.user_id)
            # A thread Parley joins midway is read first: what people said there is the question's context.
            # So is one of Parley's that was idle while Parley was down: the messages it missed join in.
            record = await self.memory.thread(origin.where.session_key) if answer and origin.in_thread else None
            joining = answer and origin.in_thread and (record is None or record.at < self.started_at)
            if origin.reply_thread_ts is not None and (answer or any(owner for _, (owner, _) in files)):
                await self.memory.mark(origin.where.session_key, origin.where.workspace, origin.channel)
            for file, (owner, done) in files:
                if owner:
                    try:
                        await self._ingest(file, origin, user)
                    finally:
                        if not done.done():
                            done.set_result(None)
                elif answer:
                    await asyncio.wait([done], timeout=600)
            if answer and (text or not files):
                await self._answer(origin, user, text, joining)

    # ---- answers and files -------------------------------------------------------------------

    def _thread(self, origin: Origin) -> SlackThread:
        return SlackThread(self.client, origin.channel, origin.reply_thread_ts)

    async def _answer(self, origin: Origin, user, text: str, joining: bool = False) -> None:
        earlier = ()
        if joining and origin.reply_thread_ts:
            earlier = await read_earlier(
                self.history.reader(origin.channel, origin.reply_thread_ts, origin.ts, self.bot_user_id),
                self.config.sessions.thread_context_messages, origin.where.session_key)
        # Native streaming or chat.update, the status line, a panel's documents, feedback: replies.py
        await self.replies.answer(origin, user, text, earlier, limit=MESSAGE_LIMIT, soft_limit=MESSAGE_SOFT_LIMIT)

    async def _ephemeral(self, origin: Origin, text: str) -> None:
        """Tell only the asker; where Slack refuses (e.g. not in the channel), say it in the thread."""
        try:
            await self.client.chat_postEphemeral(channel=origin.channel, user=origin.user_id, text=text,
                                                 thread_ts=origin.reply_thread_ts)
        except SlackApiError:
            await self._thread(origin).post(text)

    async def _ingest(self, file: dict, origin: Origin, user) -> None:
        shared = self.documents.watch(self.files.shared(file, self.client.files_info), file["id"], origin, user)
        await ingest_shared_file(self.engine, shared, origin.where, user,
                                 self._thread(origin), SLACK, self.config.slack.stream_interval_s,
                                 private=lambda note: self._ephemeral(origin, note))

    async def _on_file_shared(self, body: dict, event: dict, context) -> None:
        """A file shared somewhere Parley reads (if the app subscribes to file_shared; the message
        with subtype file_share usually comes too, and whichever is first does the work)."""
        team, enterprise = team_of(body, event)
        channel, file_id, user_id = event.get("channel_id", ""), event.get("file_id", ""), event.get("user_id", "")
        if not (channel and file_id and user_id) or user_id == context.bot_user_id or not self._allowed(team, enterprise):
            return
        self.tasks.spawn(self._file_shared(team, channel, file_id, user_id), name=f"slack-file-{file_id}")

    async def _file_shared(self, team: str, channel: str, file_id: str, user_id: str) -> None:
        owner, done = await self._claim_file(channel, file_id)
        if not owner:
            return
        try:
            file = (await self.client.files_info(file=file_id))["file"]
            if not slack_document(file):
                log.info("file not a document: ignored", extra={"file": file_id, "type": file.get("filetype")})
                return
            origin = share_origin(team, channel, file, file_id, user_id)
            async with self.locks.lock(origin.where.session_key):
                if origin.reply_thread_ts:
                    await self.memory.mark(origin.where.session_key, team, channel)
                await self._ingest(file, origin, await self.users.get(user_id))
        except SlackApiError as exc:
            log.warning("files.info failed", extra={"file": file_id, "error": exc.response.get("error")})
        finally:
            if not done.done():
                done.set_result(None)

    async def _on_error(self, error: Exception, body: dict) -> None:
        log.error("slack listener error", extra={"type": body.get("type") if isinstance(body, dict) else None},
                  exc_info=error)
