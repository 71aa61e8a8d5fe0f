"""The Discord adapter: a discord.py Client on the gateway, answering through the REST API.

Discord events become engine calls and engine events become Discord messages:
- a mention in a channel opens a thread on that message (named from the question) and answers
  there; later messages in a thread Parley opened continue it without a mention; a mention in
  any other thread is answered in it; a DM channel is one conversation;
- answers stream into a placeholder by editing it at most once per discord.stream_interval_s
  (discord.py waits out 429s), continue in further messages past 2000 characters, and end
  with the sources they used;
- document attachments on a message Parley answers (a mention, its thread, a DM) are
  downloaded with discord.py and ingested for the channel (a thread's for its parent channel);
- /llm-stats, /llm-model and /llm-config are application commands (adapters.discord_commands).

Messages from bots and webhooks are never answered. The token goes only to the configured API
host (Discord's, or DISCORD_API_URL) and is never logged or shown.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

import discord
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.http import Route

from adapters.discord_commands import ParleyCommands
from adapters.discord_state import DiscordThreads
from adapters.discord_text import final_text, question_text, thread_name
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

DISCORD_API_URL = "https://discord.com/api/v10"
API_VERSION = "v10"
MESSAGE_LIMIT = 2000  # Discord refuses longer message content
MESSAGE_SOFT_LIMIT = 1500  # prefer to cut at a paragraph after this many characters
PEEK_S = 0.4  # how long to wait for the engine's first event before showing a placeholder
# Discord allows 50 requests a second per bot over all routes (and ~5 edits / 5 s per channel,
# which one edit a second per thread stays under): answers streaming at once share this budget.
EDIT_RATE_PER_S = 25.0
EDIT_BURST = 25
SHUTDOWN_GRACE_S = 10.0
DM_CHECK_CACHE_S = 600.0
REPLY_MODE_CACHE_S = 10.0  # a channel's reply mode is re-read at most this often (every message asks)
THINKING = "*Thinking…*"
WARN = "⚠️"
# What the engine can read (engine/knowledge/loaders.py, which sniffs the bytes too); anything
# else attached (images, archives…) is not downloaded, and gets a note.
DOCUMENT_SUFFIXES = (".pdf", ".docx", ".txt", ".text", ".log", ".rst", ".md", ".markdown", ".html", ".htm",
                     ".xhtml", ".csv", ".eml")
DOCUMENT_KINDS = "PDF, DOCX, TXT, Markdown, HTML, CSV or EML"
ANSWERED_TYPES = (discord.MessageType.default, discord.MessageType.reply)

# Exactly what Parley does: read channels, post, open public threads on messages and post in
# them, read a message it replies to. No embeds, files, reactions or moderation.
PERMISSIONS = discord.Permissions(view_channel=True, send_messages=True, send_messages_in_threads=True,
                                  create_public_threads=True, read_message_history=True)
SCOPES = ("bot", "applications.commands")


def parley_intents() -> discord.Intents:
    """Guilds (channels, threads, roles), guild and DM messages, and their content (privileged)."""
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.dm_messages = True
    intents.message_content = True
    return intents


def is_document(attachment: discord.Attachment) -> bool:
    """Worth downloading: a document by its name, or text by the type Discord detected."""
    suffix = PurePath(attachment.filename).suffix.lower()
    kind = (attachment.content_type or "").split(";")[0].strip().lower()
    return suffix in DOCUMENT_SUFFIXES or (not suffix and (kind.startswith("text/") or kind == "message/rfc822"))


def invite_url(application_id: int) -> str:
    return discord.utils.oauth_url(application_id, permissions=PERMISSIONS, scopes=SCOPES)


def discord_configured(env: Mapping[str, str], config: Config) -> bool:
    """Whether the environment holds a bot token."""
    return bool((env.get("DISCORD_TOKEN") or "").strip())


def api_base(url: str | None) -> str:
    """DISCORD_API_URL as discord.py's Route.BASE wants it: ending in the API version."""
    url = (url or DISCORD_API_URL).rstrip("/")
    last = url.rsplit("/", 1)[-1]
    return url if last.startswith("v") and last[1:].isdigit() else f"{url}/{API_VERSION}"


