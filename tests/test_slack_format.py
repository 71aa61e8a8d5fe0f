"""What Slack users see of an answer: Markdown turned into mrkdwn (nothing the model writes can
ping a channel), long answers cut at readable places, and a stream shown as a few edits."""
from __future__ import annotations

from adapters.chat.markup import sources_text
from adapters.chat.streaming import StreamingReply, split_message
from adapters.slack.markup import SLACK, markdown_to_mrkdwn, slack_to_plain
from engine.types import Source


def test_markdown_becomes_mrkdwn():
    md = ("# Plan\nThis is **important** and *subtle*, ~~old~~, see [the docs](https://example.com/a?b=1).\n"
          "- one\n- two\n```python\nif a < b: print('**x**')\n```")
    assert markdown_to_mrkdwn(md).split("\n") == [
        "*Plan*",
        "This is *important* and _subtle_, ~old~, see <https://example.com/a?b=1|the docs>.",
        "• one", "• two", "```", "if a &lt; b: print('**x**')", "```"]


def test_model_text_cannot_ping_or_inject_links():
    out = markdown_to_mrkdwn("Hey <!channel> and <@U123> and <https://evil|click> & more")
    assert "<!" not in out and "<@" not in out and "<https://evil|" not in out
    assert "&lt;!channel&gt;" in out and "&amp; more" in out


def test_incoming_slack_text_reads_plainly():
    assert slack_to_plain("<@U0BOT> what about <#C1|general> &amp; <https://a.b|this>?", "U0BOT") == \
        "what about #general & this (https://a.b)?"


def test_sources_show_file_page_and_a_short_excerpt():
    text = sources_text((Source("report.pdf", 4, "The budget is 4.2 million euros. " * 20),
                         Source("notes.md", None, "")), SLACK)
    lines = text.split("\n")
    assert lines[0] == "*Sources*"
    assert lines[1].startswith("1. `report.pdf` p.4 — “The budget is 4.2 million euros.") and lines[1].endswith("…”")
    assert len(lines[1]) < 220 and lines[2] == "2. `notes.md`"


def test_long_text_is_split_between_paragraphs_and_keeps_code_fences_whole():
    paragraphs = [f"Paragraph {i}. " + "words " * 60 for i in range(30)]
    parts = split_message("\n\n".join(paragraphs), 3900, 3000)
    assert len(parts) >= 3 and all(len(p) <= 3900 for p in parts)
    assert all(p.rstrip().endswith("words") for p in parts), "cut at paragraph ends"
    assert " ".join(" ".join(parts).split()) == " ".join(" ".join(paragraphs).split())
    code = "```\n" + "\n".join(f"x{i} = {i}" for i in range(400)) + "\n```"
    parts = split_message(code, 1000)
    assert len(parts) > 1 and all(p.startswith("```") and p.endswith("```") for p in parts)


class RecordingTarget:
    """An AnswerTarget (adapters.chat.streaming) that keeps every text each message showed."""

    def __init__(self):
        self.messages: dict[int, list[str]] = {}
        self.deleted: list[int] = []

    async def post(self, text, feedback=None):
        handle = len(self.messages)
        self.messages[handle] = [text]
        return handle

    async def edit(self, handle, text, feedback=None):
        self.messages[handle].append(text)

    async def delete(self, handle):
        self.deleted.append(handle)


async def test_a_stream_is_shown_in_few_edits_and_continues_in_new_messages():
    now = [0.0]
    target = RecordingTarget()
    reply = StreamingReply(target, interval_s=1.0, limit=200, soft_limit=150, clock=lambda: now[0])
    await reply.open("Thinking…")
    for i in range(100):  # 100 deltas over 5 seconds
        now[0] += 0.05
        await reply.append(f"word{i} ")
    assert reply.edits <= 7, "at most about one edit per interval"
    final = " ".join(f"word{i}" for i in range(100))
    await reply.finish(final)
    shown = [history[-1] for handle, history in sorted(target.messages.items()) if handle not in target.deleted]
    assert len(shown) >= 3 and all(len(t) <= 200 for t in shown)
    assert " ".join(shown).split() == final.split()


async def test_answers_streaming_together_share_one_edit_budget():
    from adapters.chat.streaming import EditBudget

    now = [0.0]
    clock = lambda: now[0]  # noqa: E731
    budget = EditBudget(rate_per_s=1.0, burst=3, clock=clock)
    targets = [RecordingTarget() for _ in range(8)]
    replies = [StreamingReply(t, interval_s=1.0, limit=4000, clock=clock, budget=budget) for t in targets]
    for step in range(100):  # eight answers streaming together for 10 seconds
        now[0] += 0.1
        for reply in replies:
            await reply.append(f"w{step} ")
    posts_and_edits = sum(len(h) for t in targets for h in t.messages.values())
    assert posts_and_edits <= 3 + 10 + 1, "the platform sees about one write per second in all"
    for reply in replies:
        await reply.finish(reply.raw.strip())
    assert all(t.messages[0][-1] == " ".join(f"w{i}" for i in range(100)) for t in targets), "finals always go"
