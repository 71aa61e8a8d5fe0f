"""Which messages are for Parley and what it does with each: one rule for every platform.

A platform gathers MessageFacts about an incoming message (who sent it, where, whether Parley was
mentioned, whether the thread is one Parley holds, the channel's reply mode, what the access policy
decided (engine/access.py), the files and their kinds, the words) and carries out the Action
`route` returns; no platform decides this again.
`route` is pure (no I/O, no platform types), so its whole table is tested directly
(tests/test_routing.py).

The rule, in words:
- a bot's message (Parley's own included), or one from where Parley is not served: ignored;
- anything said in a channel switched off (`reply off`, or denied in config.access): ignored,
  files included, nobody told;
- someone the access lists turn away (or a DM where DMs are off): told why, privately and once
  in a while, when they addressed Parley (a mention, a DM); else ignored;
- "new" or "reset" alone at the top of a DM: a fresh start;
- "summarize" to Parley (a mention, or in a thread Parley holds): the thread's summary, or at
  the top of a channel its last 24 hours;
- words to Parley (a mention, a DM, a thread Parley holds, the top of a channel set to
  `reply all`): an answer, with the documents shared alongside indexed first;
- a bare mention: a nudge ("ask me something after the mention");
- documents shared with Parley, or anywhere on a platform where being present means being
  invited (Slack): indexed; files Parley cannot read (images, archives): never downloaded, and
  explained only to a sharer who addressed Parley (a mention, a DM);
- pictures shared with Parley (a mention, a DM) where the platform reads them (Slack): their text
  is read (OCR) into the question they came with, which may be the picture alone; pictures
  shared in passing stay quiet, as other files Parley cannot index.
"""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

from adapters.chat.conversations import asks_for_fresh_start
from adapters.chat.ingest import is_document, is_picture
from adapters.chat.summaries import asks_for_summary
from engine.access import Decision

NUDGE_TEXT = "Ask me something after the mention, e.g. `@Parley what can you do?`"


class FileKind(enum.Enum):
    DOCUMENT = "document"  # a type Parley reads (engine/knowledge/formats.py): downloaded and indexed
    REFUSED = "refused"  # an archive, a video…: never downloaded
    PICTURE = "picture"  # an image: its text read for the question it came with, where the platform does


@dataclass(frozen=True)
class FileFact:
    """One file shared with the message."""

    key: str  # the platform's handle on it (a Slack file id, a Discord attachment id)
    name: str
    kind: FileKind

    @classmethod
    def of(cls, key: str, name: str, content_type: str = "") -> FileFact:
        """Its kind by its name and the type the platform detected."""
        if is_document(name, content_type):
            return cls(key, name, FileKind.DOCUMENT)
        return cls(key, name, FileKind.PICTURE if is_picture(name, content_type) else FileKind.REFUSED)


@dataclass(frozen=True)
class MessageFacts:
    """What a platform knows about an incoming message, in no platform's terms."""

    text: str = ""  # the words, Parley's mention removed, the platform's markup made plain
    mentioned: bool = False  # Parley (or its role) by name; @everyone and @here are not
    is_dm: bool = False  # a direct message (Slack's assistant panel threads are DM threads)
    in_thread: bool = False  # said inside a thread (a DM's thread included)
    our_thread: bool = False  # that thread is one Parley holds (later messages need no mention)
    missed_in_thread: bool = False  # Parley holds it but was down since it last heard there
    reply_all: bool = False  # the channel is set to `reply all` (/llm-config)
    switched_off: bool = False  # the channel is set to `reply off`, or denied in config.access
    turned_away: str = ""  # why the sender may not use Parley here (config.access, DMs off); "" = they may
    files: tuple[FileFact, ...] = ()
    is_reply: bool = False  # a reply to another message (Discord's replies): the chain is context
    from_bot: bool = False  # another bot, an app, a webhook, or Parley itself
    served: bool = True  # a workspace / server Parley serves (a DM: a person allowed to reach it)
    # What the platform is, not what the message is:
    # documents shared where Parley reads are indexed unasked (Slack: Parley is only in the
    # channels it was invited to; Discord: it sees every channel of a server, so only what is
    # shared with it).
    indexes_in_passing: bool = False
    # a thread Parley is asked into becomes one it holds (Slack: a thread hangs off a message;
    # Discord: a thread is a room people opened for themselves, so Parley holds only its own).
    holds_threads_asked_into: bool = False
    # pictures shared with Parley are read (OCR) into the question (Slack); elsewhere refused
    reads_pictures: bool = False

    @property
    def documents(self) -> tuple[FileFact, ...]:
        return tuple(f for f in self.files if f.kind is FileKind.DOCUMENT)

    @property
    def refused(self) -> tuple[FileFact, ...]:
        return tuple(f for f in self.files if f.kind is FileKind.REFUSED
                     or f.kind is FileKind.PICTURE and not self.reads_pictures)

    @property
    def pictures(self) -> tuple[FileFact, ...]:
        return tuple(f for f in self.files if f.kind is FileKind.PICTURE and self.reads_pictures)

    @property
    def top_of_dm(self) -> bool:
        """The DM's one running conversation (not a thread inside it)."""
        return self.is_dm and not self.in_thread

    def under(self, decision: Decision) -> MessageFacts:
        """These facts with what the access policy decided for the sender here (engine/access.py)."""
        if decision.allowed:
            return self
        if decision.quiet:
            return dataclasses.replace(self, switched_off=True)
        return dataclasses.replace(self, turned_away=decision.reason)


