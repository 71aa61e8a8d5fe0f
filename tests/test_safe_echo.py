"""Safe echo: nothing Parley repeats can ping a channel or link elsewhere than http(s)/mailto.

Every Slack broadcast form (and Discord's) is put where Parley echoes others' text: the model's
answer (a fake OpenAI-compatible server whose output the test writes), a shared file's name (the
"Indexed" note, a failure quoting it, `/llm-docs`), a speaker's display name in a summary, words
quoted back by a command, a panel thread's title. Asserted on what the fake Slack Web API and the
fake Discord REST API received, through the real slack-bolt and discord.py paths: no mention, no
broadcast, no link to another scheme (Slack: no `<…>` but http(s)/mailto links; Discord: every
payload carries no allowed mentions and no mention form is left in the text).
"""
from __future__ import annotations

import json
import re

import pytest

from adapters.chat.markup import final_text, sources_text
from adapters.discord.text import DISCORD, thread_name
from adapters.slack.markup import SLACK, SLACK_MARKDOWN, defuse, guard, markdown_to_mrkdwn
from conftest import make_config
from engine.core import Engine
from engine.types import AnswerDone, Source
from ops_servers import FakeOpenAI
from test_discord import discord_factory, until  # noqa: F401 - the fixture is used by name
from test_slack import ADA, CHANNEL, GRACE, slack_factory  # noqa: F401 - the fixture is used by name

pytestmark = pytest.mark.timeout(300)

SLACK_FORMS = ["<!here>", "<!channel>", "<!everyone>", "<!subteam^S123>", "<@U123>", "<#C123>",
               "&lt;!here&gt;", "[x](!channel)", "[y](javascript:alert(1))"]
DISCORD_FORMS = ["@everyone", "@here", "<@123456>", "<@!123456>", "<@&654321>", "<#777777>",
                 "[x](javascript:alert(1))"]
ATTACK = " ".join(SLACK_FORMS + DISCORD_FORMS)
ANSWER = f"Sure. {ATTACK} and [the docs](https://example.com/docs) end."
MALLORY = "U0MAL"
NASTY = "Mal <!channel> [x](!here) @everyone <@&654321>"  # a display name anybody can choose

# ---- what counts as live -----------------------------------------------------------------------

_SLACK_LINK = re.compile(r"<(?:https?://|mailto:)[^<>|\s]+(?:\|[^<>]*)?>", re.IGNORECASE)
_MD_LIVE = re.compile(r"(?i)(?:<|&lt;)(?:!(?:here|channel|everyone|subteam)|[@#][a-z0-9])")
_MD_BAD_TARGET = re.compile(r"\]\(\s*(?!https?://|mailto:|\u2060)[^)\s]")
_DISCORD_LIVE = re.compile(r"(?i)@(?:everyone|here)|<@[!&]?\d|<#\d")


def slack_live(text: str) -> list[str]:
    """The control sequences a mrkdwn text would act on, but for links to http(s) and mailto."""
    rest = _SLACK_LINK.sub("", text)
    return re.findall(r"<[^>]*>?", rest) + re.findall(r">", rest)


def markdown_live(text: str) -> list[str]:
    return _MD_LIVE.findall(text) + _MD_BAD_TARGET.findall(text)


def discord_live(text: str) -> list[str]:
    return _DISCORD_LIVE.findall(text)


# ---- the renderers, one rule each ----------------------------------------------------------------

def test_slack_mrkdwn_escapes_every_form_and_links_only_http_and_mailto():
    out = markdown_to_mrkdwn(ANSWER)
    assert not slack_live(out), out
    assert "&lt;!here&gt;" in out and "&lt;!subteam^S123&gt;" in out and "&amp;lt;!here&amp;gt;" in out
    assert "x (!channel)" in out and "y (javascript:alert(1))" in out, "other schemes are shown as text"
    assert "<https://example.com/docs|the docs>" in out and "[" not in out.split("the docs>")[0][-12:]
    assert guard(out) == out, "the guard leaves what the renderer wrote alone"
    for form in SLACK_FORMS:  # the guard alone (a reply that forgot to escape) neutralises them too
        assert not slack_live(guard(f"I couldn't index {form}.txt")), form
    sources = sources_text([Source(f"{ATTACK}.pdf", 2, f"Quoted: {ATTACK}")], SLACK)
    assert not slack_live(sources), sources


