"""The one routing rule (adapters.chat.routing): each row is a situation a user would recognise
and what Parley does with it. Then, through the real platform paths (slack-bolt and the fake
Slack, discord.py and the fake Discord, the console), that the adapters gather the facts and do
what the router says, nothing of their own."""
from __future__ import annotations

import dataclasses
import io
import itertools

import pytest

from adapters.chat import routing
from adapters.chat.routing import NUDGE_TEXT, Action, Context, Do, FileFact, FileKind, MessageFacts, route
from test_discord import discord_factory  # noqa: F401 - the fixture is used by name
from test_slack import ADA, CHANNEL, slack_factory  # noqa: F401 - the fixture is used by name

pytestmark = pytest.mark.timeout(240)

PDF = FileFact("F1", "report.pdf", FileKind.DOCUMENT)
PNG = FileFact("F2", "screenshot.png", FileKind.REFUSED)
SLACK = {"indexes_in_passing": True, "holds_threads_asked_into": True}  # the platforms' natures
DISCORD = {"indexes_in_passing": False, "holds_threads_asked_into": False}


def facts(**kwargs) -> MessageFacts:
    return MessageFacts(**kwargs)


# (situation, facts, what Parley does, and what the action carries)
CASES = [
    # Who is answered at all
    ("another bot posts in Parley's thread", facts(text="beep", in_thread=True, our_thread=True, from_bot=True),
     Do.IGNORE, {}),
    ("Parley's own message comes back, naming Parley", facts(text="hi", mentioned=True, from_bot=True), Do.IGNORE, {}),
    ("a mention where Parley is not served", facts(text="Hello?", mentioned=True, served=False), Do.IGNORE, {}),
    ("a DM from someone outside the served servers", facts(text="Hello?", is_dm=True, served=False), Do.IGNORE, {}),
    ("a plain message in a channel", facts(text="Lunch at noon?"), Do.IGNORE, {}),
    ("a message in somebody else's thread", facts(text="Sure", in_thread=True), Do.IGNORE, {}),
    ("an empty DM message (a sticker)", facts(is_dm=True), Do.IGNORE, {}),
    # Answers, and what is read first
    ("a mention in a channel", facts(text="What is 2 + 2?", mentioned=True), Do.ANSWER,
     {"context": Context.NONE, "hold_thread": True}),
    ("a message in a thread Parley holds", facts(text="And 3 + 3?", in_thread=True, our_thread=True), Do.ANSWER,
     {"context": Context.NONE, "hold_thread": True}),
    ("Parley's thread, after Parley was down", facts(text="So?", in_thread=True, our_thread=True, missed_in_thread=True),
     Do.ANSWER, {"context": Context.THREAD}),
    ("a mention in somebody else's Slack thread", facts(text="And you?", mentioned=True, in_thread=True, **SLACK),
     Do.ANSWER, {"context": Context.THREAD, "hold_thread": True}),
    ("a mention in somebody else's Discord thread", facts(text="And you?", mentioned=True, in_thread=True, **DISCORD),
     Do.ANSWER, {"context": Context.THREAD, "hold_thread": False}),
    ("a DM", facts(text="Hi! What is 2 + 2?", is_dm=True), Do.ANSWER, {"context": Context.NONE, "hold_thread": False}),
    ("a new thread inside a DM", facts(text="Hi", is_dm=True, in_thread=True), Do.ANSWER,
     {"context": Context.THREAD, "hold_thread": True}),
    ("a mention replying to a message in a channel", facts(text="Is that right?", mentioned=True, is_reply=True),
     Do.ANSWER, {"context": Context.REPLY_CHAIN}),
    ("a reply in a DM", facts(text="Is that right?", is_dm=True, is_reply=True), Do.ANSWER, {"context": Context.NONE}),
    # Fresh starts
    ("'new' alone in a DM", facts(text="new", is_dm=True), Do.FRESH_START, {}),
    ("'Reset.' alone in a DM", facts(text="Reset.", is_dm=True), Do.FRESH_START, {}),
    ("'new' with a screenshot in a DM", facts(text="new", is_dm=True, files=(PNG,)), Do.FRESH_START,
     {"explain": (PNG,)}),
    ("'new' inside a DM's thread", facts(text="new", is_dm=True, in_thread=True), Do.ANSWER, {}),
    ("'@Parley new' in a channel", facts(text="new", mentioned=True), Do.ANSWER, {}),
    ("'new' with a document in a DM", facts(text="new", is_dm=True, files=(PDF,)), Do.ANSWER, {"ingest": (PDF,)}),
    # Summaries
    ("'@Parley summarize' in a thread", facts(text="summarize", mentioned=True, in_thread=True), Do.SUMMARISE_THREAD,
     {"hold_thread": False}),
    ("'tl;dr' in Parley's thread", facts(text="tl;dr", in_thread=True, our_thread=True), Do.SUMMARISE_THREAD,
     {"hold_thread": True}),
    ("'summarize' in somebody else's thread", facts(text="summarize", in_thread=True), Do.IGNORE, {}),
    ("'@Parley summarize' at the top of a channel", facts(text="Summarize this.", mentioned=True),
     Do.SUMMARISE_CHANNEL, {}),
    ("'@Parley summarize' with a screenshot", facts(text="summarize", mentioned=True, files=(PNG,)),
     Do.SUMMARISE_CHANNEL, {"explain": (PNG,)}),
    ("'summarize' in a DM", facts(text="summarize", is_dm=True), Do.ANSWER, {}),
    ("'summarize' in a reply-all channel, no mention", facts(text="summarize", reply_all=True), Do.ANSWER, {}),
    ("'@Parley summarize' with a document", facts(text="summarize", mentioned=True, files=(PDF,)), Do.ANSWER,
     {"ingest": (PDF,)}),
    ("'summarize the budget' to Parley", facts(text="summarize the budget", mentioned=True), Do.ANSWER, {}),
    # Channels set to reply to every message
    ("a plain message in a reply-all channel", facts(text="What is the capital of France?", reply_all=True),
     Do.ANSWER, {"hold_thread": True}),
    ("a message in somebody else's thread of a reply-all channel", facts(text="Sure", in_thread=True, reply_all=True),
     Do.IGNORE, {}),
    ("an empty message in a reply-all channel", facts(reply_all=True), Do.IGNORE, {}),
    ("a screenshot alone in a reply-all channel", facts(reply_all=True, files=(PNG,)), Do.IGNORE, {}),
    ("a document alone in a reply-all Discord channel", facts(reply_all=True, files=(PDF,), **DISCORD), Do.INGEST,
     {"ingest": (PDF,), "hold_thread": True}),
    ("a reply-all setting read in a DM", facts(text="Hi", is_dm=True, reply_all=True), Do.ANSWER,
     {"hold_thread": False}),
    # Bare mentions and files
    ("a bare mention", facts(mentioned=True), Do.NUDGE, {}),
    ("a bare mention in Parley's thread", facts(mentioned=True, in_thread=True, our_thread=True), Do.NUDGE, {}),
    ("a mention with only a screenshot", facts(mentioned=True, files=(PNG,)), Do.EXPLAIN, {"explain": (PNG,)}),
    ("a screenshot alone in a DM", facts(is_dm=True, files=(PNG,)), Do.EXPLAIN, {"explain": (PNG,)}),
    ("a screenshot posted in passing", facts(files=(PNG,), **SLACK), Do.IGNORE, {}),
    ("a screenshot in Parley's thread, no mention", facts(in_thread=True, our_thread=True, files=(PNG,)),
     Do.IGNORE, {}),
    ("a document shared in passing in Slack", facts(files=(PDF,), **SLACK), Do.INGEST,
     {"ingest": (PDF,), "hold_thread": True}),
    ("a document with words, in passing, in Slack", facts(text="here is the report", files=(PDF, PNG), **SLACK),
     Do.INGEST, {"ingest": (PDF,), "explain": ()}),
    ("a document shared in passing in Discord", facts(files=(PDF,), **DISCORD), Do.IGNORE, {}),
    ("a document in somebody else's Slack thread", facts(in_thread=True, files=(PDF,), **SLACK), Do.INGEST,
     {"hold_thread": True}),
    ("a document in Parley's thread, no words", facts(in_thread=True, our_thread=True, files=(PDF,), **DISCORD),
     Do.INGEST, {"ingest": (PDF,), "hold_thread": True}),
    ("a mention with a question, a document and a screenshot",
     facts(text="What is the budget?", mentioned=True, files=(PDF, PNG), **DISCORD), Do.ANSWER,
     {"ingest": (PDF,), "explain": (PNG,)}),
    ("a document sent to Parley in a DM", facts(is_dm=True, files=(PDF,)), Do.INGEST, {"hold_thread": False}),
    # A channel switched off (`/llm-config reply off`, or denied in config.access): nothing, to nobody
    ("a mention in a channel switched off", facts(text="What is 2 + 2?", mentioned=True, switched_off=True),
     Do.IGNORE, {}),
    ("a message in Parley's thread of a channel switched off",
     facts(text="And 3 + 3?", in_thread=True, our_thread=True, switched_off=True), Do.IGNORE, {}),
    ("'@Parley summarize' in a channel switched off", facts(text="summarize", mentioned=True, switched_off=True),
     Do.IGNORE, {}),
    ("a document shared in passing in a Slack channel switched off",
     facts(files=(PDF,), switched_off=True, **SLACK), Do.IGNORE, {}),
    ("a mention with a screenshot in a channel switched off",
     facts(mentioned=True, files=(PNG,), switched_off=True), Do.IGNORE, {}),
    ("a plain message in a reply-all channel switched off", facts(text="Hi", reply_all=True, switched_off=True),
     Do.IGNORE, {}),
    ("someone turned away, in a channel switched off: still nothing",
     facts(text="Hi", mentioned=True, switched_off=True, turned_away="not you"), Do.IGNORE, {}),
    # Someone the access lists turn away, or a DM where DMs are off: told privately, when they asked
    ("a mention by someone turned away", facts(text="What is 2 + 2?", mentioned=True, turned_away="not you"),
     Do.TURN_AWAY, {"note": "not you", "ingest": (), "explain": ()}),
    ("a DM where DMs are off", facts(text="Hi", is_dm=True, turned_away="DMs are off"), Do.TURN_AWAY,
     {"note": "DMs are off"}),
    ("'new' in a DM where DMs are off", facts(text="new", is_dm=True, turned_away="DMs are off"), Do.TURN_AWAY, {}),
    ("a document sent in a DM where DMs are off", facts(is_dm=True, files=(PDF,), turned_away="DMs are off"),
     Do.TURN_AWAY, {"ingest": ()}),
    ("a message by someone turned away in Parley's thread, no mention",
     facts(text="And 3 + 3?", in_thread=True, our_thread=True, turned_away="not you"), Do.IGNORE, {}),
    ("a document shared in passing in Slack by someone turned away",
     facts(files=(PDF,), turned_away="not you", **SLACK), Do.IGNORE, {}),
    ("a plain message in a reply-all channel by someone turned away",
     facts(text="Hi", reply_all=True, turned_away="not you"), Do.IGNORE, {}),
    ("a bot named as turned away is still a bot", facts(text="hi", mentioned=True, from_bot=True, turned_away="x"),
     Do.IGNORE, {}),
]


