"""Conversations, not messages, through the real Slack adapter (slack-bolt in HTTP mode, the fake
Slack on loopback): who said what reaches the model, and a thread Parley joins midway is read.
Assertions are on the prompt the engine sent the model, never on the tiny model's wording."""
from __future__ import annotations

import pytest

from conftest import spy_prompts
from test_slack import ADA, CHANNEL, GRACE, LIN, slack_factory  # noqa: F401 - the fixture is used by name

pytestmark = pytest.mark.timeout(240)


async def test_each_person_in_a_thread_is_named_in_the_prompt(slack_factory):
    h = await slack_factory()
    prompts = spy_prompts(h.engine)
    _, ts = await h.mention("The launch moved to Tuesday.", user=ADA)
    assert await h.send(h.fake.message("Who moved the launch?", user=GRACE, thread_ts=ts)) == 200
    await h.settle()
    assert len(h.fake.bot_messages(CHANNEL, ts)) == 2
    first, second = prompts
    assert first[-1]["content"] == "The launch moved to Tuesday.", "one person alone: no names"
    people = [m["content"] for m in second if m["role"] == "user"]
    assert people == ["Ada: The launch moved to Tuesday.", "Grace: Who moved the launch?"]


async def test_mentioned_midway_parley_reads_the_thread_with_who_said_what(slack_factory, monkeypatch):
    from adapters.slack import history

    monkeypatch.setattr(history, "PAGE_SIZE", 2)  # the thread comes in pages, as a long one does
    h = await slack_factory()
    prompts = spy_prompts(h.engine)
    root = h.fake.add_message("Planning the team offsite.", user=ADA)
    h.fake.add_message("The offsite budget is 12,000 euros.", user=GRACE, thread_ts=root.ts)
    h.fake.add_message("", user=LIN, thread_ts=root.ts, files=[{"id": "F0AG", "name": "agenda.pdf"}])
    h.fake.add_message("Deploy finished", user=None, thread_ts=root.ts, bot_id="B0CI", username="CI")
    _, ts = await h.mention("What do you make of the above?", user=ADA, thread_ts=root.ts)

    reads = [c.params for c in h.fake.calls_of("conversations.replies")]
    assert len(reads) >= 2 and all(r["ts"] == root.ts and r["channel"] == CHANNEL for r in reads), reads
    assert len(h.fake.bot_messages(CHANNEL, root.ts)) == 1, "answered in the thread"
    [prompt] = prompts
    assert [m["content"] for m in prompt if m["role"] == "user"] == [
        "Ada: Planning the team offsite.", "Grace: The offsite budget is 12,000 euros.",
        "[Lin shared agenda.pdf]", "[CI (a bot) said: Deploy finished]", "Ada: What do you make of the above?"]

    # The thread is Parley's now: the next message continues its session without reading it again.
    assert await h.send(h.fake.message("And the budget?", user=GRACE, thread_ts=root.ts)) == 200
    await h.settle()
    assert len(h.fake.calls_of("conversations.replies")) == len(reads)
    later = [m["content"] for m in prompts[1]]
    assert "Grace: The offsite budget is 12,000 euros." in later and later[-1] == "Grace: And the budget?"
    assert ts != root.ts


async def test_parleys_earlier_answers_are_its_own_turns(slack_factory):
    h = await slack_factory()
    prompts = spy_prompts(h.engine)
    root = h.fake.add_message("Which room for the demo?", user=ADA)
    h.fake.add_message("Room 4 is free on Friday.", user=h.fake.bot_user_id, thread_ts=root.ts, bot_id=h.fake.bot_id)
    h.fake.add_message("_Thinking…_", user=h.fake.bot_user_id, thread_ts=root.ts, bot_id=h.fake.bot_id)
    await h.mention("Is it big enough?", user=GRACE, thread_ts=root.ts)
    roles = [(m["role"], m["content"]) for m in prompts[0][1:]]
    assert roles == [("user", "Ada: Which room for the demo?"), ("assistant", "Room 4 is free on Friday."),
                     ("user", "Grace: Is it big enough?")]


