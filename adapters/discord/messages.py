"""A Discord message, from the gateway to what Parley does with it. Nothing here decides whether
a message is for Parley: the facts the router needs (adapters.chat.routing) are gathered from the
message, Parley's thread memory and the channel's settings, and its action is carried out: an
answer (in a thread opened on a channel message, else where it was said), a summary
(adapters/discord/summaries.py), a fresh start in a DM, the attachments indexed, a note, or nothing.
Who may use Parley here (config.access, DMs, a channel switched off) is the engine's access
policy, read into the facts; someone it turns away is told in a DM, never in the channel.
A question is admitted by the engine (Engine.precheck: memory, rate limits) before anything is
spent on it: no thread opened, no history read for a refused one. Past the adapter's bound on
work in hand (limits.tasks_in_flight) a message is not taken, and whoever addressed Parley hears
it is busy.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import discord

from adapters.chat.answering import stream_answer
from adapters.chat.context import read_earlier
from adapters.chat.conversations import FRESH_TEXT, DmConversations
from adapters.chat.ingest import SharedFile, ingest_shared_file, unsupported_text
from adapters.chat.memory import ThreadMemory
from adapters.chat.pictures import picture_question
from adapters.chat.routing import NUDGE_TEXT, Action, Context, Do, FileFact, MessageFacts, route
from adapters.chat.streaming import EditBudget, StreamingReply
from adapters.chat.tasks import BUSY_TEXT, Busy, KeyedLocks, TaskSet
from adapters.discord.documents import DiscordDocuments
from adapters.discord.history import reply_chain_reader, thread_reader
from adapters.discord.rooms import is_private_thread, visibility_of
from adapters.discord.summaries import DiscordSummaries
from adapters.discord.target import DiscordTarget
from adapters.discord.text import DISCORD, NO_MENTIONS, question_text, thread_name
from engine.errors import ErrorCode, ParleyError
from engine.types import ChatRequest, Conversation, SharedPicture, ThreadMessage, User

if TYPE_CHECKING:
    from adapters.chat.thread_record import ThreadRecord
    from engine.config import Config
    from engine.core import Engine

log = logging.getLogger(__name__)

REPLY_MODE_CACHE_S = 10.0  # a channel's reply mode is re-read at most this often (every message asks)
MAX_REPLY_MODES = 5000
UserOf = Callable[[discord.abc.User], User]


@dataclass(frozen=True)
class Place:
    """Where a message was said: a DM, a thread (of `parent_id`), or a channel's top level."""

    guild: str  # the server's id; "dm" for a DM
    channel_id: int  # the DM, thread or channel itself
    parent_id: int | None = None  # a thread's channel
    in_thread: bool = False
    visibility: str = "unknown"  # who can read it (adapters/discord/rooms.py)
    private_thread: bool = False  # its documents are its own, not its channel's

    def thread_conversation(self) -> Conversation:
        return Conversation("discord", self.guild, str(self.parent_id or self.channel_id), str(self.channel_id),
                            visibility=self.visibility,
                            document_channel=str(self.channel_id) if self.private_thread else "")


@dataclass(frozen=True)
class Origin:
    """Where a message is answered (the engine's view) and where the replies go."""

    where: Conversation
    target: DiscordTarget
    message_id: str