@pytest.mark.parametrize("situation, given, do, carries", CASES, ids=[c[0] for c in CASES])
def test_the_routing_table(situation, given, do, carries):
    action = route(given)
    assert action.do is do, f"{situation}: {action}"
    for name, value in carries.items():
        assert getattr(action, name) == value, f"{situation}: {name} is {getattr(action, name)!r}"
    assert action.why, "every action says why, for the log"


def test_file_kinds_by_name_and_detected_type():
    assert FileFact.of("1", "Report.PDF").kind is FileKind.DOCUMENT
    assert FileFact.of("2", "notes", "text/plain; charset=utf-8").kind is FileKind.DOCUMENT, "text without a suffix"
    assert FileFact.of("3", "photo.png", "image/png").kind is FileKind.PICTURE
    assert FileFact.of("5", "clipboard", "image/png").kind is FileKind.PICTURE, "a picture without a suffix"
    assert FileFact.of("4", "archive.zip", "application/zip").kind is FileKind.REFUSED


def test_a_picture_shared_with_parley_is_read_where_the_platform_reads_pictures():
    shot = FileFact.of("S1", "error.png", "image/png")
    asked = route(MessageFacts(text="", mentioned=True, files=(shot,), reads_pictures=True))
    assert (asked.do, asked.pictures, asked.explain) == (Do.ANSWER, (shot,), ())  # a bare mention: the picture is the question
    dm = route(MessageFacts(text="what is this?", is_dm=True, files=(shot, PDF), reads_pictures=True))
    assert (dm.do, dm.pictures, dm.ingest) == (Do.ANSWER, (shot,), (PDF,))
    passing = route(MessageFacts(text="look", files=(shot,), reads_pictures=True, indexes_in_passing=True))
    assert (passing.do, passing.pictures, passing.explain) == (Do.IGNORE, (), ())  # stays quiet
    elsewhere = route(MessageFacts(text="", mentioned=True, files=(shot,)))
    assert (elsewhere.do, elsewhere.explain) == (Do.EXPLAIN, (shot,))  # a platform that does not read them
    summary = route(MessageFacts(text="summarize", mentioned=True, in_thread=True, files=(shot,), reads_pictures=True))
    assert summary.do is Do.ANSWER and summary.pictures == (shot,)  # words sent with a picture are about it