def test_native_stream_markdown_is_defused_and_stays_a_prefix():
    text = defuse(ANSWER)
    assert not markdown_live(text), markdown_live(text)
    assert text.replace("\u2060", "") == ANSWER, "only invisible joiners are added"
    assert "[the docs](https://example.com/docs)" in text
    for i in range(len(ANSWER) + 1):  # a stream only ever appends
        assert text.startswith(defuse(ANSWER[:i])), ANSWER[:i]
    assert defuse(text) == text
    final = final_text(AnswerDone(text=ANSWER, finish_reason="stop", prompt_tokens=0, completion_tokens=0,
                                  sources=(Source(f"{ATTACK}.txt", None, ATTACK),)), SLACK_MARKDOWN)
    assert not markdown_live(SLACK_MARKDOWN.guard(final))


def test_discord_markdown_breaks_every_mention_and_odd_links():
    out = DISCORD.render(ANSWER)
    assert not discord_live(out), discord_live(out)
    assert "@everyone @here <@123456> <@!123456> <@&654321> <#777777>" in out.replace("\u200b", ""), \
        "still readable: a zero-width space only"
    assert "x (javascript:alert(1))" in out and "[the docs](https://example.com/docs)" in out
    assert DISCORD.guard(out) == out
    assert not discord_live(DISCORD.literal(NASTY)) and not discord_live(thread_name(f"{ATTACK} hello"))


# ---- Slack, end to end --------------------------------------------------------------------------

async def remote_engine(tmp_path, server: FakeOpenAI, **knowledge) -> Engine:
    entry = {"name": "remote", "source": "openai_compatible", "base_url": server.base_url, "api_model": "m",
             "context_window": 8192, "generation": {"temperature": 0.0, "max_new_tokens": 400}}
    config = make_config(tmp_path / "data", models=[entry], default_model="remote",
                         knowledge={"enabled": bool(knowledge), **knowledge})
    engine = Engine(config, model_loader=lambda cfg: pytest.fail("a remote model is never loaded"))
    await engine.start()
    return engine


@pytest.fixture
async def model_server():
    server = await FakeOpenAI().start()
    server.reply = ANSWER
    yield server
    await server.stop()


@pytest.fixture
async def engines():
    started: list[Engine] = []
    yield started
    for engine in started:
        if engine.state == "ready":
            await engine.stop()


def slack_sent(fake) -> list[tuple[str, str]]:
    """(markup, text) of everything Parley sent Slack: message texts and their blocks' mrkdwn,
    ephemeral and response_url texts, streamed Markdown, thread titles."""
    sent = []
    for call in fake.calls:
        p = call.params
        if call.method in ("chat.postMessage", "chat.update", "chat.postEphemeral"):
            sent.append(("mrkdwn", p.get("text") or ""))
            blocks = json.loads(p["blocks"]) if isinstance(p.get("blocks"), str) else p.get("blocks") or []
            sent += [("mrkdwn", b["text"]["text"]) for b in blocks
                     if b.get("type") == "section" and b.get("text", {}).get("type") == "mrkdwn"]
        elif call.method.startswith("chat.") and call.method.endswith("Stream"):
            sent.append(("markdown", p.get("markdown_text") or ""))
        elif call.method == "assistant.threads.setTitle":
            sent.append(("markdown", p.get("title") or ""))
    sent += [("mrkdwn", r.get("text") or "") for r in fake.responses]
    for message in fake.messages.values():  # a stream's text as it stood after each call
        if message.user == fake.bot_user_id and message.streamed:
            sent += [("markdown", t) for t in message.history]
    return sent


def assert_slack_safe(fake) -> None:
    sent = slack_sent(fake)
    assert sent, "Parley said something"
    for markup, text in sent:
        live = slack_live(text) if markup == "mrkdwn" else markdown_live(text)
        assert not live, f"live {live} in {markup}: {text!r}"