class Do(enum.Enum):
    IGNORE = "ignore"  # not for Parley: nothing is said, nothing downloaded
    ANSWER = "answer"  # answer the words (after indexing `ingest`)
    SUMMARISE_THREAD = "summarise thread"  # the thread it was said in, posted there
    SUMMARISE_CHANNEL = "summarise channel"  # the channel's last 24 hours, in reply to the message
    FRESH_START = "fresh start"  # the DM's conversation starts over
    INGEST = "ingest"  # index `ingest`; the words (if any) were not said to Parley
    EXPLAIN = "explain"  # only files Parley cannot read: say why, to the sharer
    NUDGE = "nudge"  # a bare mention: say how to ask (NUDGE_TEXT)
    TURN_AWAY = "turn away"  # say `note` to the sender alone, once per cool-down; never in the channel


class Context(enum.Enum):
    """What is read before answering, besides the conversation Parley already holds."""

    NONE = "none"
    THREAD = "thread"  # the thread's earlier messages: joined midway, or missed while down
    REPLY_CHAIN = "reply chain"  # the messages a reply answers, oldest first


@dataclass(frozen=True)
class Action:
    """What to do with one message. Whatever `do` is, `explain` lists refused files to explain
    to the sharer (privately where the platform can)."""

    do: Do
    why: str  # for the log
    ingest: tuple[FileFact, ...] = ()
    explain: tuple[FileFact, ...] = ()
    context: Context = Context.NONE
    hold_thread: bool = False  # hold (or keep holding) the thread the reply goes in
    note: str = ""  # Do.TURN_AWAY: why, in a line
    pictures: tuple[FileFact, ...] = ()  # Do.ANSWER: pictures whose text goes into the question


def route(facts: MessageFacts) -> Action:
    """The one action for a message (see the module's docstring for the rule in words)."""
    if facts.from_bot:
        return Action(Do.IGNORE, "from a bot")
    if not facts.served:
        return Action(Do.IGNORE, "not served here")
    if facts.switched_off and not facts.is_dm:
        return Action(Do.IGNORE, "the channel is switched off")
    if facts.turned_away:
        if facts.mentioned or facts.is_dm:
            return Action(Do.TURN_AWAY, "the sender may not use Parley here", note=facts.turned_away)
        return Action(Do.IGNORE, "the sender may not use Parley here")
    addressed = facts.mentioned or facts.is_dm
    reply_all = facts.reply_all and not facts.is_dm and not facts.in_thread
    asked = addressed or facts.our_thread or reply_all
    explain = facts.refused if addressed else ()  # a picture posted in passing gets no reply
    pictures = facts.pictures if addressed else ()
    documents = facts.documents
    if facts.top_of_dm and not documents and asks_for_fresh_start(facts.text):
        return Action(Do.FRESH_START, "a fresh start asked for", explain=explain)
    summary = _summary(facts, explain)
    if summary is not None:
        return summary
    ingest = documents if asked or facts.indexes_in_passing else ()
    # The thread the reply goes in is Parley's from now on: one opened on a channel message, one
    # it holds, a thread inside a DM (nobody else is there), or where the platform makes it so.
    hold = not facts.top_of_dm and (not facts.in_thread or facts.our_thread or facts.is_dm
                                    or facts.holds_threads_asked_into)
    if (facts.text or pictures) and asked:
        return Action(Do.ANSWER, _why_answered(facts, reply_all), ingest=ingest, explain=explain,
                      context=_context(facts), hold_thread=hold, pictures=pictures)
    if ingest:
        return Action(Do.INGEST, "documents shared", ingest=ingest, explain=explain, hold_thread=hold)
    if explain:
        return Action(Do.EXPLAIN, "only files Parley cannot read", explain=explain)
    if facts.mentioned:
        return Action(Do.NUDGE, "a mention without a question")
    return Action(Do.IGNORE, "nothing for Parley" if asked else "not addressed to Parley")


def _summary(facts: MessageFacts, explain: tuple[FileFact, ...]) -> Action | None:
    """"summarize" said to Parley where there is a thread or a channel to summarise."""
    if facts.documents or facts.pictures or facts.top_of_dm or not (facts.mentioned or facts.our_thread):
        return None  # words sent with a document or picture are about it; a DM is one conversation
    if not asks_for_summary(facts.text):
        return None
    if facts.in_thread:
        return Action(Do.SUMMARISE_THREAD, "a summary asked for", explain=explain, hold_thread=facts.our_thread)
    return Action(Do.SUMMARISE_CHANNEL, "a summary asked for", explain=explain)


def _context(facts: MessageFacts) -> Context:
    if facts.in_thread and (not facts.our_thread or facts.missed_in_thread):
        return Context.THREAD
    if facts.is_reply and not facts.in_thread and not facts.is_dm:
        return Context.REPLY_CHAIN
    return Context.NONE


def _why_answered(facts: MessageFacts, reply_all: bool) -> str:
    if facts.mentioned:
        return "a mention"
    if facts.is_dm:
        return "a direct message"
    return "in a thread Parley holds" if facts.our_thread else "a channel set to reply all" if reply_all else ""
