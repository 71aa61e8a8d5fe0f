"""Admission before cost (issue 22): what a member can make Parley spend is checked before it is
spent. Through the real Slack adapter (slack-bolt, HTTP mode, tests/fake_slack.py) and the real
discord.py client (tests/fake_discord.py), on the real model. Asserted: which requests ran, what
the asker was told, and what Parley asked of Slack or Discord (history pages, users.info) and of
the model; never the tiny model's wording."""
from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from conftest import make_config, spy_prompts
from engine.config import LimitsConfig
from engine.errors import ParleyError
from engine.limits import MemoryBuckets, RateLimiter, RedisBuckets
from engine.summaries import MAX_POINTS, SUMMARISE, Summariser, said_line
from engine.types import Conversation, SaidMessage, User
from ops_servers import redis_server
from test_discord import discord_factory, until  # noqa: F401 - the fixture is used by name
from test_slack import ADA, CHANNEL, GRACE, LIN, paced, slack_factory  # noqa: F401 - the fixture is used by name
from test_summaries import said_lines, spy_calls

pytestmark = pytest.mark.timeout(300)

SPEAKERS = ((ADA, "Ada"), (GRACE, "Grace"), (LIN, "Lin"))
ALREADY = "I'm already summarising for you — wait for that one."


def note(i: int) -> str:
    return f"ok {i}"  # short: a 2,000-message channel is a few model calls on a busy CPU


def fill(fake, count: int, span_s: float = 3600.0) -> None:
    """`count` short messages in the channel, oldest first, spread over the last `span_s` seconds."""
    start = time.time() - span_s - 60
    for i in range(count):
        fake.add_message(note(i), user=SPEAKERS[i % 3][0], at=start + i * span_s / count)


async def summarize_at_once(h, texts: list[str], user: str = ADA) -> list[list[str]]:
    """/llm-summarize with each of `texts`, all sent at once by `user`; each one's replies."""
    commands = [h.fake.command("/llm-summarize", text, user=user) for text in texts]
    assert await asyncio.gather(*(h.send(body) for body, _ in commands)) == [200] * len(texts)
    await h.settle()
    return [[r["text"] for r in h.fake.responses_for(key)] for _, key in commands]


# ---- the summary buckets ---------------------------------------------------------------------

async def test_a_repeated_summary_attempt_spends_none_of_the_askers_units(engine_factory, tmp_path):
    """'Already summarising' is decided before a unit is taken: retrying while one runs costs nothing."""
    engine = await engine_factory(make_config(tmp_path / "data", limits={"user_per_minute": 2}))
    where = Conversation("slack", "T1", "C1", "1.0")
    ada = User("U1", "Ada")
    async with engine.summarizing(where, ada):
        for _ in range(5):
            with pytest.raises(ParleyError) as refused:
                async with engine.summarizing(where, ada):
                    pass
            assert ALREADY in refused.value.user_message
    async with engine.summarizing(where, ada):  # the second of her two units: the refusals took none
        pass


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_summary_calls_are_taken_all_or_none_and_a_begun_one_finishes(backend, tmp_path):
    here = Conversation("slack", "T1", "C1", "")
    ada, bob = User("U1"), User("U2")
    config = LimitsConfig(summary_calls_per_hour=5, backend=backend)
    with redis_server(tmp_path / "redis") if backend == "redis" else contextlib.nullcontext("") as url:
        def limiter() -> RateLimiter:  # with Redis, each one is another bot process
            return RateLimiter(config, RedisBuckets.from_url(url, "test:") if url else shared)

        shared = MemoryBuckets()
        one, two = limiter(), limiter()
        await one.check_summary(here, ada)  # a call left: nothing taken
        await one.charge_summary(here, ada, 4)
        with pytest.raises(ParleyError) as refused:
            await two.charge_summary(here, ada, 2)
        assert "needs 2 model calls and your summaries have 1 left (5 an hour)" in refused.value.user_message
        with pytest.raises(ParleyError) as too_big:
            await two.charge_summary(here, bob, 6)
        assert "more than your summaries may use (5 an hour)" in too_big.value.user_message
        await two.charge_summary(here, ada, 3, force=True)  # a combining round begun: paid past the size
        with pytest.raises(ParleyError) as spent:
            await one.check_summary(here, ada)
        assert spent.value.limit == "summary" and "Try again in" in spent.value.user_message
        await one.check_summary(here, bob)  # bob's own calls are untouched
        await one.close()
        if url:
            await two.close()


