"""The Slack adapter: slack-bolt's AsyncApp in Socket Mode (default) or over the HTTP Events API.

Slack events become engine calls and engine events become Slack messages:
- an @mention starts a thread on that message (or continues the thread it was posted in); later
  messages in a thread Parley is part of continue it without a mention; DMs are one conversation
  per DM (a thread inside a DM is its own conversation);
- answers stream into a placeholder with chat.update, at most once per slack.stream_interval_s,
  converted to mrkdwn, split over several messages when long, with the sources they used;
- files shared where Parley reads are downloaded with the bot token and ingested for that channel;
- /llm-stats and /llm-model are acked at once and answered ephemerally.

Events are deduplicated by event id, message and file (Slack retries deliveries, and one message
can arrive as both app_mention and message): no event is ever answered twice. The tokens are
only ever sent to Slack's own hosts and never logged.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

import aiohttp
from aiohttp import web
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from adapters.mrkdwn import markdown_to_mrkdwn, mentions, slack_to_plain, sources_mrkdwn
from adapters.slack_commands import SlackCommands
from adapters.slack_files import FileFetcher
from adapters.slack_state import SlackState
from adapters.streaming import EditBudget, ProgressBoard, StreamingReply, ingested_text, shown_name
from engine.config import Config
from engine.errors import ErrorCode, ParleyError
from engine.types import (
    AnswerDone,
    AnswerFailed,
    ChatRequest,
    Conversation,
    FileUpload,
    Queued,
    TextDelta,
    User,
)

if TYPE_CHECKING:  # the engine object is handed in; importing it here would pull torch into the adapter
    from engine.core import Engine

log = logging.getLogger(__name__)

SLACK_API_URL = "https://slack.com/api/"
MESSAGE_LIMIT = 3900  # Slack accepts ~40k, but a reader scrolls: keep each message a screenful
MESSAGE_SOFT_LIMIT = 3000  # prefer to cut at a paragraph after this many characters
PEEK_S = 0.4  # how long to wait for the engine's first event before showing a placeholder
# chat.update is a Tier 3 method: about 50 calls a minute per workspace, with short bursts.
EDIT_RATE_PER_S = 50 / 60
EDIT_BURST = 10
USER_CACHE_S = 600.0
SHUTDOWN_GRACE_S = 10.0
THINKING = "_Thinking…_"
# Failures that come before any answer text and concern only the asker: shown to them alone.
EPHEMERAL_CODES = {ErrorCode.RATE_LIMITED, ErrorCode.QUEUE_FULL, ErrorCode.OVERLOADED, ErrorCode.MODEL_NOT_READY,
                   ErrorCode.SHUTTING_DOWN, ErrorCode.INVALID_REQUEST, ErrorCode.CONTEXT_TOO_LONG}
ANSWERED_SUBTYPES = {None, "file_share", "thread_broadcast"}  # the rest are edits, joins, bot posts…


def slack_configured(env: Mapping[str, str], config: Config) -> bool:
    """Whether the environment holds the credentials the configured mode needs."""
    if not env.get("SLACK_BOT_TOKEN"):
        return False
    needed = "SLACK_SIGNING_SECRET" if config.slack.mode == "http" else "SLACK_APP_TOKEN"
    if not env.get(needed):
        log.warning("SLACK_BOT_TOKEN is set but %s is missing: Slack stays off", needed,
                    extra={"mode": config.slack.mode})
        return False
    return True


async def run_slack(engine: Engine, config: Config, env: Mapping[str, str], stop: asyncio.Event) -> None:
    """Serve Slack until `stop` is set, then stop taking events and let answers in hand finish."""
    adapter = SlackAdapter(
        engine, config, bot_token=env["SLACK_BOT_TOKEN"], app_token=env.get("SLACK_APP_TOKEN", ""),
        signing_secret=env.get("SLACK_SIGNING_SECRET", ""), api_url=env.get("SLACK_API_URL") or SLACK_API_URL)
    await adapter.start()
    try:
        await stop.wait()
    finally:
        await adapter.close()


class SlackStartError(RuntimeError):
    """Slack refused to let the adapter start (a wrong or revoked token); the message says which."""


@dataclass(frozen=True)
class _Origin:
    """Where a message came from and where the reply goes."""

    where: Conversation
    channel: str
    reply_thread_ts: str | None  # None: reply at the top level (a DM)
    user_id: str
    ts: str


class _SlackThread:
    """A MessageTarget posting into one channel (and thread) with the bot token."""

    def __init__(self, client: AsyncWebClient, channel: str, thread_ts: str | None):
        self.client = client
        self.channel = channel
        self.thread_ts = thread_ts

    async def post(self, text: str) -> str:
        resp = await self.client.chat_postMessage(channel=self.channel, thread_ts=self.thread_ts, text=text,
                                                  unfurl_links=False, unfurl_media=False)
        return resp["ts"]

    async def edit(self, handle: str, text: str) -> None:
        await self.client.chat_update(channel=self.channel, ts=handle, text=text)

    async def delete(self, handle: str) -> None:
        await self.client.chat_delete(channel=self.channel, ts=handle)


class SlackAdapter(SlackCommands):
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
        self._bot_token = bot_token
        self._app_token = app_token
        self.client = AsyncWebClient(
            token=bot_token, base_url=self.api_url,
            retry_handlers=[AsyncConnectionErrorRetryHandler(max_retry_count=2),
                            AsyncRateLimitErrorRetryHandler(max_retry_count=3)])
        # Request verification stays on: Bolt checks X-Slack-Signature / X-Slack-Request-Timestamp
        # with the signing secret on every HTTP request (Socket Mode needs none: the socket is ours).
        self.app = AsyncApp(client=self.client, signing_secret=signing_secret, request_verification_enabled=True,
                            ignoring_self_events_enabled=True, process_before_response=False)
        self.state = SlackState(config.data_path / "slack_state.sqlite",
                                thread_ttl_s=config.sessions.idle_expiry_hours * 3600)
        self.bot_user_id = ""
        self._users: dict[str, tuple[float, User]] = {}
        self._thread_locks: dict[str, asyncio.Lock] = {}
        self._edit_budgets: dict[str, EditBudget] = {}  # per workspace, shared by concurrent answers
        self._ingests: dict[str, asyncio.Future] = {}
        self._tasks: set[asyncio.Task] = set()
        self._closing = False
        self.files = FileFetcher(bot_token, self.api_url, config.knowledge.max_file_mb)
        self._runner: web.AppRunner | None = None
        self._socket = None
        self.http_port = 0  # the bound port in HTTP mode, once started
        self._register()

    # ---- lifecycle ---------------------------------------------------------------------------

    def _register(self) -> None:
        self.app.middleware(self._dedupe)
        self.app.event("app_mention")(self._on_app_mention)
        self.app.event("message")(self._on_message)
        self.app.event("file_shared")(self._on_file_shared)
        self.app.command("/llm-stats")(self._on_stats_command)
        self.app.command("/llm-model")(self._on_model_command)
        self.app.command("/llm-config")(self._on_config_command)
        self.app.error(self._on_error)

    async def start(self, host: str = "0.0.0.0", port: int | None = None) -> None:
        """Check the tokens, open the state and start receiving events (Socket Mode or HTTP)."""
        await self._preflight()
        await self.state.open()
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
        self._closing = True
        if self._socket is not None:
            with contextlib.suppress(Exception):
                await self._socket.close_async()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        await self.state.close()
        await self.files.close()
        log.info("slack closed")

    async def idle(self) -> None:
        """Wait until every event taken in hand has been fully answered (tests, shutdown)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    def _spawn(self, coro, name: str) -> None:
        if self._closing:
            coro.close()
            return
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("slack task failed", extra={"task": task.get_name()}, exc_info=task.exception())

    # ---- who and where -----------------------------------------------------------------------

    def _allowed(self, team_id: str, enterprise_id: str = "") -> bool:
        allowed = self.config.slack.workspaces
        return not allowed or team_id in allowed or (bool(enterprise_id) and enterprise_id in allowed)

    @staticmethod
    def _team(body: dict, event: dict | None = None) -> tuple[str, str]:
        """The installing workspace (stable for one thread even in shared channels), and its org."""
        team = body.get("team_id") or (event or {}).get("team") or ""
        enterprise = body.get("enterprise_id") or ""
        if isinstance(body.get("enterprise"), dict):
            enterprise = enterprise or body["enterprise"].get("id", "")
        return team or enterprise, enterprise

    async def _user(self, user_id: str) -> User:
        """The Slack user, with workspace admin/owner as platform_admin (cached a few minutes)."""
        now = time.monotonic()
        cached = self._users.get(user_id)
        if cached and now - cached[0] < USER_CACHE_S:
            return cached[1]
        try:
            info = (await self.client.users_info(user=user_id))["user"]
            profile = info.get("profile") or {}
            user = User(id=user_id,
                        name=profile.get("display_name") or profile.get("real_name") or info.get("name", ""),
                        platform_admin=bool(info.get("is_admin") or info.get("is_owner")
                                            or info.get("is_primary_owner")))
        except (SlackApiError, aiohttp.ClientError, asyncio.TimeoutError, KeyError) as exc:
            log.warning("users.info failed; treating the user as a member", extra={
                "user": user_id, "error": getattr(getattr(exc, "response", None), "data", {}) or type(exc).__name__})
            return User(id=user_id)
        self._users[user_id] = (now, user)
        return user

    def _edit_budget(self, workspace: str) -> EditBudget:
        budget = self._edit_budgets.get(workspace)
        if budget is None:
            budget = self._edit_budgets[workspace] = EditBudget(EDIT_RATE_PER_S, EDIT_BURST)
        return budget

    def _thread_lock(self, key: str) -> asyncio.Lock:
        """One answer at a time per thread, so each sees the previous one in its history."""
        lock = self._thread_locks.get(key)
        if lock is None:
            if len(self._thread_locks) > 1000:  # forget idle locks now and then
                for k in [k for k, v in self._thread_locks.items() if not v.locked()]:
                    del self._thread_locks[k]
            lock = self._thread_locks[key] = asyncio.Lock()
        return lock

    # ---- events ------------------------------------------------------------------------------

    async def _dedupe(self, body: dict, request, next):  # noqa: A002 - Bolt injects `next` by name
        """Events already in hand (a retry, or a redelivery after a restart) are acked and dropped."""
        if body.get("type") == "event_callback" and body.get("event_id"):
            # In memory only: after a restart, the answer and file keys still stop a redelivery.
            if not self.state.first_time("event:" + body["event_id"], persist=False):
                retry = (request.headers.get("x-slack-retry-num") or [None])[0]
                log.info("duplicate event ignored", extra={"event_id": body["event_id"], "retry": retry})
                return BoltResponse(status=200, body="")
        return await next()

    async def _on_app_mention(self, body: dict, event: dict, context) -> None:
        if event.get("bot_id") or event.get("bot_profile"):
            return  # another bot mentioning us: bots do not talk to bots here
        self._take_message(body, event, context.bot_user_id or "", mentioned=True)

    async def _on_message(self, body: dict, event: dict, context) -> None:
        if event.get("subtype") not in ANSWERED_SUBTYPES or event.get("bot_id") or event.get("bot_profile"):
            return  # edits, deletions, joins, and every bot's messages (ours included)
        bot_user = context.bot_user_id or ""
        if not event.get("user") or event.get("user") == bot_user:
            return
        self._take_message(body, event, bot_user, mentioned=mentions(event.get("text", ""), bot_user))

    def _take_message(self, body: dict, event: dict, bot_user_id: str, mentioned: bool) -> None:
        """Decide synchronously (so duplicates cannot race) whether a message is for us."""
        if bot_user_id:
            self.bot_user_id = bot_user_id
        team, enterprise = self._team(body, event)
        if not self._allowed(team, enterprise):
            return
        channel, ts = event.get("channel", ""), event.get("ts", "")
        user_id = event.get("user", "")
        if not (channel and ts and user_id) or user_id == bot_user_id:
            return
        is_dm = event.get("channel_type") == "im" or (not event.get("channel_type") and channel.startswith("D"))
        thread_ts = event.get("thread_ts")
        if is_dm:
            # A DM is one conversation; a thread inside it is a conversation of its own.
            where = Conversation("slack", team, channel, thread_ts or "dm")
            origin = _Origin(where, channel, thread_ts, user_id, ts)
        else:
            where = Conversation("slack", team, channel, thread_ts or ts)
            origin = _Origin(where, channel, thread_ts or ts, user_id, ts)
        answer = mentioned or is_dm or (thread_ts is not None and self.state.is_parley_thread(where.session_key))
        files = [f for f in event.get("files") or [] if isinstance(f, dict) and f.get("id")]
        if answer and not self.state.first_time(f"answer:{channel}:{ts}"):
            answer = False  # the same message came as both app_mention and message
        claimed = [(f, self._claim_file(channel, f["id"])) for f in files]
        text = slack_to_plain(event.get("text", ""), bot_user_id)
        if not answer and not any(owner for _, (owner, _) in claimed):
            if not is_dm and text:  # a channel set to `reply: all` answers without a mention
                self._spawn(self._reply_all(origin, text), name=f"slack-all-{channel}-{ts}")
            return
        self._spawn(self._handle_message(origin, text, answer, claimed), name=f"slack-msg-{channel}-{ts}")

    async def _reply_all(self, origin: _Origin, text: str) -> None:
        try:
            settings = await self.engine.channel_settings(origin.where)
        except Exception:  # noqa: BLE001 - no settings, no unsolicited answer
            log.warning("channel settings unavailable", extra={"channel": origin.channel}, exc_info=True)
            return
        if getattr(settings, "reply", "mentions") == "all" and self.state.first_time(f"answer:{origin.channel}:{origin.ts}"):
            await self._handle_message(origin, text, True, [])

    def _claim_file(self, channel: str, file_id: str) -> tuple[bool, asyncio.Future]:
        """(True, future) for the first delivery of a file share in a channel, else (False, the
        first one's future) so a question sent with the file waits for the file to be indexed."""
        key = f"file:{channel}:{file_id}"
        owner = self.state.first_time(key)
        if owner or key not in self._ingests:
            if len(self._ingests) > 1000:
                for k in [k for k, f in self._ingests.items() if f.done()]:
                    del self._ingests[k]
            future = self._ingests[key] = asyncio.get_running_loop().create_future()
            if not owner:
                future.set_result(None)  # handled before a restart
        return owner, self._ingests[key]

    async def _handle_message(self, origin: _Origin, text: str, answer: bool,
                              files: list[tuple[dict, tuple[bool, asyncio.Future]]]) -> None:
        async with self._thread_lock(origin.where.session_key):
            user = await self._user(origin.user_id)
            if origin.reply_thread_ts is not None and (answer or any(owner for _, (owner, _) in files)):
                self.state.mark_thread(origin.where.session_key)
            for file, (owner, done) in files:
                if owner:
                    try:
                        await self._ingest_file(file, origin, user)
                    finally:
                        if not done.done():
                            done.set_result(None)
                elif answer:
                    await asyncio.wait([done], timeout=600)
            if answer:
                if text or not files:
                    await self._answer(origin, user, text)

    # ---- answers -----------------------------------------------------------------------------

    async def _answer(self, origin: _Origin, user: User, text: str) -> None:
        request = ChatRequest(where=origin.where, user=user, text=text, message_id=origin.ts)
        reply = StreamingReply(_SlackThread(self.client, origin.channel, origin.reply_thread_ts),
                               interval_s=self.config.slack.stream_interval_s, limit=MESSAGE_LIMIT,
                               soft_limit=MESSAGE_SOFT_LIMIT, render=markdown_to_mrkdwn,
                               budget=self._edit_budget(origin.where.workspace))
        events = self.engine.answer(request)
        first = asyncio.ensure_future(events.__anext__())
        log.info("answering", extra={"session": origin.where.session_key, "user": user.id, "ts": origin.ts})
        try:
            done, _ = await asyncio.wait({first}, timeout=PEEK_S)
            if not done:
                await reply.open(THINKING)
            event = await first
            while not await self._show(event, reply, origin):
                event = await events.__anext__()
        except StopAsyncIteration:
            log.error("the answer stream ended without a result", extra={"session": origin.where.session_key})
        except asyncio.CancelledError:
            if reply.opened:  # shutting down mid-answer: say so rather than leave a frozen message
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(reply.replace(
                        f":warning: {ParleyError(ErrorCode.SHUTTING_DOWN).render()}"), 3)
            raise
        except Exception as exc:  # noqa: BLE001 - a Slack failure must not go unexplained
            error = ParleyError(ErrorCode.INTERNAL)
            log.error("slack reply failed", extra={"ref": error.reference, "session": origin.where.session_key},
                      exc_info=exc)
            with contextlib.suppress(Exception):
                await reply.replace(f":warning: {error.render()}")
        finally:
            if not first.done():
                first.cancel()
                with contextlib.suppress(BaseException):
                    await first
            await events.aclose()

    async def _show(self, event, reply: StreamingReply, origin: _Origin) -> bool:
        """Show one engine event; True when the answer is over."""
        if isinstance(event, TextDelta):
            await reply.append(event.text)
        elif isinstance(event, Queued):
            await reply.status(f"_Queued, {event.ahead} ahead…_" if event.ahead else "_Queued, next in line…_")
        elif isinstance(event, AnswerDone):
            await reply.finish(self._final_text(event))
            log.info("answered", extra={"session": origin.where.session_key, "tokens": event.completion_tokens,
                                        "messages": len(reply.handles), "edits": reply.edits})
            return True
        elif isinstance(event, AnswerFailed):
            if getattr(event, "silent", False):  # a repeat refusal in a cool-down: no reply spam
                await reply.discard()
            elif event.code in EPHEMERAL_CODES and not reply.raw:
                await reply.discard()
                await self._ephemeral(origin, f":warning: {event.render()}")
            else:
                await reply.replace(f":warning: {event.render()}")
            return True
        return False

    @staticmethod
    def _final_text(done: AnswerDone) -> str:
        text = markdown_to_mrkdwn(done.text.strip()) if done.text.strip() else "_(no answer)_"
        if done.finish_reason == "length":
            text += "\n_(cut at the length limit)_"
        elif done.finish_reason == "cancelled":
            text += "\n_(answer cancelled)_"
        if done.sources:
            text += "\n\n" + sources_mrkdwn(done.sources)
        return text

    async def _ephemeral(self, origin: _Origin, text: str) -> None:
        """Tell only the asker; where Slack refuses (e.g. not in the channel), say it in the thread."""
        try:
            await self.client.chat_postEphemeral(channel=origin.channel, user=origin.user_id, text=text,
                                                 thread_ts=origin.reply_thread_ts)
        except SlackApiError:
            await _SlackThread(self.client, origin.channel, origin.reply_thread_ts).post(text)

    # ---- files -------------------------------------------------------------------------------

    async def _on_file_shared(self, body: dict, event: dict, context) -> None:
        """A file shared somewhere Parley reads (if the app subscribes to file_shared; the message
        with subtype file_share usually comes too, and whichever is first does the work)."""
        team, enterprise = self._team(body, event)
        channel, file_id, user_id = event.get("channel_id", ""), event.get("file_id", ""), event.get("user_id", "")
        if not (channel and file_id and user_id) or user_id == context.bot_user_id or not self._allowed(team, enterprise):
            return
        owner, done = self._claim_file(channel, file_id)
        if owner:
            self._spawn(self._file_shared(team, channel, file_id, user_id, done), name=f"slack-file-{file_id}")

    async def _file_shared(self, team: str, channel: str, file_id: str, user_id: str, done: asyncio.Future) -> None:
        try:
            file = (await self.client.files_info(file=file_id))["file"]
            shares = (file.get("shares") or {})
            share = next(iter((shares.get("public") or {}).get(channel) or (shares.get("private") or {}).get(channel)
                              or [{}]))
            ts = share.get("ts") or ""
            thread_ts = share.get("thread_ts") or ts or None
            if channel.startswith("D"):
                where = Conversation("slack", team, channel, share.get("thread_ts") or "dm")
                origin = _Origin(where, channel, share.get("thread_ts"), user_id, ts)
            else:
                where = Conversation("slack", team, channel, thread_ts or file_id)
                origin = _Origin(where, channel, thread_ts, user_id, ts)
            async with self._thread_lock(where.session_key):
                if origin.reply_thread_ts:
                    self.state.mark_thread(where.session_key)
                await self._ingest_file(file, origin, await self._user(user_id))
        except SlackApiError as exc:
            log.warning("files.info failed", extra={"file": file_id, "error": exc.response.get("error")})
        finally:
            if not done.done():
                done.set_result(None)

    async def _ingest_file(self, file: dict, origin: _Origin, user: User) -> None:
        """Download a shared file and index it for the channel, telling the thread how it went."""
        target = _SlackThread(self.client, origin.channel, origin.reply_thread_ts)
        name = file.get("name") or file.get("title") or file.get("id", "file")
        shown = shown_name(name)
        handle: str | None = None
        ticker: asyncio.Task | None = None
        try:
            self.files.check(file, name)
            handle = await target.post(f"_Reading {shown}…_")
            if not (file.get("url_private_download") or file.get("url_private")):
                file = (await self.client.files_info(file=file["id"]))["file"]
            data = await self.files.download(file, name)
            board = ProgressBoard(target, handle, shown, self.config.slack.stream_interval_s)
            ticker = asyncio.create_task(board.tick())
            upload = FileUpload(where=origin.where, user=user, filename=name, data=data,
                                mime_type=file.get("mimetype", ""))
            result = await self.engine.ingest(upload, board)
            ticker.cancel()
            await target.edit(handle, ingested_text(result, shown))
        except ParleyError as exc:
            log.info("file not indexed", extra={"file": name, "code": exc.code.value, "ref": exc.reference})
            silent = getattr(exc, "silent", False)
            if silent or exc.code is ErrorCode.RATE_LIMITED:  # the sharer's business alone
                if handle:
                    await target.delete(handle)
                if not silent:
                    await self._ephemeral(origin, f":warning: I didn't index {shown}: {exc.render()}")
            else:
                text = f":warning: I couldn't index {shown}: {exc.render()}"
                await (target.edit(handle, text) if handle else target.post(text))
        except Exception as exc:  # noqa: BLE001
            error = ParleyError(ErrorCode.INTERNAL)
            log.error("file ingest failed", extra={"file": name, "ref": error.reference}, exc_info=exc)
            with contextlib.suppress(Exception):
                text = f":warning: I couldn't index {shown}: {error.render()}"
                await (target.edit(handle, text) if handle else target.post(text))
        finally:
            if ticker:
                ticker.cancel()

    async def _on_error(self, error: Exception, body: dict) -> None:
        log.error("slack listener error", extra={"type": body.get("type") if isinstance(body, dict) else None},
                  exc_info=error)