async def run_discord(engine: Engine, config: Config, env: Mapping[str, str], stop: asyncio.Event) -> None:
    """Serve Discord until `stop` is set, then stop taking messages and let answers in hand finish."""
    adapter = DiscordAdapter(engine, config, api_url=env.get("DISCORD_API_URL") or DISCORD_API_URL)
    runner = asyncio.create_task(adapter.start(env["DISCORD_TOKEN"].strip()), name="discord-gateway")
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({runner, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        await adapter.shutdown()
        if not runner.done():
            runner.cancel()
        try:
            await runner  # the gateway loop ends by itself only on a fatal error: raise it
        except asyncio.CancelledError:
            pass
        except (discord.LoginFailure, discord.PrivilegedIntentsRequired) as exc:
            log.error(_explain(exc))
            raise


def _explain(exc: BaseException) -> str:
    """A line an operator can act on, for the failures that need their action."""
    if isinstance(exc, discord.PrivilegedIntentsRequired):
        return ("Discord refused the Message Content intent: turn on Bot → Privileged Gateway Intents → "
                "Message Content Intent in the developer portal, then restart.")
    return "Discord refused DISCORD_TOKEN: copy the bot token again from the developer portal (Bot → Reset Token)."


@dataclass(frozen=True)
class _Origin:
    """Where a message was said (the engine's view) and where the replies go."""

    where: Conversation
    target: _Target
    message_id: str


class _Target:
    """A MessageTarget for StreamingReply: posts into one channel, thread or DM."""

    def __init__(self, channel: discord.abc.Messageable, reference: discord.Message | None = None):
        self.channel = channel
        self.reference = reference  # reply to this message with the first post (no thread to answer in)

    async def post(self, text: str) -> discord.Message:
        reference, self.reference = self.reference, None
        return await self.channel.send(text, reference=reference, mention_author=False, suppress_embeds=True)

    async def edit(self, handle: discord.Message, text: str) -> None:
        await handle.edit(content=text)

    async def delete(self, handle: discord.Message) -> None:
        await handle.delete()


class DiscordAdapter(discord.Client):
    """Parley's Discord bot. `start(token)` logs in and runs the gateway; `shutdown()` ends it."""

    def __init__(self, engine: Engine, config: Config, *, api_url: str = DISCORD_API_URL, **options: Any):
        # Parley never joins voice: discord.py's warnings about voice libraries are noise here.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        options.setdefault("chunk_guilds_at_startup", False)
        options.setdefault("max_messages", 200)  # discord.py's message cache; we look messages up rarely
        super().__init__(intents=parley_intents(), allowed_mentions=discord.AllowedMentions.none(), **options)
        self.engine = engine
        self.config = config
        self.api_url = api_base(api_url)
        self.custom_api = self.api_url != DISCORD_API_URL
        self.guilds_allowed = {str(g) for g in config.discord.guilds}
        self.admin_roles = {str(r) for r in config.discord.admin_roles}
        self.tree = app_commands.CommandTree(self)
        self.commands = ParleyCommands(self)
        self.commands.install(self.tree)
        self.threads = DiscordThreads(config.data_path / "discord_state.sqlite",
                                      ttl_s=config.sessions.idle_expiry_hours * 3600)
        self.invite_url = ""
        self._locks: dict[str, asyncio.Lock] = {}
        self._edit_budget = EditBudget(EDIT_RATE_PER_S, EDIT_BURST)
        self._dm_checks: dict[int, tuple[float, bool]] = {}
        self._reply_modes: dict[str, tuple[float, str]] = {}  # channel -> (checked at, "mentions" | "all")
        self._tasks: set[asyncio.Task] = set()
        self._closing = False
        self._saved_hooks: tuple[str, yarl.URL] | None = None

    # ---- lifecycle ---------------------------------------------------------------------------

    async def login(self, token: str) -> None:
        self._point_at_api()
        await super().login(token)

    def _point_at_api(self) -> None:
        """discord.py builds every REST URL (webhooks and interactions too) from Route.BASE."""
        if self._saved_hooks is None:
            self._saved_hooks = (Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY)
        Route.BASE = self.api_url

    async def setup_hook(self) -> None:
        """After login, before the gateway: state, the gateway address, commands, the invite URL."""
        await self.threads.open()
        if self.custom_api:
            # Another API host (a proxy, a test double) says where its gateway is, as Discord does.
            _, url, _ = await self.http.get_bot_gateway()
            DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
        try:
            synced = await self.tree.sync()
            log.info("discord commands synced", extra={"commands": [c.name for c in synced]})
        except discord.HTTPException as exc:
            log.warning("could not sync the slash commands; they may be missing or stale",
                        extra={"status": exc.status, "error": exc.text[:200]})
        self.invite_url = invite_url(self.application_id)
        print(f"Invite Parley to a Discord server: {self.invite_url}", flush=True)
        log.info("discord logged in", extra={"bot": str(self.user), "application": self.application_id,
                                              "invite_url": self.invite_url})

    async def on_ready(self) -> None:
        names = {str(g.id): g.name for g in self.guilds}
        served = [gid for gid in names if self.guild_allowed(gid)]
        log.info("discord connected", extra={"guilds": len(names), "served": len(served)})
        for gid, name in names.items():
            if gid not in served:
                log.info("discord guild not in discord.guilds: ignored", extra={"guild": gid, "guild_name": name})

    async def shutdown(self, grace_s: float = SHUTDOWN_GRACE_S) -> None:
        """Stop taking messages, give answers in hand `grace_s` to finish, then disconnect."""
        self._closing = True
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        if not self.is_closed():
            await self.close()
        await self.threads.close()
        if self._saved_hooks is not None:
            Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = self._saved_hooks
            self._saved_hooks = None
        log.info("discord closed")

    async def idle(self) -> None:
        """Wait until every message taken in hand has been fully handled (tests, shutdown)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    def spawn(self, coro, name: str) -> None:
        if self._closing:
            coro.close()
            return
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("discord task failed", extra={"task": task.get_name()}, exc_info=task.exception())

    async def on_error(self, event_method: str, /, *args: Any, **kwargs: Any) -> None:
        log.exception("discord event handler failed", extra={"event": event_method})

    # ---- who and where -----------------------------------------------------------------------

    def guild_allowed(self, guild_id: int | str | None) -> bool:
        return guild_id is not None and (not self.guilds_allowed or str(guild_id) in self.guilds_allowed)

    async def dm_allowed(self, user_id: int) -> bool:
        """With a guild allowlist, DMs are for members of a listed guild (checked over REST: the
        members intent is not needed to look one member up), cached for a while."""
        if not self.guilds_allowed:
            return True
        now = time.monotonic()
        cached = self._dm_checks.get(user_id)
        if cached and now - cached[0] < DM_CHECK_CACHE_S:
            return cached[1]
        allowed = False
        for gid in self.guilds_allowed:
            guild = self.get_guild(int(gid)) if gid.isdigit() else None
            if guild is None:
                continue
            try:
                await guild.fetch_member(user_id)
                allowed = True
                break
            except discord.NotFound:
                continue
            except discord.HTTPException as exc:
                log.warning("member lookup failed", extra={"guild": gid, "status": exc.status})
        self._dm_checks[user_id] = (now, allowed)
        return allowed

    def user_of(self, author: discord.abc.User, permissions: discord.Permissions | None = None) -> User:
        """The engine's User: Manage Server (or an admin role from config) makes a platform admin."""
        if isinstance(author, discord.Member):
            roles = tuple(str(r.id) for r in author.roles if not r.is_default())
            manage = author.guild_permissions.manage_guild or bool(permissions and permissions.manage_guild)
            return User(id=str(author.id), name=author.display_name, roles=roles,
                        platform_admin=manage or bool(self.admin_roles.intersection(roles)))
        return User(id=str(author.id), name=getattr(author, "display_name", "") or author.name)

    def _lock(self, key: str) -> asyncio.Lock:
        """One answer at a time per conversation, so each sees the previous one in its history."""
        lock = self._locks.get(key)
        if lock is None:
            if len(self._locks) > 1000:
                for k in [k for k, v in self._locks.items() if not v.locked()]:
                    del self._locks[k]
            lock = self._locks[key] = asyncio.Lock()
        return lock

    def _mentioned(self, message: discord.Message) -> bool:
        """An explicit mention of Parley (or of its own role, which Discord's picker offers too);
        @everyone and @here are not a mention of Parley."""
        if self.user is not None and any(u.id == self.user.id for u in message.mentions):
            return True
        role = message.guild.self_role if message.guild else None
        return role is not None and any(r.id == role.id for r in message.role_mentions)

    def _question(self, message: discord.Message) -> str:
        guild = message.guild
        role = guild.self_role if guild else None
        return question_text(
            message.content, self.user.id if self.user else None, bot_role_id=role.id if role else None,
            users={u.id: getattr(u, "display_name", u.name) for u in message.mentions},
            roles={r.id: r.name for r in message.role_mentions},
            channels={c.id: c.name for c in (guild.channels if guild else [])})

    # ---- messages ----------------------------------------------------------------------------

    async def on_message(self, message: discord.Message) -> None:
        """Decide without awaiting anything whether a message is for Parley, then hand it off."""
        if self._closing or self.user is None:
            return
        if message.author.bot or message.webhook_id is not None or message.author.id == self.user.id:
            return  # bots (Parley included) and webhooks are never answered
        if message.type not in ANSWERED_TYPES:
            return  # joins, pins, thread notices, slash-command echoes…
        channel = message.channel
        if message.guild is None:
            if isinstance(channel, discord.DMChannel) or getattr(channel, "type", None) == discord.ChannelType.private:
                self.spawn(self._on_dm(message), name=f"discord-dm-{message.id}")
            return
        if not self.guild_allowed(message.guild.id):
            return
        mentioned = self._mentioned(message)
        if isinstance(channel, discord.Thread):
            ours = self.threads.get(channel.id) is not None or channel.owner_id == self.user.id
            if ours or mentioned:
                self.spawn(self._in_thread(message, channel.id, channel.parent_id, ours),
                           name=f"discord-msg-{message.id}")
        elif isinstance(channel, discord.PartialMessageable):
            # Not in the cache: a thread of ours from before a restart, or somewhere we were mentioned.
            record = self.threads.get(channel.id)
            if record is not None:
                self.spawn(self._in_thread(message, channel.id, int(record.parent), True),
                           name=f"discord-msg-{message.id}")
            elif mentioned:
                self.spawn(self._uncached(message), name=f"discord-msg-{message.id}")
        elif mentioned:
            self.spawn(self._in_channel(message), name=f"discord-msg-{message.id}")
        else:
            self.spawn(self._reply_all(message), name=f"discord-all-{message.id}")

    async def _uncached(self, message: discord.Message) -> None:
        channel = await self.fetch_channel(message.channel.id)
        if isinstance(channel, discord.Thread):
            await self._in_thread(message, channel.id, channel.parent_id, channel.owner_id == self.user.id)
        else:
            await self._in_channel(message)

    async def _reply_all(self, message: discord.Message) -> None:
        """A channel an admin set to `reply all` (/llm-config) answers every message."""
        where = Conversation("discord", str(message.guild.id), str(message.channel.id), "")
        now = time.monotonic()
        cached = self._reply_modes.get(where.channel)
        if cached and now - cached[0] < REPLY_MODE_CACHE_S:
            mode = cached[1]
        else:
            try:
                mode = getattr(await self.engine.channel_settings(where), "reply", "mentions")
            except Exception:
                log.warning("channel settings unavailable", extra={"channel": where.channel}, exc_info=True)
                return
            if len(self._reply_modes) > 5000:
                self._reply_modes.clear()
            self._reply_modes[where.channel] = (now, mode)
        if mode == "all":
            await self._in_channel(message)

    async def _on_dm(self, message: discord.Message) -> None:
        if not await self.dm_allowed(message.author.id):
            log.info("dm from a user outside discord.guilds ignored", extra={"user": str(message.author.id)})
            return
        cid = str(message.channel.id)
        origin = _Origin(Conversation("discord", "dm", cid, cid), _Target(message.channel), str(message.id))
        await self._handle(message, origin)

    async def _in_thread(self, message: discord.Message, thread_id: int, parent_id: int | None, ours: bool) -> None:
        guild = str(message.guild.id)
        parent = str(parent_id or thread_id)
        if ours:
            self.threads.mark(thread_id, guild, parent)  # keep it alive while people talk in it
        origin = _Origin(Conversation("discord", guild, parent, str(thread_id)), _Target(message.channel),
                         str(message.id))
        await self._handle(message, origin)

    async def _in_channel(self, message: discord.Message) -> None:
        """A mention in a channel: open a thread on the message and answer there."""
        question = self._question(message)
        files = [a.filename for a in message.attachments]
        if not question and not files:
            if self._mentioned(message):  # a bare mention: say how to ask (a reply-all channel stays quiet)
                await message.reply("Ask me something after the mention, e.g. `@Parley what can you do?`",
                                    mention_author=False)
            return
        guild, channel = str(message.guild.id), str(message.channel.id)
        try:
            thread = await message.create_thread(name=thread_name(question or files[0]), auto_archive_duration=1440)
        except discord.HTTPException as exc:
            # No thread here (no permission, or a channel without threads): reply under the message.
            log.warning("could not open a thread; replying in the channel",
                        extra={"channel": channel, "status": exc.status, "error": exc.text[:200]})
            origin = _Origin(Conversation("discord", guild, channel, str(message.id)),
                             _Target(message.channel, reference=message), str(message.id))
        else:
            self.threads.mark(thread.id, guild, channel)
            origin = _Origin(Conversation("discord", guild, channel, str(thread.id)), _Target(thread),
                             str(message.id))
        await self._handle(message, origin, question)

    async def _handle(self, message: discord.Message, origin: _Origin, question: str | None = None) -> None:
        question = self._question(message) if question is None else question
        async with self._lock(origin.where.session_key):
            user = self.user_of(message.author)
            documents = [a for a in message.attachments if is_document(a)]
            skipped = [a for a in message.attachments if a not in documents]
            for attachment in documents:
                await self._ingest(attachment, origin, user)
            if skipped:
                names = ", ".join(shown_name(a.filename) for a in skipped[:5]) + (" …" if len(skipped) > 5 else "")
                await origin.target.post(f"{WARN} I can't read {names}: I index {DOCUMENT_KINDS} files "
                                         f"({ErrorCode.UNSUPPORTED_FILE.value}).")
            if question:
                await self._answer(origin, user, question)
            elif not message.attachments and self._mentioned(message):
                await origin.target.post("Ask me something after the mention, e.g. `@Parley what can you do?`")

    # ---- answers -----------------------------------------------------------------------------

    async def _answer(self, origin: _Origin, user: User, text: str) -> None:
        request = ChatRequest(where=origin.where, user=user, text=text, message_id=origin.message_id)
        reply = StreamingReply(origin.target, interval_s=self.config.discord.stream_interval_s,
                               limit=MESSAGE_LIMIT, soft_limit=MESSAGE_SOFT_LIMIT, budget=self._edit_budget)
        events = self.engine.answer(request)
        first = asyncio.ensure_future(events.__anext__())
        log.info("answering", extra={"session": origin.where.session_key, "user": user.id,
                                     "message_id": origin.message_id})
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
                    await asyncio.wait_for(reply.replace(f"{WARN} {ParleyError(ErrorCode.SHUTTING_DOWN).render()}"), 3)
            raise
        except Exception as exc:
            error = ParleyError(ErrorCode.INTERNAL)
            log.error("discord reply failed", extra={"ref": error.reference, "session": origin.where.session_key},
                      exc_info=exc)
            with contextlib.suppress(Exception):
                await reply.replace(f"{WARN} {error.render()}")
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
            await reply.status(f"*Queued, {event.ahead} ahead…*" if event.ahead else "*Queued, next in line…*")
        elif isinstance(event, AnswerDone):
            await reply.finish(final_text(event))
            log.info("answered", extra={"session": origin.where.session_key, "tokens": event.completion_tokens,
                                        "messages": len(reply.handles), "edits": reply.edits})
            return True
        elif isinstance(event, AnswerFailed):
            if getattr(event, "silent", False):  # a repeat refusal in a cool-down: no reply spam
                await reply.discard()
            else:
                await reply.replace(f"{WARN} {event.render()}")
            return True
        return False

    # ---- documents ---------------------------------------------------------------------------

    async def _ingest(self, attachment: discord.Attachment, origin: _Origin, user: User) -> None:
        """Download an attachment and index it for the channel, telling the thread how it went."""
        target = origin.target
        name = attachment.filename
        shown = shown_name(name)
        handle: discord.Message | None = None
        ticker: asyncio.Task | None = None
        try:
            limit_mb = self.config.knowledge.max_file_mb
            if attachment.size > limit_mb * 2**20:
                raise ParleyError(ErrorCode.FILE_TOO_LARGE,
                                  f"{name} is {attachment.size / 2**20:.1f} MB; the limit is {limit_mb:g} MB.")
            handle = await target.post(f"*Reading {shown}…*")
            try:
                data = await attachment.read()  # from Discord's CDN, without the token
            except discord.HTTPException as exc:
                raise ParleyError(ErrorCode.FILE_UNREADABLE,
                                  f"The download of {name} from Discord failed (HTTP {exc.status}).") from exc
            board = ProgressBoard(target, handle, shown, self.config.discord.stream_interval_s)
            ticker = asyncio.create_task(board.tick())
            upload = FileUpload(where=origin.where, user=user, filename=name, data=data,
                                mime_type=(attachment.content_type or "").split(";")[0])
            result = await self.engine.ingest(upload, board)
            ticker.cancel()
            await target.edit(handle, ingested_text(result, shown))
        except ParleyError as exc:
            log.info("file not indexed", extra={"file": name, "code": exc.code.value, "ref": exc.reference})
            if getattr(exc, "silent", False):
                if handle is not None:
                    await target.delete(handle)
                return
            text = f"{WARN} I couldn't index {shown}: {exc.render()}"
            await (target.edit(handle, text) if handle is not None else target.post(text))
        except Exception as exc:
            error = ParleyError(ErrorCode.INTERNAL)
            log.error("file ingest failed", extra={"file": name, "ref": error.reference}, exc_info=exc)
            with contextlib.suppress(Exception):
                text = f"{WARN} I couldn't index {shown}: {error.render()}"
                await (target.edit(handle, text) if handle is not None else target.post(text))
        finally:
            if ticker is not None:
                ticker.cancel()