# ---- Slack -----------------------------------------------------------------------------------

async def test_ten_summaries_at_once_one_runs_and_the_history_is_read_once(slack_factory):
    # One page of history (200 messages) a summary: the model's part stays one call on a busy CPU.
    h = await slack_factory(max_new_tokens=8, summaries={"max_history_pages": 1})
    calls = spy_calls(h.engine)
    fill(h.fake, 2000)

    replies = await summarize_at_once(h, ["744 limit 2000"] * 10)
    ran = [r for r in replies if r[-1].startswith("*Summary of the last 744 hours* (200 messages from ")]
    refused = [r for r in replies if r not in ran]
    assert len(ran) == 1 and len(refused) == 9, replies
    assert "I read only the newest 200 messages: a summary reads at most 1 page of history." in ran[0][-1]
    for texts in refused:  # each told once, politely, and nothing else
        assert len(texts) == 1 and ALREADY in texts[0] and "RATE_LIMITED" in texts[0], texts
    assert len(h.fake.calls_of("conversations.history")) == 1, "the history read once, by the one that ran"
    assert len(calls) == 1
    figures = (await h.engine.stats()).values
    assert figures["rate_limited_by"] == {"summary_running": 9}

    # Once it is done, the member may ask again.
    again = await summarize_at_once(h, ["limit 3"])
    assert again[0][-1].startswith("*Summary of the last 24 hours* (3 messages")


async def test_the_page_budget_leaves_out_thread_replies_and_says_so(slack_factory):
    h = await slack_factory(max_new_tokens=8, summaries={"max_history_pages": 2})
    prompts = spy_prompts(h.engine)
    fill(h.fake, 60)
    now = time.time()
    roots = [h.fake.add_message(f"Thread {t}?", user=LIN, at=now - 50 + t) for t in range(3)]
    for t, root in enumerate(roots):
        for r in range(4):
            h.fake.add_message(f"reply {t}.{r}", user=GRACE, thread_ts=root.ts, at=now - 40 + t * 5 + r)

    [texts] = await summarize_at_once(h, [""])
    summary = texts[-1]
    assert summary.startswith("*Summary of the last 24 hours* (67 messages"), texts  # 63 top, the newest thread's 4
    assert "I left out replies in 2 threads: a summary reads at most 2 pages of history." in summary
    assert len(h.fake.calls_of("conversations.history")) == 1 and len(h.fake.calls_of("conversations.replies")) == 1
    read = [line for p in prompts for line in said_lines(p)]
    assert "Grace: reply 2.0" in read and "Grace: reply 0.0" not in read, "the newest thread's replies, oldest first"


@pytest.mark.slow
async def test_the_summary_call_bucket_refuses_a_second_big_summary(slack_factory):
    count = 500
    probe = await slack_factory(max_new_tokens=8)  # how many parts the first round takes, on this tokenizer
    lines = [said_line(SaidMessage(SPEAKERS[i % 3][1], note(i))) for i in range(count)]
    parts = len(Summariser(probe.engine.lineup.live).pack(lines, SUMMARISE.format(n=MAX_POINTS)))
    assert parts >= 2
    # Exactly the first round's calls an hour: the first summary fits, its combining call goes past it.
    h = await slack_factory(max_new_tokens=8, limits={"summary_calls_per_hour": parts})
    calls = spy_calls(h.engine)
    fill(h.fake, count)

    [first] = await summarize_at_once(h, [f"limit {count}"])
    assert first[-1].startswith(f"*Summary of the last 24 hours* ({count} messages"), first
    assert len(calls) > parts, "its parts, then the call that combines them"
    spent = len(calls)
    pages = len(h.fake.calls_of("conversations.history"))

    [second] = await summarize_at_once(h, [f"limit {count}"])
    assert len(second) == 1 and "RATE_LIMITED" in second[0], second
    assert f"Your summaries have used their model calls for now ({parts} an hour). Try again in" in second[0]
    assert len(calls) == spent, "no model call"
    assert len(h.fake.calls_of("conversations.history")) == pages, "refused before anything was read"

    [other] = await summarize_at_once(h, ["limit 5"], user=GRACE)  # another member has calls of her own
    assert other[-1].startswith("*Summary of the last 24 hours* (5 messages")