def test_what_holds_whatever_the_facts():
    """Over every combination of the yes/no facts: bots are never answered, a file is explained
    only to someone who addressed Parley, only documents are indexed, an answer has words, and
    the top of a DM is never held as a thread."""
    flags = ("mentioned", "is_dm", "in_thread", "our_thread", "reply_all", "from_bot", "served",
             "indexes_in_passing", "holds_threads_asked_into")
    for values in itertools.product((False, True), repeat=len(flags)):
        for text, files in (("", ()), ("What is 2 + 2?", ()), ("", (PDF,)), ("", (PNG,)), ("why?", (PDF, PNG))):
            given = MessageFacts(text=text, files=files, **dict(zip(flags, values)))
            action = route(given)
            if given.from_bot or not given.served:
                assert action == Action(action.do, action.why) and action.do is Do.IGNORE
            # A channel switched off (a DM is none), or a sender turned away: nothing read, explained
            # or answered; at most the sender is told why, and only when they addressed Parley.
            for off, away in ((True, ""), (False, "not you"), (True, "not you")):
                if not away and given.is_dm:
                    continue
                barred = route(dataclasses.replace(given, switched_off=off, turned_away=away))
                assert not barred.ingest and not barred.explain and barred.do in (Do.IGNORE, Do.TURN_AWAY), given
                quiet = off and not given.is_dm
                assert barred.do is Do.IGNORE or (not quiet and (given.mentioned or given.is_dm)), given
            assert not action.explain or given.mentioned or given.is_dm, given
            assert set(action.ingest) <= set(given.documents) and set(action.explain) <= set(given.refused)
            assert action.do is not Do.ANSWER or text, given
            assert not (action.hold_thread and given.top_of_dm), given


