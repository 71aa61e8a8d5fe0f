"""The Discord adapter: a discord.py Client on the gateway, answering through the REST API.

Here: logging in, the gateway, who is served, and the events. Discord events become chat-layer
calls (adapters.chat), and the chat layer's messages go back through discord.py:
- each message is handed to adapters/discord/messages.py, which gathers its facts for the router
  (adapters.chat.routing) and carries out its action. In Discord: a mention in a channel opens a
  thread on that message (named from the question) and answers there; later messages in a thread Parley opened continue it without a mention; a mention in
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

Several processes on one token split the guilds by gateway shard (discord.shard_count and
shard_ids: open_discord_adapter); with `sessions.backend: redis` each message is also claimed
once across processes (SET NX with a TTL), so even two processes given the same shard answer once.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.http import Route

from adapters.chat.conversations import DmConversations
from adapters.chat.memory import open_thread_memory
from adapters.chat.records import open_records
from adapters.chat.streaming import EditBudget
from adapters.chat.tasks import TaskSet
from adapters.discord.access import DISCORD_API_URL, DmAccess, api_base, invite_url, parley_intents
from adapters.discord.commands import register_commands, register_fresh_start
from adapters.discord.documents import DiscordDocuments
from adapters.discord.feedback import DYNAMIC_ITEMS as FEEDBACK_ITEMS
from adapters.discord.messages import DiscordMessages
from adapters.discord.rooms import guild_conversation
from adapters.discord.summaries import DiscordSummaries
from engine.config import Config, DiscordConfig
from engine.types import Conversation, User

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
ANSWERED_TYPES = (discord.MessageType.default, discord.MessageType.reply)


class DiscordAdapter(discord.Client):
    """Parley's Discord bot. `start(token)` logs in and runs the gateway; `close()` ends it."""

    def __init__(self, engine: Engine, config: Config, *, api_url: str = DISCORD_API_URL, **options: Any):
        # Parley never joins voice: discord.py's warnings about voice libraries are noise here.
        discord.VoiceClient.warn_nacl = False
        discord.VoiceClient.warn_dave = False
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
        self.shared_claims = config.sessions.backend == "redis"  # a message claimed once over processes
        self.tasks = TaskSet("discord", limit=config.limits.tasks_in_flight)
        self.dm_access = DmAccess(self)
        self.documents = DiscordDocuments(engine, config, self.tasks)  # a deleted message forgets its files
        self.dms = DmConversations(open_records(config, "discord", "dms"))  # /llm-new, "new" in a DM
        self.summaries = DiscordSummaries(engine, self, self.user_of, self._command_scope)
        self.summaries.register(self.tree)
        register_fresh_start(self.tree, self.dms, self.dm_access.allowed,
                             lambda where, user: engine.access.admit(where, user, command=True))
        self.messages = DiscordMessages(
            engine, config, self, self.memory, self.tasks, dms=self.dms, dm_allowed=self.dm_access.allowed,
            documents=self.documents, summaries=self.summaries, user_of=self.user_of,
            guild_allowed=self.guild_allowed, limit=MESSAGE_LIMIT, soft_limit=MESSAGE_SOFT_LIMIT,
            budget=EditBudget(EDIT_RATE_PER_S, EDIT_BURST))
        self.invite_url = ""
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
            Route.BASE = self._saved_hooks[0]
            DiscordWebSocket.DEFAULT_GATEWAY = self._saved_hooks[1]
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
        # with its visibility; a private thread keeps its own documents (adapters/discord/rooms.py)
        return guild_conversation(str(interaction.guild_id), str(channel_id or ""), channel)

    # ---- messages ----------------------------------------------------------------------------

    async def on_guild_channel_update(self, before: discord.abc.GuildChannel, after: discord.abc.GuildChannel) -> None:
        if self.guild_allowed(after.guild.id):
            self.documents.channel_changed(before, after)  # made private or public: its documents follow

    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        self.documents.deleted([payload.message_id])  # the attachments it carried are forgotten

    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        self.documents.deleted(sorted(payload.message_ids))

    async def on_message(self, message: discord.Message) -> None:
        """Hand what people say to adapters/discord/messages.py (which awaits, in a task of its own)."""
        if self.tasks.closing or self.user is None:
            return
        if message.type not in ANSWERED_TYPES:
            return  # joins, pins, thread notices, slash-command echoes…
        claimed = message.author.bot or await self.memory.claim(f"message:{message.id}", shared=self.shared_claims)
        if not claimed:
            log.info("discord message taken by another process", extra={"message_id": message.id})
            return
        self.messages.take(message)


class ShardedDiscordAdapter(DiscordAdapter, discord.AutoShardedClient):
    """Parley's Discord bot running several gateway shards in this process (discord.shard_ids)."""


def shard_options(config: DiscordConfig) -> dict[str, Any]:
    """discord.py's options for this process's shards: none unsharded, shard_id for one, shard_ids for several."""
    if not config.shard_count:
        return {}
    ids = config.shard_ids or list(range(config.shard_count))
    if len(ids) == 1:
        return {"shard_id": ids[0], "shard_count": config.shard_count}
    return {"shard_ids": ids, "shard_count": config.shard_count}


def open_discord_adapter(engine: Engine, config: Config, **options: Any) -> DiscordAdapter:
    """The adapter for this process's shards (discord.shard_count / shard_ids)."""
    sharding = shard_options(config.discord)
    if sharding:
        log.info("discord shards", extra={k: v for k, v in sharding.items()})
    adapter = ShardedDiscordAdapter if "shard_ids" in sharding else DiscordAdapter
    return adapter(engine, config, **sharding, **options)