class DiscordMessages:
    """`limit` / `soft_limit`: a message's most and preferred characters."""

    def __init__(self, engine: Engine, config: Config, client: discord.Client, memory: ThreadMemory,
                 tasks: TaskSet, *, dms: DmConversations, dm_allowed: Callable[[int], Awaitable[bool]],
                 documents: DiscordDocuments, summaries: DiscordSummaries, user_of: UserOf,
                 guild_allowed: Callable[[int], bool], limit: int, soft_limit: int, budget: EditBudget):
        self.engine = engine
        self.config = config
        self.client = client  # the connection to Discord: who Parley is, channels looked up
        self.memory = memory
        self.tasks = tasks
        self.locks = KeyedLocks()
        self.dms = dms
        self.dm_allowed = dm_allowed
        self.documents = documents
        self.summaries = summaries
        self.user_of = user_of
        self.guild_allowed = guild_allowed
        self.limit = limit
        self.soft_limit = soft_limit
        self.budget = budget
        self.started_at = time.time()  # threads idle since before this may have missed messages
        self._reply_modes: dict[str, tuple[float, str]] = {}  # channel -> (checked at, reply mode)

    @property
    def bot_id(self) -> int:
        return self.client.user.id if self.client.user else 0

    def take(self, message: discord.Message) -> None:
        """Hand the message to a task of its own (nothing is awaited on the gateway's dispatch),
        unless the adapter holds all the work it may: then whoever addressed Parley hears it is busy."""
        self.tasks.spawn(self.handle(message), name=f"discord-msg-{message.id}", bounded=True,
                         busy=self.busy(message))

    def busy(self, message: discord.Message) -> Busy | None:
        """The "busy" reply to a person who mentioned Parley or wrote to it in a DM (once a minute at
        most); None for anything else, refused quietly."""
        if message.author.bot or message.author.id == self.bot_id:
            return None
        if message.guild is not None and not self.mentioned(message):
            return None
        target = DiscordTarget(message.channel, reference=message if message.guild is not None else None)
        return Busy(str(message.author.id), lambda: target.post(BUSY_TEXT))

    async def handle(self, message: discord.Message) -> None:
        facts, place = await self.gather(message)
        action = route(facts)
        if action.do is Do.IGNORE:
            log.debug("message not for Parley", extra={"message_id": str(message.id), "why": action.why})
            return
        await self.carry_out(message, place, facts, action)

    # ---- the facts ---------------------------------------------------------------------------

    def mentioned(self, message: discord.Message) -> bool:
        """An explicit mention of Parley (or of its own role, which Discord's picker offers too);
        @everyone and @here are not a mention of Parley."""
        if any(u.id == self.bot_id for u in message.mentions):
            return True
        role = message.guild.self_role if message.guild else None
        return role is not None and any(r.id == role.id for r in message.role_mentions)

    def question(self, message: discord.Message) -> str:
        guild = message.guild
        role = guild.self_role if guild else None
        return question_text(
            message.content, self.bot_id or None, bot_role_id=role.id if role else None,
            users={u.id: getattr(u, "display_name", u.name) for u in message.mentions},
            roles={r.id: r.name for r in message.role_mentions},
            channels={c.id: c.name for c in (guild.channels if guild else [])})

    async def gather(self, message: discord.Message) -> tuple[MessageFacts, Place]:
        """The router's facts. Those that cost a lookup (thread memory, channel settings, DM
        access, a channel fetched) are looked up only for a person's message where Parley may be
        served: the router ignores every other message whatever they say."""
        author = message.author
        from_bot = author.bot or message.webhook_id is not None or author.id == self.bot_id
        mentioned = self.mentioned(message)
        common = MessageFacts(
            text=self.question(message), mentioned=mentioned, from_bot=from_bot,
            files=tuple(FileFact.of(str(a.id), a.filename, a.content_type or "") for a in message.attachments),
            is_reply=message.reference is not None,
            indexes_in_passing=False,  # Parley sees every channel of a server: only what is shared with it
            reads_pictures=True,  # a screenshot shared with a mention: its text goes into the question
            holds_threads_asked_into=False)  # a Discord thread is a room people opened for themselves
        channel = message.channel
        if message.guild is None:
            place = Place("dm", channel.id)
            is_dm = isinstance(channel, discord.DMChannel) or getattr(channel, "type", None) == discord.ChannelType.private
            served = is_dm and (from_bot or await self._dm_allowed(author.id))
            decision = self.engine.access.decide(Conversation("discord", "dm", str(channel.id), ""),
                                                 self.user_of(author))  # config.access: DMs on or off
            return replace(common, is_dm=is_dm, served=served).under(decision), place
        served = self.guild_allowed(message.guild.id)
        if from_bot or not served:
            return replace(common, served=served), Place(str(message.guild.id), channel.id)
        place, record, ours = await self.locate(message, mentioned)
        missed = ours and (record is None or record.at < self.started_at)
        where = Conversation("discord", place.guild, str(place.parent_id or place.channel_id), "")
        reply = await self.reply_mode(where)
        decision = self.engine.access.decide(where, self.user_of(author), reply=reply)  # config.access, reply off
        return replace(common, in_thread=place.in_thread, our_thread=ours, missed_in_thread=missed,
                       reply_all=reply == "all").under(decision), place

    async def _dm_allowed(self, user_id: int) -> bool:
        allowed = await self.dm_allowed(user_id)
        if not allowed:
            log.info("dm from a user outside discord.guilds ignored", extra={"user": str(user_id)})
        return allowed

    async def locate(self, message: discord.Message, mentioned: bool) -> tuple[Place, ThreadRecord | None, bool]:
        """(the place, Parley's record of the thread, whether Parley holds it) for a server message."""
        guild = str(message.guild.id)
        channel = message.channel
        if isinstance(channel, discord.PartialMessageable):
            # Not in the cache: a thread of ours from before a restart, or somewhere we were mentioned.
            record = await self.memory.thread(str(channel.id))
            if record is not None:  # a thread Parley opened on a message: a public thread of its channel
                parent = self.client.get_channel(int(record.parent))
                return Place(guild, channel.id, int(record.parent), True, visibility_of(parent)), record, True
            if not mentioned:  # looked up only when asked: unknown, it is taken for a thread not Parley's
                return Place(guild, channel.id, None, True), None, False
            channel = await self.client.fetch_channel(channel.id)
        if isinstance(channel, discord.Thread):
            record = await self.memory.thread(str(channel.id))
            ours = record is not None or channel.owner_id == self.bot_id
            return Place(guild, channel.id, channel.parent_id, True, visibility_of(channel),
                         is_private_thread(channel)), record, ours
        return Place(guild, channel.id, visibility=visibility_of(channel)), None, False

    async def reply_mode(self, where: Conversation) -> str:
        """The channel's `reply` setting: mentions, all or off ("" when the settings are unavailable)."""
        now = time.monotonic()
        cached = self._reply_modes.get(where.channel)
        if cached and now - cached[0] < REPLY_MODE_CACHE_S:
            return cached[1]
        mode = await self.engine.access.reply_mode(where)
        if len(self._reply_modes) > MAX_REPLY_MODES:
            self._reply_modes.clear()
        self._reply_modes[where.channel] = (now, mode)
        return mode

    # ---- the action --------------------------------------------------------------------------

    async def carry_out(self, message: discord.Message, place: Place, facts: MessageFacts, action: Action) -> None:
        user = self.user_of(message.author)
        if action.do is Do.TURN_AWAY:
            await self.turn_away(message, place, user, action.note)
            return
        # Said in a thread or a DM: there. At a channel's top level: under the message, unless a
        # thread is opened on it below (an answer, documents to index).
        here = DiscordTarget(message.channel, reference=None if place.in_thread or facts.is_dm else message)
        note = unsupported_text([f.name for f in action.explain], DISCORD) if action.explain else ""
        if action.do in (Do.ANSWER, Do.INGEST):
            answer = action.do is Do.ANSWER and await self.admitted(place, user, here)
            if answer or action.ingest:
                await self.respond(message, place, facts, action, user, note, answer=answer)
            elif note:
                await here.post(note)
            return
        if note:
            await here.post(note)
        if action.do is Do.FRESH_START:
            await self.dms.fresh(Conversation("discord", "dm", str(place.channel_id), str(place.channel_id)),
                                 str(message.id))  # the old conversation stays until it expires
            await message.channel.send(FRESH_TEXT, allowed_mentions=NO_MENTIONS)
        elif action.do is Do.NUDGE:
            await here.post(NUDGE_TEXT)
        elif action.do is Do.SUMMARISE_THREAD:
            if action.hold_thread:
                await self.memory.mark(str(place.channel_id), place.guild, str(place.parent_id or place.channel_id))
            await self.summaries.thread(message.channel, place.thread_conversation(), user, message)
        elif action.do is Do.SUMMARISE_CHANNEL:
            where = Conversation("discord", place.guild, str(place.channel_id), str(message.id))
            await self.summaries.channel_reply(message, where, user)

    async def turn_away(self, message: discord.Message, place: Place, user: User, note: str) -> None:
        """Tell someone the access policy turns away, once per cool-down, in their DM (a DM is theirs
        alone; a channel never hears it). Closed DMs: nothing is said."""
        if not self.engine.access.first_notice(Conversation("discord", place.guild, "", ""), user.id):
            return
        try:
            inbox = message.channel if place.guild == "dm" else message.author
            await inbox.send(note, allowed_mentions=NO_MENTIONS)
        except discord.HTTPException as exc:
            log.info("access note not delivered", extra={"user": user.id, "status": exc.status})

    async def admitted(self, place: Place, user: User, here: DiscordTarget) -> bool:
        """The engine's early admission of a question, before a thread is opened or history read;
        refused, the asker is told where they asked (once per cool-down)."""
        where = Conversation("discord", place.guild, str(place.parent_id or place.channel_id), "")
        try:
            await self.engine.precheck(where, user, "answer")
        except ParleyError as exc:
            if not exc.silent:
                await here.post(DISCORD.warning + DISCORD.guard(exc.render()))
            return False
        return True

    async def respond(self, message: discord.Message, place: Place, facts: MessageFacts, action: Action,
                      user: User, note: str, *, answer: bool) -> None:
        """Index the documents, post the note about the other files, then answer (`answer`: a
        question admitted)."""
        origin = await self.origin(message, place, facts, action)
        earlier = await self.earlier(message, place, origin, action.context) if answer else ()
        async with self.locks.lock(origin.where.session_key):
            attachments = {str(a.id): a for a in message.attachments}
            for fact in action.ingest:
                shared = self.documents.watch(_shared(attachments[fact.key]), message, origin.where, user)
                await ingest_shared_file(self.engine, shared, origin.where, user, origin.target,
                                         DISCORD, self.config.discord.stream_interval_s)
            if note:  # only to someone who addressed Parley; a picture posted in passing gets no reply
                await origin.target.post(note)
            if answer:
                text: str | None = facts.text
                seen: tuple[SharedPicture, ...] = ()
                if action.pictures:
                    text, seen = await self.read_pictures(origin, user, text,
                                                          [attachments[f.key] for f in action.pictures])
                    if text is None:  # nothing to ask: the notes said why
                        return
                request = ChatRequest(where=origin.where, user=user, text=text, message_id=origin.message_id,
                                      earlier=earlier, pictures=seen)  # the asker's own, this turn's
                reply = StreamingReply(origin.target, interval_s=self.config.discord.stream_interval_s,
                                       limit=self.limit, soft_limit=self.soft_limit, budget=self.budget,
                                       render=DISCORD.render)
                await stream_answer(self.engine, request, reply, DISCORD, feedback=True)

    async def read_pictures(self, origin: Origin, user: User, question: str,
                            pictures: list[discord.Attachment]) -> tuple[str | None, tuple[SharedPicture, ...]]:
        """adapters.chat.pictures.picture_question, its notes posted where the answer goes."""
        return await picture_question(question, user.name, [_shared(a) for a in pictures], self.engine.config,
                                      DISCORD, origin.target.post)

    async def origin(self, message: discord.Message, place: Place, facts: MessageFacts, action: Action) -> Origin:
        """Where the answer goes: the DM's current conversation, the thread, or a thread opened on
        a channel message (named from the question; without one, a reply under the message)."""
        message_id = str(message.id)
        if facts.is_dm:
            base = Conversation("discord", "dm", str(place.channel_id), str(place.channel_id), visibility="dm")
            return Origin(await self.dms.current(base), DiscordTarget(message.channel), message_id)
        if place.in_thread:
            if action.hold_thread:  # keep it alive while people talk in it
                await self.memory.mark(str(place.channel_id), place.guild, str(place.parent_id or place.channel_id))
            return Origin(place.thread_conversation(), DiscordTarget(message.channel), message_id)
        channel = str(place.channel_id)
        try:
            name = thread_name(facts.text or next(iter((*action.ingest, *action.pictures))).name)
            thread = await message.create_thread(name=name, auto_archive_duration=1440)
        except discord.HTTPException as exc:
            # No thread here (no permission, or a channel without threads): reply under the message.
            log.warning("could not open a thread; replying in the channel",
                        extra={"channel": channel, "status": exc.status, "error": exc.text[:200]})
            return Origin(Conversation("discord", place.guild, channel, message_id, visibility=place.visibility),
                          DiscordTarget(message.channel, reference=message), message_id)
        await self.memory.mark(str(thread.id), place.guild, channel)
        return Origin(Conversation("discord", place.guild, channel, str(thread.id), visibility=place.visibility),
                      DiscordTarget(thread), message_id)  # a public thread: its channel's readers

    async def earlier(self, message: discord.Message, place: Place, origin: Origin,
                      context: Context) -> tuple[ThreadMessage, ...]:
        """What is read before answering: a thread somebody else opened (or one of Parley's that it
        may have missed messages in), or the chain of messages a reply answers."""
        if context is Context.THREAD:
            # A thread opened on a message has that message's id; the message is in the parent channel.
            parent = self.client.get_partial_messageable(place.parent_id) if place.parent_id else None
            starter = parent.get_partial_message(place.channel_id) if parent is not None else None
            read = thread_reader(message.channel, message, self.bot_id, starter)
        elif context is Context.REPLY_CHAIN:
            read = reply_chain_reader(message, self.bot_id)
        else:
            return ()
        return await read_earlier(read, self.config.sessions.thread_context_messages, origin.where.session_key)


def _shared(attachment: discord.Attachment) -> SharedFile:
    async def download() -> bytes:
        try:
            return await attachment.read()  # from Discord's CDN, without the token
        except discord.HTTPException as exc:
            raise ParleyError(ErrorCode.FILE_UNREADABLE,
                              f"The download of {attachment.filename} from Discord failed (HTTP {exc.status}).") from exc

    return SharedFile(name=attachment.filename, size=attachment.size, mime_type=attachment.content_type or "",
                      download=download)