# ---- through the real platform paths ---------------------------------------------------------

def recording(monkeypatch, module, forced: Action | None = None) -> list[MessageFacts]:
    """Record the facts `module` hands the router; with `forced`, the router answers that instead
    to a person's message (Parley's own replies, which come back, still go their way)."""
    seen: list[MessageFacts] = []

    def spy(given: MessageFacts) -> Action:
        seen.append(given)
        return forced if forced is not None and not given.from_bot else routing.route(given)

    monkeypatch.setattr(module, "route", spy)
    return seen


async def test_slack_gathers_the_facts_and_does_what_the_router_says(slack_factory, monkeypatch):
    from adapters.slack import messages

    h = await slack_factory()
    root = h.fake.add_message("Planning the offsite.", user=ADA)
    seen = recording(monkeypatch, messages, forced=Action(Do.NUDGE, "forced by the test"))
    requests = (await h.engine.stats()).values.get("requests", 0)
    await h.mention("What is 2 + 2?", user=ADA, thread_ts=root.ts)
    [given] = [f for f in seen if f.mentioned]
    assert given.text == "What is 2 + 2?" and given.in_thread and not given.our_thread and not given.is_dm
    assert given.served and not given.from_bot and given.indexes_in_passing and given.holds_threads_asked_into
    # The router said "nudge" to a question: the adapter nudges (privately, once) and answers nothing.
    [note] = h.fake.ephemerals
    assert note["user"] == ADA and note["text"] == NUDGE_TEXT
    assert not h.fake.bot_messages(CHANNEL, root.ts)
    assert (await h.engine.stats()).values.get("requests", 0) == requests, "the model was not asked"


