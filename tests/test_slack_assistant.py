"""Slack's assistant side panel and the Home tab, through real slack-bolt (AsyncAssistant) and the
real Engine, against the fake Slack Web API."""
from __future__ import annotations

import pytest

from engine.config import AssistantConfig
from engine.types import Conversation, FileUpload, User
from test_slack import ADA, CHANNEL, GRACE, paced, slack_factory  # noqa: F401 - the fixture

pytestmark = pytest.mark.timeout(240)


async def open_panel(h, user: str = ADA, viewing: str = CHANNEL) -> tuple[str, str]:
    started = h.fake.assistant_thread_started(user=user, viewing=viewing)
    assert await h.send(started) == 200
    await h.settle()
    thread = started["event"]["assistant_thread"]
    return thread["channel_id"], thread["thread_ts"]


async def ask(h, dm: str, thread_ts: str, text: str, user: str = ADA) -> None:
    assert await h.send(h.fake.message(text, user=user, channel=dm, channel_type="im", thread_ts=thread_ts)) == 200
    await h.settle()


async def test_the_panel_greets_suggests_and_answers_with_status_title_and_streaming(slack_factory, monkeypatch,
                                                                                     loaded_model):
    paced(monkeypatch, loaded_model, 0.05)
    h = await slack_factory(slack={"native_streaming": True}, max_new_tokens=24)
    dm, thread_ts = await open_panel(h)

    [greeting] = h.fake.bot_messages(dm, thread_ts)
    assert greeting.text == AssistantConfig().greeting
    [prompts] = h.fake.prompts
    assert prompts["thread_ts"] == thread_ts
    titles = [p["title"] for p in prompts["prompts"]]
    assert "What documents can you use here?" in titles and len(titles) <= 4

    await ask(h, dm, thread_ts, "Write two sentences about the sea.")
    greeting_again, answer = h.fake.bot_messages(dm, thread_ts)
    assert answer.streamed and not answer.streaming and answer.text.strip()
    assert len(h.fake.calls_of("chat.appendStream")) >= 1 and not h.fake.calls_of("chat.update")
    first_text = min(c.at for c in h.fake.calls_of("chat.startStream"))
    statuses = [s for s in h.fake.statuses if s["thread_ts"] == thread_ts]
    assert statuses and statuses[0]["status"] == "is thinking…" and statuses[0]["at"] < first_text
    assert [t["title"] for t in h.fake.titles] == ["Write two sentences about the sea."]
    session = h.engine.sessions.get(f"slack/{h.fake.team_id}/{dm}/{thread_ts}")
    assert answer.text.startswith(session.turns[-1].text.strip()[:20])

    await ask(h, dm, thread_ts, "And one more about rivers.")
    assert len(h.fake.titles) == 1, "only the first message titles the thread"
    assert len(h.fake.bot_messages(dm, thread_ts)) == 3 and len(session.turns) + 2 == \
        len(h.engine.sessions.get(f"slack/{h.fake.team_id}/{dm}/{thread_ts}").turns)


@pytest.mark.slow
async def test_the_panel_answers_from_the_viewed_channels_documents_only(slack_factory):
    h = await slack_factory(knowledge=True, max_new_tokens=24)
    report = "The Zorblax project budget is 4.2 million euros, approved by Mira Patel in March."
    await h.engine.ingest(FileUpload(Conversation("slack", h.fake.team_id, "C0PRIVATE", ""), User(GRACE),
                                     "zorblax.txt", report.encode(), "text/plain"))
    dm, thread_ts = await open_panel(h, viewing="C0PRIVATE")
    await ask(h, dm, thread_ts, "What is the budget of the Zorblax project?")
    answer = h.fake.bot_messages(dm, thread_ts)[-1].text
    assert "zorblax.txt" in answer and "Sources" in answer, answer
    assert any(s["status"] == "is reading zorblax.txt…" for s in h.fake.statuses), h.fake.statuses

    # The user moves to another channel: its documents (none) are the panel's now, not C0PRIVATE's.
    moved = h.fake.assistant_context_changed(user=ADA, channel=dm, thread_ts=thread_ts, viewing=CHANNEL)
    assert await h.send(moved) == 200
    await h.settle()
    await ask(h, dm, thread_ts, "What does zorblax.txt say about the Zorblax project budget?")
    later = h.fake.bot_messages(dm, thread_ts)[-1].text
    assert "Sources" not in later, "C0PRIVATE's documents are no longer used (the thread's history still is)"

    # A panel opened while viewing another channel never reaches C0PRIVATE's documents.
    other_dm, other_ts = await open_panel(h, user=GRACE, viewing=CHANNEL)
    await ask(h, other_dm, other_ts, "What is the budget of the Zorblax project?", user=GRACE)
    elsewhere = h.fake.bot_messages(other_dm, other_ts)[-1].text
    assert "Sources" not in elsewhere and "4.2 million" not in elsewhere, elsewhere


async def test_the_documents_prompt_lists_the_viewed_channels_documents_without_the_model(slack_factory):
    h = await slack_factory(knowledge=True)
    await h.engine.ingest(FileUpload(Conversation("slack", h.fake.team_id, "C0PRIVATE", ""), User(GRACE),
                                     "zorblax.txt", b"The Zorblax budget is 4.2 million euros.", "text/plain"))
    dm, thread_ts = await open_panel(h, viewing="C0PRIVATE")
    [offered] = h.fake.prompts
    listing = next(p for p in offered["prompts"] if p["title"] == "What documents can you use here?")
    answers_before = (await h.engine.stats()).values["requests"]
    await ask(h, dm, thread_ts, listing["message"])  # what a click on the suggested prompt sends
    reply = h.fake.bot_messages(dm, thread_ts)[-1].text
    assert "zorblax.txt" in reply and "shared by" in reply, reply
    assert (await h.engine.stats()).values.get("requests") == answers_before, "listed, not asked of the model"

    elsewhere_dm, elsewhere_ts = await open_panel(h, user=GRACE, viewing="D0SOMEONE")  # viewing a DM
    await ask(h, elsewhere_dm, elsewhere_ts, listing["message"], user=GRACE)
    reply = h.fake.bot_messages(elsewhere_dm, elsewhere_ts)[-1].text
    assert "not looking at a channel" in reply and "zorblax" not in reply


async def test_the_home_tab_shows_the_live_model_and_admin_figures_only_to_admins(slack_factory):
    # Every figure is the operators' (Grace is one here); a workspace admin's: tests/test_authority.py.
    h = await slack_factory(operators={"slack": [GRACE]})
    await ask(h, "D0ADA", None, "Hi! What is 2 + 2?")  # some usage of Ada's today
    for user in (ADA, GRACE):
        assert await h.send(h.fake.home_opened(user=user)) == 200
    await h.settle()
    texts = {user: "\n".join(b.get("text", {}).get("text", "") for b in h.fake.views[user]["blocks"])
             for user in (ADA, GRACE)}
    assert all("`smollm2-135m`" in t for t in texts.values()), "the live model"
    assert "_You today_ 1 questions" in texts[ADA] and "questions left this minute" in texts[ADA]
    assert "For admins" not in texts[ADA] and "Memory" not in texts[ADA] and "Latency" not in texts[ADA]
    assert "For admins" in texts[GRACE] and "Memory" in texts[GRACE]

    stats = await h.command("/llm-stats", "", user=ADA)  # the short private summary, not a refusal
    assert "smollm2-135m" in stats[0] and "questions left this minute" in stats[0] and "Memory" not in stats[0]
    assert "Memory" in (await h.command("/llm-stats", "", user=GRACE))[0]