async def test_a_thread_past_the_context_window_keeps_the_newest_messages_whole(slack_factory):
    h = await slack_factory()
    prompts = spy_prompts(h.engine)
    root = h.fake.add_message("Status thread.", user=ADA)
    said = []
    for i in range(40):
        text = f"Update {i} from the field team. " + "The numbers look fine today. " * 12
        h.fake.add_message(text, user=(ADA, GRACE, LIN)[i % 3], thread_ts=root.ts)
        said.append(text.strip())
    await h.mention("Summarise the updates.", user=ADA, thread_ts=root.ts)
    [prompt] = prompts
    assert len(h.fake.bot_messages(CHANNEL, root.ts)) == 1
    kept = [m["content"].split(": ", 1)[1] for m in prompt[1:-1]]
    assert kept and kept == said[-len(kept):], "the newest messages, each one whole"
    assert len(kept) < len(said) and "older messages not shown" in prompt[0]["content"]
    ids = h.engine.lineup.live.encode_chat(prompt)
    assert len(ids) + 20 <= 2048


async def test_a_thread_parley_holds_reads_what_it_missed_while_it_was_down(slack_factory):
    from adapters.slack import SlackAdapter
    from test_slack import Harness

    h = await slack_factory()
    prompts = spy_prompts(h.engine)
    root = h.fake.add_message("Planning the team offsite.", user=ADA)
    await h.mention("Where should we go?", user=ADA, thread_ts=root.ts)
    assert len(h.fake.bot_messages(CHANNEL, root.ts)) == 1
    await h.adapter.close(grace_s=1)

    # While Parley is down, people talk on in its thread; it gets no events for that.
    h.fake.add_message("Lisbon has the best flights.", user=GRACE, thread_ts=root.ts)
    h.fake.add_message("And it is cheaper in May.", user=LIN, thread_ts=root.ts)
    adapter = SlackAdapter(h.engine, h.adapter.config, bot_token=h.fake.bot_token,
                           signing_secret=h.fake.signing_secret, api_url=h.fake.api_url)
    await adapter.start("127.0.0.1", 0)
    try:
        h2 = Harness(h.fake, adapter, h.engine)
        reads = len(h.fake.calls_of("conversations.replies"))
        assert await h2.send(h.fake.message("So, which city?", user=ADA, thread_ts=root.ts)) == 200
        await h2.settle()
        assert len(h.fake.calls_of("conversations.replies")) > reads, "the thread was read again after the restart"
        people = [m["content"] for m in prompts[-1] if m["role"] == "user"]
        assert people[-3:] == ["Grace: Lisbon has the best flights.", "Lin: And it is cheaper in May.",
                               "Ada: So, which city?"], "the missed messages, in order, before the new one"
        assert people.count("Ada: Planning the team offsite.") == 1, "what the session held is not repeated"

        # Once caught up, the next message does not read the thread again.
        reads = len(h.fake.calls_of("conversations.replies"))
        assert await h2.send(h.fake.message("Thanks!", user=ADA, thread_ts=root.ts)) == 200
        await h2.settle()
        assert len(h.fake.calls_of("conversations.replies")) == reads
    finally:
        await adapter.close(grace_s=1)


async def test_new_or_llm_new_in_a_dm_starts_a_fresh_conversation(slack_factory):
    h = await slack_factory()
    prompts = spy_prompts(h.engine)
    dm = "D0ADA"

    async def dm_say(text: str) -> None:
        assert await h.send(h.fake.message(text, user=ADA, channel=dm, channel_type="im")) == 200
        await h.settle()

    await dm_say("My name is Ada and I like tea.")
    await dm_say("What do I like?")
    assert "My name is Ada and I like tea." in [m["content"] for m in prompts[-1]]
    await dm_say("new")
    assert h.fake.bot_messages(dm, None)[-1].text.startswith("Fresh start")
    await dm_say("What do I like?")
    assert [m["content"] for m in prompts[-1] if m["role"] != "system"] == ["What do I like?"], \
        "the model no longer sees the old turns"
    assert h.turns("dm", channel=dm) == 4, "the old conversation stays in the store"

    await dm_say("I prefer coffee now.")
    body, key = h.fake.command("/llm-new", "", user=ADA, channel=dm)
    assert await h.send(body) == 200
    await h.settle()
    assert h.fake.responses_for(key)[0]["text"].startswith("Fresh start")
    await dm_say("What do I prefer?")
    assert [m["content"] for m in prompts[-1] if m["role"] != "system"] == ["What do I prefer?"]
    body, key = h.fake.command("/llm-new", "", user=ADA)  # in a channel there is nothing to reset
    assert await h.send(body) == 200
    await h.settle()
    assert "DM" in h.fake.responses_for(key)[0]["text"]