async def test_a_rate_limited_mention_costs_no_profile_or_history_read(slack_factory):
    h = await slack_factory(limits={"workspace_per_minute": 1})
    root = h.fake.add_message("Who has the keys?", user=LIN)
    h.fake.add_message("Grace had them yesterday.", user=GRACE, thread_ts=root.ts)
    _, asked = await h.mention("What is the capital of France?", user=GRACE)  # the workspace's one a minute
    assert h.fake.bot_messages(CHANNEL, asked)
    spent = {m: len(h.fake.calls_of(m)) for m in ("users.info", "conversations.replies", "conversations.info",
                                                   "chat.postMessage")}

    # A mention in a thread Parley has not read yet: answered, it would read the thread and who wrote it.
    await h.mention("Where are the keys now?", user=ADA, thread_ts=root.ts)
    [told] = [e for e in h.fake.ephemerals if e["user"] == ADA]
    assert "This workspace is asking more than I can take" in told["text"] and "RATE_LIMITED" in told["text"]
    assert not [c for c in h.fake.calls_of("users.info") if c.params.get("user") == ADA]
    assert {m: len(h.fake.calls_of(m)) for m in spent} == spent, "nothing read, nothing posted"
    assert (await h.engine.stats()).values["rate_limited_by"] == {"workspace": 1}, "refused once, counted once"


async def test_past_the_task_bound_a_mention_hears_parley_is_busy(slack_factory, loaded_model, monkeypatch):
    paced(monkeypatch, loaded_model, 0.1)  # the first answer takes a couple of seconds
    h = await slack_factory(limits={"tasks_in_flight": 1})
    first = h.fake.mention("Tell me about the sea.", user=GRACE)
    assert await h.send(first) == 200
    await until(lambda: h.adapter.tasks.in_flight == 1, what="the first mention taken in hand")
    second = h.fake.mention("And the mountains?", user=ADA)
    again = h.fake.mention("Hello? The mountains?", user=ADA)
    assert await h.send(second) == 200 and await h.send(again) == 200
    # Work nobody waits on a reply for is bounded too: a flood of Home tab opens or file shares
    # past the bound is dropped, not queued.
    assert await h.send(h.fake.home_opened(user=ADA)) == 200
    assert await h.send(h.fake.event_body({"type": "file_shared", "file_id": "F0FLOOD", "user_id": ADA,
                                           "channel_id": CHANNEL})) == 200
    assert h.adapter.tasks.in_flight == 1, "the first answer was still in hand"
    await h.settle()

    assert [e["text"] for e in h.fake.ephemerals if e["user"] == ADA] == ["I'm busy — try again in a minute."]
    assert h.fake.bot_messages(CHANNEL, first["event"]["ts"]), "the work in hand goes on"
    assert not h.fake.bot_messages(CHANNEL, second["event"]["ts"]) and h.adapter.tasks.refused == 4
    assert not h.fake.calls_of("views.publish") and not h.fake.calls_of("files.info")
    _, later = await h.mention("And the mountains, now?", user=ADA)  # room again: served
    assert h.fake.bot_messages(CHANNEL, later)


# ---- Discord ---------------------------------------------------------------------------------

async def final_text(interaction) -> str:
    """The interaction's last edit, once it is no longer a progress line."""
    def final() -> bool:
        return any(r["kind"] == "edit" and "…" not in (r["content"] or "") for r in interaction.replies)

    await until(final, timeout=180, what="the interaction's final text")
    assert all(r["ephemeral"] for r in interaction.replies), interaction.replies
    return [r["content"] for r in interaction.replies if r["kind"] == "edit"][-1]


async def test_discord_two_summaries_at_once_one_reads_its_page_budget(discord_factory):
    h = await discord_factory(summaries={"max_history_pages": 2})
    h.fake.add_history(h.general, h.people["grace"], [note(i) for i in range(250)])
    history = rf"/channels/{h.general}/messages"
    asked = await asyncio.gather(*(h.fake.slash(h.guild, h.general, h.people["ada"], "llm-summarize")
                                   for _ in range(2)))
    texts = [await final_text(interaction) for interaction in asked]
    [summary] = [t for t in texts if t.startswith("**Summary of the last 24 hours** (200 messages from Grace)")]
    assert "I read only the newest 200 messages: a summary reads at most 2 pages of history." in summary
    [refusal] = [t for t in texts if t != summary]
    assert ALREADY in refusal and "RATE_LIMITED" in refusal
    assert len(h.fake.calls_of("GET", history)) == 2, "two history requests, for one summary"
    assert not h.fake.bot_messages(h.general), "only the asker sees a channel summary, or its refusal"
