"""A Slack message, from its event to what Parley does with it. Nothing here decides whether a
message is for Parley: the facts the router needs (adapters.chat.routing) are gathered from the
event, Parley's thread memory and the channel's settings, and its action is carried out: an
answer (adapters/slack/replies.py), a summary (adapters/slack/summaries.py), a fresh start, the
documents indexed (adapters/slack/sharing.py), a private note, or nothing. Who may use Parley
here (config.access, DMs, a channel switched off) is the engine's access policy, read into the facts.

Slack may deliver one message twice (as app_mention and as message, or retried to another
process): whatever Parley says about a message is claimed first (`answer:` key), so it is said once.

A question is admitted by the engine (Engine.precheck: memory, rate limits) as soon as it is
claimed, before anything is spent on it: the asker's profile (users.info), the thread's history,
the channel's visibility. A refusal is the private note an answer's would be; a repeat inside the
cool-down says nothing. Past the adapter's bound on work in hand (limits.tasks_in_flight), a
message is not taken at all, and whoever addressed Parley hears it is busy.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from slack_sdk.errors import SlackApiError

from adapters.chat.context import read_earlier
from adapters.chat.conversations import FRESH_TEXT, DmConversations
from adapters.chat.ingest import unsupported_text
from adapters.chat.memory import ThreadMemory
from adapters.chat.pictures import picture_question
from adapters.chat.routing import NUDGE_TEXT, Action, Context, Do, FileFact, MessageFacts, route
from adapters.chat.tasks import BUSY_TEXT, Busy, KeyedLocks, TaskSet
from adapters.slack.events import Origin, SlackThread, SlackUsers, message_origin, team_of, tell_privately
from adapters.slack.files import shared_name
from adapters.slack.history import SlackHistory
from adapters.slack.markup import SLACK, slack_to_plain
from adapters.slack.replies import SlackReplies
from adapters.slack.sharing import Claim, SlackSharing
from adapters.slack.summaries import SlackSummaries
from engine.errors import ParleyError
from engine.types import SharedPicture, User

if TYPE_CHECKING:
    from slack_sdk.web.async_client import AsyncWebClient

    from engine.core import Engine

log = logging.getLogger(__name__)

SPOKEN = (Do.FRESH_START, Do.SUMMARISE_THREAD, Do.SUMMARISE_CHANNEL, Do.NUDGE)  # said once, then done


@dataclasses.dataclass(frozen=True)
class Incoming:
    """One message as the router sees it (facts) and as Slack sent it (origin, its file objects)."""

    origin: Origin
    facts: MessageFacts
    files: dict[str, dict]  # file id -> Slack's file object


class SlackMessages:
    def __init__(self, engine: Engine, client: AsyncWebClient, memory: ThreadMemory, locks: KeyedLocks,
                 tasks: TaskSet, *, users: SlackUsers, history: SlackHistory, dms: DmConversations,
                 summaries: SlackSummaries, replies: SlackReplies, sharing: SlackSharing,
                 allowed: Callable[[str, str], bool], bot_user_id: Callable[[], str], context_messages: int,
                 started_at: float):
        self.engine = engine
        self.client = client
        self.memory = memory
        self.locks = locks
        self.tasks = tasks
        self.users = users
        self.history = history
        self.dms = dms
        self.summaries = summaries
        self.replies = replies
        self.sharing = sharing
        self.allowed = allowed
        self.bot_user_id = bot_user_id
        self.context_messages = context_messages
        self.started_at = started_at  # threads idle since before this may have missed messages

    def take(self, body: dict, event: dict, bot_user_id: str, mentioned: bool) -> None:
        """Hand the message to a task of its own (nothing is awaited on Bolt's listener), unless
        the adapter holds all the work it may: then whoever addressed Parley hears it is busy."""
        name = f"slack-msg-{event.get('channel', '')}-{event.get('ts', '')}"
        self.tasks.spawn(self.handle(body, event, bot_user_id, mentioned), name=name, bounded=True,
                         busy=self.busy(body, event, mentioned))

    def busy(self, body: dict, event: dict, mentioned: bool) -> Busy | None:
        """The "busy" note for a person who mentioned Parley or wrote to it in a DM (said privately,
        once a minute at most); None for anything else, refused quietly."""
        origin = message_origin(event, team_of(body, event)[0])
        if origin is None or event.get("bot_id") or not (mentioned or origin.is_dm):
            return None
        return Busy(origin.user_id, functools.partial(tell_privately, self.client, origin, BUSY_TEXT))

    async def handle(self, body: dict, event: dict, bot_user_id: str, mentioned: bool) -> None:
        incoming = await self.gather(body, event, bot_user_id, mentioned)
        if incoming is None:
            return  # not said by anyone, anywhere (no user, channel or ts)
        action = route(incoming.facts)
        origin = incoming.origin
        if action.do is Do.IGNORE:
            log.debug("message not for Parley", extra={"channel": origin.channel, "ts": origin.ts, "why": action.why})
            return
        await self.carry_out(incoming, action)

    # ---- the facts ---------------------------------------------------------------------------

    async def gather(self, body: dict, event: dict, bot_user_id: str, mentioned: bool) -> Incoming | None:
        """The router's facts. Those that cost a lookup (thread memory, channel settings) are looked
        up only for a person's message where Parley is served: the router ignores every other
        message whatever they say."""
        team, enterprise = team_of(body, event)
        origin = message_origin(event, team)
        if origin is None:
            return None
        files = {f["id"]: f for f in event.get("files") or [] if isinstance(f, dict) and f.get("id")}
        facts = MessageFacts(
            text=slack_to_plain(event.get("text", ""), bot_user_id), mentioned=mentioned, is_dm=origin.is_dm,
            in_thread=origin.in_thread,
            files=tuple(FileFact.of(fid, shared_name(f), f.get("mimetype") or "") for fid, f in files.items()),
            from_bot=bool(event.get("bot_id") or event.get("bot_profile")) or origin.user_id == bot_user_id,
            served=self.allowed(team, enterprise),
            indexes_in_passing=True,  # Parley reads only the channels it was invited to
            reads_pictures=True,  # a screenshot shared with a mention: its text goes into the question
            holds_threads_asked_into=True)  # a Slack thread hangs off a message: asked in it, Parley stays
        if facts.from_bot or not facts.served:
            return Incoming(origin, facts, files)
        record = await self.memory.thread(origin.where.session_key) if origin.in_thread else None
        reply = "" if origin.is_dm else await self.engine.access.reply_mode(origin.where)  # a DM is no channel
        facts = dataclasses.replace(
            facts, our_thread=record is not None, missed_in_thread=record is not None and record.at < self.started_at,
            reply_all=reply == "all")
        decision = self.engine.access.decide(origin.where, User(origin.user_id), reply=reply)  # config.access
        return Incoming(origin, facts.under(decision), files)

    # ---- the action --------------------------------------------------------------------------

    async def carry_out(self, incoming: Incoming, action: Action) -> None:
        origin = incoming.origin
        if action.do is Do.TURN_AWAY:
            if await self.claim_answer(origin) and self.engine.access.first_notice(origin.where, origin.user_id):
                await self.whisper(origin, action.note)
            return
        if action.explain and await self.memory.claim(f"ignored:{origin.channel}:{origin.ts}"):
            names = [f.name for f in action.explain]  # once, though two events came
            await tell_privately(self.client, origin, unsupported_text(names, SLACK))
        if action.do is Do.EXPLAIN:
            return  # the thread is not marked, nothing is answered
        if action.do in SPOKEN:
            if await self.claim_answer(origin):
                await self.speak(origin, action)
            return
        if incoming.facts.top_of_dm:  # the DM's current conversation (since its last fresh start)
            origin = dataclasses.replace(origin, where=await self.dms.current(origin.where))
        answer = action.do is Do.ANSWER and await self.claim_answer(origin) and await self.admitted(origin)
        claims = [(incoming.files[f.key], await self.sharing.claim(origin.channel, f.key)) for f in action.ingest]
        if answer or any(owner for _, (owner, _) in claims):
            pictures = [incoming.files[f.key] for f in action.pictures] if answer else []
            await self.respond(origin, incoming.facts.text if answer else None, claims, action, pictures)

    async def whisper(self, origin: Origin, text: str) -> None:
        """Tell the sender alone (ephemeral); where Slack refuses, say nothing in a channel (a DM is
        theirs alone: said there)."""
        try:
            await self.client.chat_postEphemeral(channel=origin.channel, user=origin.user_id, text=text,
                                                 thread_ts=origin.reply_thread_ts)
        except SlackApiError as exc:
            if origin.is_dm:
                await SlackThread(self.client, origin.channel, origin.reply_thread_ts).post(text)
            else:
                log.info("access note not delivered", extra={"channel": origin.channel,
                                                             "error": exc.response.get("error")})

    async def admitted(self, origin: Origin) -> bool:
        """The engine's early admission of a question, before its asker's profile or its thread is
        read; refused, the asker alone is told (once per cool-down)."""
        try:
            await self.engine.precheck(origin.where, User(origin.user_id), "answer",
                                       resolve=lambda: self.users.get(origin.user_id, origin.where.workspace))
        except ParleyError as exc:
            if not exc.silent:
                await tell_privately(self.client, origin, SLACK.warning + SLACK.guard(exc.render()))
            return False
        return True

    async def claim_answer(self, origin: Origin) -> bool:
        if await self.memory.claim(f"answer:{origin.channel}:{origin.ts}"):
            return True
        # The same message came as both app_mention and message, or went to another process too.
        log.info("message already taken in hand", extra={"channel": origin.channel, "ts": origin.ts})
        return False

    async def speak(self, origin: Origin, action: Action) -> None:
        """A fresh start, a summary or a nudge: one reply about the message, not an answer to it."""
        if action.hold_thread and origin.reply_thread_ts is not None:
            await self.memory.mark(origin.where.session_key, origin.where.workspace, origin.channel)
        if action.do is Do.FRESH_START:
            await self.dms.fresh(origin.where, origin.ts)
            await SlackThread(self.client, origin.channel, origin.reply_thread_ts).post(FRESH_TEXT)
        elif action.do is Do.NUDGE:
            await tell_privately(self.client, origin, NUDGE_TEXT)
        elif action.do is Do.SUMMARISE_THREAD:  # admitted before anything is read: the engine's call
            await self.summaries.thread(origin.where, User(origin.user_id), origin.ts,
                                        private=functools.partial(tell_privately, self.client, origin))
        else:
            await self.summaries.channel_in_thread(origin.where, User(origin.user_id), origin.ts,
                                                   private=functools.partial(tell_privately, self.client, origin))

    async def respond(self, origin: Origin, question: str | None, claims: list[tuple[dict, Claim]],
                      action: Action, pictures: list[dict]) -> None:
        """Index the documents this delivery claimed, read the pictures' text into `question`, then
        answer it (None: no answer)."""
        async with self.locks.lock(origin.where.session_key):
            user = await self.users.get(origin.user_id, origin.where.workspace)
            if action.hold_thread and origin.reply_thread_ts is not None:
                await self.memory.mark(origin.where.session_key, origin.where.workspace, origin.channel)
            for file, claim in claims:
                await self.sharing.take(file, claim, origin, user, waits=question is not None)
            seen: tuple[SharedPicture, ...] = ()
            if question is not None and pictures:
                question, seen = await self.read_pictures(origin, user, question, pictures)  # None: nothing to ask
            if question is not None:
                await self.answer(origin, user, question, action.context, seen)

    async def read_pictures(self, origin: Origin, user: User, question: str,
                            pictures: list[dict]) -> tuple[str | None, tuple[SharedPicture, ...]]:
        """adapters.chat.pictures.picture_question, its notes posted in the thread."""
        shared = [self.sharing.fetcher.shared(file, self.client.files_info) for file in pictures]
        thread = SlackThread(self.client, origin.channel, origin.reply_thread_ts)
        return await picture_question(question, user.name, shared, self.engine.config, SLACK, thread.post)

    async def answer(self, origin: Origin, user: User, text: str, context: Context,
                     pictures: tuple[SharedPicture, ...] = ()) -> None:
        # Who can read the channel (a mention does not say; cached): documents shared here before
        # visibility was recorded learn it on this use (KnowledgeBase), and so reach what they should
        origin = dataclasses.replace(origin, where=await self.sharing.channels.known(origin.where, origin.channel))
        earlier = ()
        # A thread Parley joins midway is read first: what people said there is the question's context.
        # So is one of Parley's that was idle while Parley was down: the messages it missed join in.
        if context is Context.THREAD and origin.reply_thread_ts:
            earlier = await read_earlier(
                self.history.reader(origin.channel, origin.reply_thread_ts, origin.ts, self.bot_user_id()),
                self.context_messages, origin.where.session_key)
        # Native streaming or chat.update, the status line, a panel's documents, feedback: replies.py
        await self.replies.answer(origin, user, text, earlier, pictures)
