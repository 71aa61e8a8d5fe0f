"""The Discord adapter: a discord.py Client on the gateway, answering through the REST API.

Discord events become chat-layer calls (adapters.chat), and the chat layer's messages go back
through discord.py:
- a mention in a channel opens a thread on that message (named from the question) and answers
  there; later messages in a thread Parley opened continue it without a mention; a mention in
  any other thread is answered in it, with the thread's earlier messages read first as context;
  a mention in a reply reads the chain of messages it answers first; a DM channel is one
  conversation until "new" / "reset" alone (or /llm-new) starts a fresh one;
- answers stream into a placeholder, edited at most once per discord.stream_interval_s
  (discord.py waits out 429s), continuing in further messages past 2000 characters;
- document attachments on a message Parley answers are ingested for the channel (a thread's
  for its parent channel); other attachments are not downloaded, and get a note only when
  Parley was mentioned or in a DM; deleting the message forgets its documents;
- "@Parley summarize", the "Summarize" message menu and /llm-summarize summarise a thread or a
  channel (adapters.discord.summaries);
- /llm-stats, /llm-model, /llm-config, /llm-docs and /llm-new are application commands
  (adapters.discord.commands).

Messages from bots and webhooks are never answered. The token goes only to the configured API
host (Discord's, or DISCORD_API_URL) and is never logged or shown.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.http import Route

from adapters.chat.answering import stream_answer
from adapters.chat.feedback import FeedbackTag
from adapters.discord.feedback import DYNAMIC_ITEMS as FEEDBACK_ITEMS, feedback_view
from adapters.chat.context import read_earlier
from adapters.chat.ingest import SharedFile, ingest_shared_file, is_document, unsupported_text
from adapters.chat.memory import open_thread_memory
from adapters.chat.streaming import EditBudget, StreamingReply
from adapters.chat.tasks import KeyedLocks, TaskSet
from adapters.discord.access import DISCORD_API_URL, DmAccess, api_base, invite_url, parley_intents
from adapters.chat.conversations import FRESH_TEXT, DmConversations, asks_for_fresh_start
from adapters.chat.records import open_records
from adapters.chat.summaries import asks_for_summary
from adapters.discord.commands import register_commands, register_fresh_start
from adapters.discord.documents import DiscordDocuments
from adapters.discord.history import reply_chain_reader, thread_reader
from adapters.discord.summaries import DiscordSummaries
from adapters.discord.text import DISCORD, question_text, thread_name
from engine.config import Config
from engine.errors import ErrorCode, ParleyError
from engine.types import ChatRequest, Conversation, ThreadMessage, User

if TYPE_CHECKING:  # the engine object is handed in; importing it here would pull the model code in
    from engine.core import Engine

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 2000  # Discord refuses longer message content
MESSAGE_SOFT_LIMIT = 1500  # prefer to cut at a paragraph after this many characters
# Discord allows 50 requests a second per bot over all routes (and ~5 edits / 5 s per channel,
# which one edit a second per thread stays under): answers streaming at once share this budget.
EDIT_RATE_PER_S = 25.0
EDIT_BURST = 25
SHUTDOWN_GRACE_S = 10.0
REPLY_MODE_CACHE_S = 10.0  # a channel's reply mode is re-read at most this often (every message asks)
ANSWERED_TYPES = (discord.MessageType.default, discord.MessageType.reply)
ASK_SOMETHING = "Ask me something after the mention, e.g. `@Parley what can you do?`"


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

    async def post(self, text: str, feedback: FeedbackTag | None = None) -> discord.Message:
        reference, self.reference = self.reference, None
        extra = {"view": feedback_view(feedback)} if feedback is not None else {}  # 👍 / 👎 on the last part
        return await self.channel.send(text, reference=reference, mention_author=False, suppress_embeds=True, **extra)

    async def edit(self, handle: discord.Message, text: str, feedback: FeedbackTag | None = None) -> None:
        await handle.edit(content=text, **({"view": feedback_view(feedback)} if feedback is not None else {}))

    async def delete(self, handle: discord.Message) -> None:
        await handle.delete()


class DiscordAdapter(discord.Client):
    """Parley's Discord bot. `start(token)` logs in and runs the gateway; `close()` ends it."""

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
        register_commands(self.tree, engine, self._command_scope,
                          lambda interaction: self.user_of(interaction.user, interaction.permissions))
        self.memory = open_thread_memory(config, "discord")
        self.tasks = TaskSet("discord")
        self.locks = KeyedLocks()
        self.dm_access = DmAccess(self)
        self.documents = DiscordDocuments(engine, config, self.tasks)  # a deleted message forgets its files
        self.dms = DmConversations(open_records(config, "discord", "dms"))  # /llm-new, "new" in a DM
        self.summaries = DiscordSummaries(self, self._command_scope)
        self.summaries.register(self.tree)
        register_fresh_start(self.tree, self.dms, self.dm_access.allowed)
        self.invite_url = ""
        self._edit_budget = EditBudget(EDIT_RATE_PER_S, EDIT_BURST)
        self._reply_modes: dict[str, tuple[float, str]] = {}  # channel -> (checked at, "mentions" | "all")
        self._saved_hooks: tuple[str, yarl.URL] | None = None

    # ---- lifecycle ---------------------------------------------------------------------------

    async def login(self, token: str) -> None:
        if self._saved_hooks is None:  # discord.py builds every REST URL from Route.BASE
            self._saved_hooks = (Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY)
        Route.BASE = self.api_url
        await super().login(token)

    async def setup_hook(self) -> None:
        """After login, before the gateway: memory, the gateway address, commands, the invite URL."""
        await self.memory.open()
        self.add_dynamic_items(*FEEDBACK_ITEMS)  # 👍 / 👎 presses, understood after a restart too
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

    async def close(self, grace_s: float = SHUTDOWN_GRACE_S) -> None:
        """Stop taking messages, give answers in hand `grace_s` to finish, then disconnect."""
        first = not self.tasks.closing
        await self.tasks.close(grace_s)
        if not self.is_closed():
            await super().close()
        if first:
            await self.memory.close()
            await self.documents.close()
            await self.dms.records.close()
        if self._saved_hooks is not None:
            Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = self._saved_hooks
            self._saved_hooks = None
        log.info("discord closed")

    async def idle(self) -> None:
        """Wait until every message taken in hand has been fully handled (tests, shutdown)."""
        await self.tasks.idle()

    async def on_error(self, event_method: str, /, *args: Any, **kwargs: Any) -> None:
        log.exception("discord event handler failed", extra={"event": event_method})

    # ---- who and where -----------------------------------------------------------------------

    def guild_allowed(self, guild_id: int | str | None) -> bool:
        return guild_id is not None and (not self.guilds_allowed or str(guild_id) in self.guilds_allowed)

    def user_of(self, author: discord.abc.User, permissions: discord.Permissions | None = None) -> User:
        """The engine's User: Manage Server (or an admin role from config) makes a platform admin."""
        if isinstance(author, discord.Member):
            roles = tuple(str(r.id) for r in author.roles if not r.is_default())
            manage = author.guild_permissions.manage_guild or bool(permissions and permissions.manage_guild)
            return User(id=str(author.id), name=author.display_name, roles=roles,
                        platform_admin=manage or bool(self.admin_roles.intersection(roles)))
        return User(id=str(author.id), name=getattr(author, "display_name", "") or author.name)

    async def _command_scope(self, interaction: discord.Interaction) -> Conversation | None:
        """A command's scope: guild and channel (a thread's parent channel); None if not served."""
        if not self.guild_allowed(interaction.guild_id):
            return None
        channel = interaction.channel
        parent = channel.parent_id if isinstance(channel, discord.Thread) else None
        record = await self.memory.thread(str(interaction.channel_id)) if interaction.channel_id else None
        channel_id = parent or (record.parent if record else interaction.channel_id)
        return Conversation("discord", str(interaction.guild_id), str(channel_id or ""), "")

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

    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        self.documents.deleted([payload.message_id])  # the attachments it carried are forgotten

    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        self.documents.deleted(sorted(payload.message_ids))

    async def on_message(self, message: discord.Message) -> None:
        """Filter without awaiting anything; decide and answer in a task of its own."""
        if self.tasks.closing or self.user is None:
            return
        if message.author.bot or message.webhook_id is not None or message.author.id == self.user.id:
            return  # bots (Parley included) and webhooks are never answered
        if message.type not in ANSWERED_TYPES:
            return  # joins, pins, thread notices, slash-command echoes…
        channel = message.channel
        if message.guild is None:
            if isinstance(channel, discord.DMChannel) or getattr(channel, "type", None) == discord.ChannelType.private:
                self.tasks.spawn(self._on_dm(message), name=f"discord-dm-{message.id}")
        elif self.guild_allowed(message.guild.id):
            self.tasks.spawn(self._route(message), name=f"discord-msg-{message.id}")

    async def _route(self, message: discord.Message) -> None:
        """A mention, or any message in a thread of Parley's, is answered; a channel set to
        `reply all` answers every message."""
        channel = message.channel
        mentioned = self._mentioned(message)
        if isinstance(channel, discord.Thread):
            ours = await self.memory.thread(str(channel.id)) is not None or channel.owner_id == self.user.id
            if ours or mentioned:
                await self._in_thread(message, channel.id, channel.parent_id, ours)
        elif isinstance(channel, discord.PartialMessageable):
            # Not in the cache: a thread of ours from before a restart, or somewhere we were mentioned.
            record = await self.memory.thread(str(channel.id))
            if record is not None:
                await self._in_thread(message, channel.id, int(record.parent), True)
            elif mentioned:
                await self._uncached(message)
        elif mentioned:
            await self._in_channel(message)
        else:
            await self._reply_all(message)

    async def _uncached(self, message: discord.Message) -> None:
        channel = await self.fetch_channel(message.channel.id)
        if isinstance(channel, discord.Thread):
            await self._in_thread(message, channel.id, channel.parent_id, channel.owner_id == self.user.id)
        else:
            await self._in_channel(message)

    async def _reply_all(self, message: discord.Message) -> None:
        where = Conversation("discord", str(message.guild.id), str(message.channel.id), "")
        now = time.monotonic()
        cached = self._reply_modes.get(where.channel)
        if cached and now - cached[0] < REPLY_MODE_CACHE_S:
            mode = cached[1]
        else:
            try:
                mode = (await self.engine.channel_settings(where)).reply
            except Exception:  # noqa: BLE001 - no settings, no unsolicited answer
                log.warning("channel settings unavailable", extra={"channel": where.channel}, exc_info=True)
                return
            if len(self._reply_modes) > 5000:
                self._reply_modes.clear()
            self._reply_modes[where.channel] = (now, mode)
        if mode == "all":
            await self._in_channel(message)

    async def _on_dm(self, message: discord.Message) -> None:
        if not await self.dm_access.allowed(message.author.id):
            log.info("dm from a user outside discord.guilds ignored", extra={"user": str(message.author.id)})
            return
        cid = str(message.channel.id)
        base = Conversation("discord", "dm", cid, cid)
        if not message.attachments and asks_for_fresh_start(message.content):
            await self.dms.fresh(base, str(message.id))  # the old conversation stays until it expires
            await message.channel.send(FRESH_TEXT)
            return
        origin = _Origin(await self.dms.current(base), _Target(message.channel), str(message.id))
        await self._handle(message, origin)

    async def _in_thread(self, message: discord.Message, thread_id: int, parent_id: int | None, ours: bool) -> None:
        guild = str(message.guild.id)
        parent = str(parent_id or thread_id)
        if ours:
            await self.memory.mark(str(thread_id), guild, parent)  # keep it alive while people talk in it
        origin = _Origin(Conversation("discord", guild, parent, str(thread_id)), _Target(message.channel),
                         str(message.id))
        if not message.attachments and asks_for_summary(self._question(message)):
            await self.summaries.thread(message.channel, origin.where, self.user_of(message.author), message)
            return
        earlier = ()
        if not ours:  # a thread somebody else opened: what was said there before is the question's context
            earlier = await read_earlier(thread_reader(message.channel, message, self.user.id),
                                         self.config.sessions.thread_context_messages, origin.where.session_key)
        await self._handle(message, origin, earlier=earlier)

    async def _in_channel(self, message: discord.Message) -> None:
        """A mention in a channel: open a thread on the message and answer there."""
        question = self._question(message)
        files = [a.filename for a in message.attachments]
        if not question and not files:
            if self._mentioned(message):  # a bare mention: say how to ask (a reply-all channel stays quiet)
                await message.reply(ASK_SOMETHING, mention_author=False)
            return
        guild, channel = str(message.guild.id), str(message.channel.id)
        if not files and self._mentioned(message) and asks_for_summary(question):
            await self.summaries.channel_reply(message, Conversation("discord", guild, channel, str(message.id)),
                                               self.user_of(message.author))
            return
        earlier = ()
        if message.reference is not None:  # a reply: the chain of messages it answers is its context
            earlier = await read_earlier(reply_chain_reader(message, self.user.id),
                                         self.config.sessions.thread_context_messages,
                                         f"discord/{guild}/{channel}/{message.id}")
        try:
            thread = await message.create_thread(name=thread_name(question or files[0]), auto_archive_duration=1440)
        except discord.HTTPException as exc:
            # No thread here (no permission, or a channel without threads): reply under the message.
            log.warning("could not open a thread; replying in the channel",
                        extra={"channel": channel, "status": exc.status, "error": exc.text[:200]})
            origin = _Origin(Conversation("discord", guild, channel, str(message.id)),
                             _Target(message.channel, reference=message), str(message.id))
        else:
            await self.memory.mark(str(thread.id), guild, channel)
            origin = _Origin(Conversation("discord", guild, channel, str(thread.id)), _Target(thread),
                             str(message.id))
        await self._handle(message, origin, question, earlier)

    async def _handle(self, message: discord.Message, origin: _Origin, question: str | None = None,
                      earlier: tuple[ThreadMessage, ...] = ()) -> None:
        question = self._question(message) if question is None else question
        async with self.locks.lock(origin.where.session_key):
            user = self.user_of(message.author)
            documents = [a for a in message.attachments if is_document(a.filename, a.content_type or "")]
            skipped = [a.filename for a in message.attachments if a not in documents]
            for attachment in documents:
                shared = self.documents.watch(_shared(attachment), message, origin.where, user)
                await ingest_shared_file(self.engine, shared, origin.where, user, origin.target,
                                         DISCORD, self.config.discord.stream_interval_s)
            if skipped and (message.guild is None or self._mentioned(message)):
                # Only to someone who addressed Parley; a picture posted in passing gets no reply.
                await origin.target.post(unsupported_text(skipped, DISCORD))
            if question:
                request = ChatRequest(where=origin.where, user=user, text=question, message_id=origin.message_id,
                                      earlier=earlier)
                reply = StreamingReply(origin.target, interval_s=self.config.discord.stream_interval_s,
                                       limit=MESSAGE_LIMIT, soft_limit=MESSAGE_SOFT_LIMIT, budget=self._edit_budget)
                await stream_answer(self.engine, request, reply, DISCORD, feedback=True)
            elif not message.attachments and self._mentioned(message):
                await origin.target.post(ASK_SOMETHING)


def _shared(attachment: discord.Attachment) -> SharedFile:
    async def download() -> bytes:
        try:
            return await attachment.read()  # from Discord's CDN, without the token
        except discord.HTTPException as exc:
            raise ParleyError(ErrorCode.FILE_UNREADABLE,
                              f"The download of {attachment.filename} from Discord failed (HTTP {exc.status}).") from exc

    return SharedFile(name=attachment.filename, size=attachment.size, mime_type=attachment.content_type or "",
                      download=download)