async def test_slack_model_output_cannot_ping_whether_edited_or_streamed(slack_factory, model_server, engines,
                                                                         tmp_path):
    engine = await remote_engine(tmp_path, model_server)
    engines.append(engine)
    h = await slack_factory(engine=engine)
    _, ts = await h.mention("Say something nasty.", user=ADA)
    [answer] = h.fake.bot_messages(CHANNEL, ts)
    assert "&lt;!channel&gt;" in answer.text and "x (!channel)" in answer.text, answer.text
    assert "<https://example.com/docs|the docs>" in answer.text, "an http link stays a link"
    assert len(answer.history) >= 2, "streamed in edits: each of them was checked"

    native = await slack_factory(engine=engine, slack={"native_streaming": True})
    _, ts = await native.mention("Say it again.", user=ADA)
    [streamed] = native.fake.bot_messages(CHANNEL, ts)
    assert streamed.streamed and "[the docs](https://example.com/docs)" in streamed.text
    assert streamed.text.replace("\u2060", "").startswith("Sure. <!here> <!channel>")
    for h_ in (h, native):
        assert_slack_safe(h_.fake)


@pytest.mark.slow
async def test_slack_file_and_document_names_cannot_ping(slack_factory, model_server, engines, tmp_path):
    engine = await remote_engine(tmp_path, model_server, max_file_mb=0.002)  # 2 KB
    engines.append(engine)
    h = await slack_factory(engine=engine, knowledge=True)
    name = " ".join(SLACK_FORMS) + ".txt"  # a name is at most 200 characters
    share_ts = h.fake.next_ts()
    small = h.fake.add_file(name, b"The launch is on Tuesday at the harbour.", "text/plain", channel=CHANNEL,
                            ts=share_ts, user=ADA)
    assert await h.send(h.fake.message("", user=ADA, ts=share_ts, subtype="file_share", files=[small])) == 200
    big_ts = h.fake.next_ts()
    big = h.fake.add_file("big " + name, b"x" * 4096, "text/plain", channel=CHANNEL, ts=big_ts, user=ADA)
    assert await h.send(h.fake.message("", user=ADA, ts=big_ts, subtype="file_share", files=[big])) == 200
    await h.settle()

    [indexed] = h.fake.bot_messages(CHANNEL, share_ts)
    assert indexed.text.startswith("Indexed `&lt;!here&gt; &lt;!channel&gt;"), indexed.text
    [refused] = h.fake.bot_messages(CHANNEL, big_ts)
    assert "FILE_TOO_LARGE" in refused.text and "big &lt;!here&gt;" in refused.text.split("FILE_TOO_LARGE")[0]

    listed = await h.command("/llm-docs", "", ADA)
    assert "&lt;!everyone&gt;" in listed[0] and "&lt;@U123&gt;" in listed[0], listed
    forgot = await h.command("/llm-docs", "forget <!here> <@U123> [x](!channel)", ADA)
    assert forgot and "&lt;!here&gt;" in forgot[0], forgot
    config = await h.command("/llm-config", "<!channel> <!subteam^S123> on", GRACE)
    window = await h.command("/llm-summarize", "<!everyone> [x](!channel)", ADA)
    assert config and window and "Usage" in window[0]
    assert_slack_safe(h.fake)


async def test_slack_summary_speakers_and_points_cannot_ping(slack_factory, model_server, engines, tmp_path):
    engine = await remote_engine(tmp_path, model_server)
    engines.append(engine)
    h = await slack_factory(engine=engine)
    h.fake.add_user(MALLORY, NASTY)
    root = h.fake.add_message("Planning the offsite.", user=MALLORY)
    picked = h.fake.add_message("I'll book Lisbon.", user=ADA, thread_ts=root.ts)
    body, _ = h.fake.shortcut("summarize_thread", picked, user=GRACE)
    assert await h.send(body) == 200
    await h.settle()
    [summary] = h.fake.bot_messages(CHANNEL, root.ts)
    assert summary.text.startswith("*Summary of this thread* (2 messages from ")
    assert "Mal &lt;!channel&gt; [x](!here)" in summary.text, "the name shown as its owner wrote it"
    assert_slack_safe(h.fake)