async def test_slack_a_bare_mention_gets_the_nudge_privately(slack_factory):
    h = await slack_factory()
    await h.mention("", user=ADA)
    [nudge] = h.fake.ephemerals
    assert nudge["text"] == NUDGE_TEXT, "said how to ask, to the asker alone"
    assert not h.fake.calls_of("chat.postMessage")


async def test_discord_gathers_the_facts_and_does_what_the_router_says(discord_factory, monkeypatch):
    from adapters.discord import messages

    h = await discord_factory()
    seen = recording(monkeypatch, messages, forced=Action(Do.NUDGE, "forced by the test"))
    payload = await h.say(h.general, "ada", "What is 2 + 2?", mention=True)
    [given] = [f for f in seen if not f.from_bot]  # Parley's own reply comes back over the gateway too
    assert given.text == "What is 2 + 2?" and given.mentioned and not given.in_thread and not given.is_dm
    assert given.served and not given.from_bot and not given.indexes_in_passing
    [nudge] = h.fake.bot_messages(h.general)
    assert nudge.text == NUDGE_TEXT and nudge.reference == int(payload["id"]), "a reply to the question"
    assert not h.fake.threads_of(h.general), "no thread opened: the router said nudge, not answer"


async def test_discord_an_archive_with_a_mention_is_explained_without_a_thread(discord_factory):
    h = await discord_factory(knowledge=True)  # (a picture with a mention is read: tests/test_pictures_shared.py)
    archive = h.fake.add_file(h.general, "logs.zip", b"PK\x05\x06" + bytes(18), "application/zip")
    payload = await h.say(h.general, "ada", "", mention=True, attachments=[archive])
    [note] = h.fake.bot_messages(h.general)
    assert "logs.zip" in note.text and "UNSUPPORTED_FILE" in note.text and note.reference == int(payload["id"])
    assert not h.fake.threads_of(h.general), "nothing to answer: no thread named logs.zip"
    await h.say(h.general, "ada", "", mention=True)
    assert h.fake.bot_messages(h.general)[-1].text == NUDGE_TEXT


async def test_the_console_routes_its_lines_like_a_dm(engine_factory, core_config):
    from adapters.console import ConsoleAdapter

    engine = await engine_factory(core_config)
    stdout = io.StringIO()
    console = ConsoleAdapter(engine, stdin=io.StringIO("reset\n"), stdout=stdout, interactive=False)
    before = console.thread
    await console.run()
    assert console.thread != before and stdout.getvalue().startswith("New thread "), "'reset' alone: a fresh start"
    assert (await engine.stats()).values.get("requests", 0) == 0, "not a question for the model"


async def test_discord_reads_what_it_missed_in_its_thread_while_it_was_down(discord_factory, tmp_path):
    """As on Slack: a thread of Parley's idle while Parley was down is read again at its next message."""
    from conftest import spy_prompts
    from fake_discord import FakeMessage

    h = await discord_factory()
    _, thread = await h.mention("Where should we go for the offsite?")
    await h.adapter.close(grace_s=1)
    for who, text in (("grace", "Lisbon has the best flights."), ("lin", "And it is cheaper in May.")):
        said = FakeMessage(h.fake.snowflake(), thread, h.people[who], [text])  # no gateway: Parley is down
        h.fake.messages[said.id] = said
    h2 = await discord_factory(engine=h.engine, data_dir=tmp_path / "data", fake=h.fake)
    prompts = spy_prompts(h.engine)
    await h2.say(thread, "ada", "So, which city?")
    people = [m["content"] for m in prompts[-1] if m["role"] == "user"]
    assert people[-3:] == ["Grace: Lisbon has the best flights.", "Lin: And it is cheaper in May.",
                           "Ada: So, which city?"], "the missed messages, in order, before the new one"
    reads = len(h.fake.calls_of("GET", rf"/channels/{thread}/messages"))
    await h2.say(thread, "ada", "Thanks!")
    assert len(h.fake.calls_of("GET", rf"/channels/{thread}/messages")) == reads, "caught up: not read again"
