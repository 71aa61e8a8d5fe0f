"""Native answer streaming on Slack (chat.startStream / appendStream / stopStream) through real
slack-bolt and the real Engine, against the fake Slack Web API; and the per-workspace fallback
to chat.update streaming where a workspace has no such methods."""
from __future__ import annotations

import asyncio

import pytest

from adapters.chat.markup import final_text
from adapters.slack.markup import SLACK, SLACK_MARKDOWN, markdown_to_mrkdwn
from engine.types import AnswerDone
from test_slack import ADA, CHANNEL, CURSOR, GRACE, paced, slack_factory  # noqa: F401 - the fixture

pytestmark = pytest.mark.timeout(240)


def stored_answer(h, channel: str, thread: str) -> str:
    return h.engine.sessions.get(f"slack/{h.fake.team_id}/{channel}/{thread}").turns[-1].text


def finals(h, channel: str, thread: str, markup) -> set[str]:
    """The final text of the thread's stored answer, as it ended (at its stop or its length limit)."""
    text = stored_answer(h, channel, thread)
    return {final_text(AnswerDone(text=text, finish_reason=reason, prompt_tokens=0, completion_tokens=0), markup)
            for reason in ("stop", "length")}


def feedback_buttons(message) -> list[dict]:
    return [e for b in message.blocks if b.get("type") == "context_actions" for e in b["elements"]
            if e.get("type") == "feedback_buttons"]


async def test_a_mention_streams_natively_and_ends_with_the_same_text(slack_factory, monkeypatch, loaded_model):
    paced(monkeypatch, loaded_model, 0.05)  # 30 tokens over 1.5 s: several appends at one per 0.2 s
    h = await slack_factory(slack={"native_streaming": True}, max_new_tokens=30)
    _, ts = await h.mention("Write three sentences about the sea.", user=ADA)

    [reply] = h.fake.bot_messages(CHANNEL, ts)
    assert reply.streamed and not reply.streaming, "streamed with chat.startStream and stopped"
    starts = h.fake.calls_of("chat.startStream")
    assert len(starts) == 1 and starts[0].params["recipient_user_id"] == ADA
    assert starts[0].params["recipient_team_id"] == h.fake.team_id
    assert len(h.fake.calls_of("chat.appendStream")) >= 2, reply.history
    for earlier, later in zip(reply.history, reply.history[1:]):
        assert later.startswith(earlier), "text is only ever appended"
    assert not h.fake.calls_of("chat.update"), "native streaming spends no chat.update"

    # The final text is the answer as the chat.update path shows it: the same words, Markdown that
    # converts to exactly the mrkdwn that path writes.
    assert reply.text in finals(h, CHANNEL, ts, SLACK_MARKDOWN)
    assert markdown_to_mrkdwn(reply.text) in finals(h, CHANNEL, ts, SLACK)
    [buttons] = feedback_buttons(reply)
    assert buttons["positive_button"]["value"].startswith("up:") and buttons["negative_button"]["value"].startswith("down:")
    statuses = [s["status"] for s in h.fake.statuses if s["thread_ts"] == ts]
    assert statuses[:1] == ["is thinking…"], "the thread's status line says so before the first words"


async def test_a_workspace_without_native_streaming_falls_back_once_and_remembers(slack_factory):
    h = await slack_factory(slack={"native_streaming": True})
    h.fake.unsupported.add("chat.startStream")  # an older Grid, GovSlack: Slack answers unknown_method
    bodies = [h.fake.mention(f"Question {i}: name a colour.", user=ADA) for i in range(3)]
    assert await asyncio.gather(*(h.send(b) for b in bodies)) == [200, 200, 200]
    await h.settle()
    _, later = await h.mention("And one more: name a fruit.", user=GRACE)

    assert len(h.fake.calls_of("chat.startStream")) == 1, "one failed chat.startStream, ever"
    for ts in [b["event"]["ts"] for b in bodies] + [later]:
        [reply] = h.fake.bot_messages(CHANNEL, ts)
        assert not reply.streamed and CURSOR not in reply.text and reply.text.strip()
        assert reply.text in finals(h, CHANNEL, ts, SLACK)
        assert feedback_buttons(reply), "the fallback's answers carry the buttons too"
    assert h.fake.calls_of("chat.update"), "streamed by editing instead"


async def test_long_native_answers_are_split_like_the_chat_update_path(slack_factory, monkeypatch):
    from adapters.chat.streaming import split_message
    from adapters.slack import app as slack_module

    monkeypatch.setattr(slack_module, "MESSAGE_LIMIT", 48)
    monkeypatch.setattr(slack_module, "MESSAGE_SOFT_LIMIT", 24)
    h = await slack_factory(slack={"native_streaming": True}, max_new_tokens=60)
    _, ts = await h.mention("Tell me a long story about a lighthouse keeper.", user=ADA)
    parts = h.fake.bot_messages(CHANNEL, ts)
    assert [p.text for p in parts] in [split_message(text, 48, 24) for text in finals(h, CHANNEL, ts, SLACK_MARKDOWN)]
    assert len(parts) >= 2 and all(p.streamed and not p.streaming for p in parts)
    assert feedback_buttons(parts[-1]) and not any(feedback_buttons(p) for p in parts[:-1])
    assert not h.fake.calls_of("chat.update")


@pytest.mark.slow
async def test_eight_answers_at_once_each_grow_every_two_seconds_without_chat_update(slack_factory, monkeypatch,
                                                                                     loaded_model):
    paced(monkeypatch, loaded_model, 0.1)  # each decode step at least 0.1 s, whatever the CPU
    h = await slack_factory(slack={"native_streaming": True}, max_new_tokens=40)
    bodies = [h.fake.mention(f"Question {i}: describe the colour {c}.", user=ADA)
              for i, c in enumerate(("red", "blue", "green", "gold", "grey", "pink", "teal", "plum"))]
    assert await asyncio.gather(*(h.send(b) for b in bodies)) == [200] * 8
    await h.settle()

    assert not h.fake.calls_of("chat.update"), "no chat.update spent"
    writes = {}
    for body in bodies:
        [reply] = h.fake.bot_messages(CHANNEL, body["event"]["ts"])
        assert reply.streamed and not reply.streaming and reply.text.strip()
        writes[reply.ts] = [c.at for c in h.fake.calls if c.params.get("ts") == reply.ts
                            and c.method in ("chat.appendStream", "chat.stopStream")]
        writes[reply.ts].insert(0, next(c.at for c in h.fake.calls if c.method == "chat.startStream"
                                        and c.params.get("thread_ts") == body["event"]["ts"]))
    # While all eight stream at once (the scheduler admitting newcomers is not streaming's doing):
    together = (max(w[0] for w in writes.values()), min(w[-1] for w in writes.values()))
    assert together[1] - together[0] > 1.0, "the answers overlapped"
    for ts, at in writes.items():
        inside = [t for t in at if together[0] <= t <= together[1]]
        gaps = [b - a for a, b in zip([together[0], *inside], [*inside, together[1]])]
        assert max(gaps) < 2.0, f"appended text at least every 2 s, gaps {gaps}"