async def test_slack_panel_title_cannot_ping(slack_factory, model_server, engines, tmp_path):
    engine = await remote_engine(tmp_path, model_server)
    engines.append(engine)
    h = await slack_factory(engine=engine)
    started = h.fake.assistant_thread_started(user=ADA)
    assert await h.send(started) == 200
    await h.settle()
    thread = started["event"]["assistant_thread"]
    # "@here" as Slack sends it, then a literal <!channel> typed by the user (Slack escapes it).
    body = h.fake.message("<!here> look &lt;!channel&gt; <@U123>", user=ADA, channel=thread["channel_id"],
                          thread_ts=thread["thread_ts"], channel_type="im")
    assert await h.send(body) == 200
    await h.settle()
    [title] = h.fake.titles
    assert title["title"].replace("\u2060", "") == "@here look <!channel> @U123"
    assert_slack_safe(h.fake)


# ---- Discord, end to end ----------------------------------------------------------------------

def discord_sent(fake) -> list[tuple[str, dict | None]]:
    """(content, allowed_mentions) of every message Parley created or edited, every interaction
    reply and follow-up, and each thread it named."""
    sent = []
    for call in fake.calls:
        body = call.json if isinstance(call.json, dict) else {}
        if call.method == "POST" and call.path.endswith("/threads"):
            sent.append((body.get("name") or "", {"parse": []}))  # a name mentions no one; checked as text
        elif call.method == "POST" and call.path.endswith("/callback"):
            data = body.get("data") or {}
            if "content" in data:
                sent.append((data.get("content") or "", data.get("allowed_mentions")))
        elif call.method in ("POST", "PATCH") and "content" in body:
            sent.append((body.get("content") or "", body.get("allowed_mentions")))
    return sent


def assert_discord_safe(fake) -> None:
    sent = discord_sent(fake)
    assert sent, "Parley said something"
    for content, allowed in sent:
        assert not discord_live(content), f"live {discord_live(content)} in {content!r}"
        assert allowed is not None and allowed.get("parse") == [] and not allowed.get("users") \
            and not allowed.get("roles") and not allowed.get("replied_user"), (content, allowed)


@pytest.mark.slow
async def test_discord_answers_names_and_replies_cannot_ping(discord_factory, model_server, engines, tmp_path):
    engine = await remote_engine(tmp_path, model_server, max_file_mb=0.002)
    engines.append(engine)
    h = await discord_factory(engine=engine, knowledge=True)
    name = " ".join(DISCORD_FORMS) + ".txt"
    small = h.fake.add_file(h.general, name, b"The launch is on Tuesday at the harbour.", "text/plain")
    big = h.fake.add_file(h.general, "big " + name, b"x" * 4096, "text/plain")
    _, thread = await h.mention("@everyone what did <@&654321> say?", attachments=[small, big])
    texts = [m.text for m in h.fake.bot_messages(thread)]
    assert any(t.startswith("Indexed `") for t in texts) and any("FILE_TOO_LARGE" in t for t in texts), texts
    assert "[the docs](https://example.com/docs)" in texts[-1] and "@\u200beveryone" in texts[-1]

    listed = await h.slash("ada", "llm-docs")
    assert "@\u200beveryone" in listed[0], listed
    forgot = await h.slash("ada", "llm-docs", {"action": "forget", "name": "@here <@123456>"})
    assert forgot, forgot

    mallory = h.fake.add_user(NASTY)
    h.fake.add_member(h.guild, mallory)
    h.people["mallory"] = mallory
    await h.say(h.general, "mallory", "The budget is fine.")
    await h.say(h.general, "ada", "summarize", mention=True)
    summary = h.fake.bot_messages(h.general)[-1].text
    assert "Summary of" in summary and "Mal" in summary, summary
    assert_discord_safe(h.fake)
