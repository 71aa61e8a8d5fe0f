"""Summaries through the real Slack adapter (slack-bolt, HTTP mode, the fake Slack) and the real
discord.py client (the fake Discord's gateway), on the real model. Asserted: what the engine sent
the model, how many calls it made, where the summary was posted and whom it names; never the
tiny model's wording."""
from __future__ import annotations

import asyncio
import time

import pytest

from adapters.chat.summaries import parse_window
from conftest import spy_prompts
from test_discord import discord_factory, until  # noqa: F401 - the fixture is used by name
from test_slack import ADA, CHANNEL, GRACE, LIN, slack_factory  # noqa: F401 - the fixture is used by name

pytestmark = pytest.mark.timeout(300)


def spy_calls(engine) -> list:
    """Count what is handed to the live model (each call's prompt), the real backend still runs."""
    calls = []
    backend = engine.lineup.live
    real = backend.submit

    def submit(prompt, params):
        calls.append(prompt)
        return real(prompt, params)

    backend.submit = submit
    return calls


def said_lines(prompt: list[dict]) -> list[str]:
    return prompt[-1]["content"].splitlines()


def test_the_window_reads_hours_since_and_limit():
    now = 1_700_000_000.0
    assert parse_window("", now).oldest == now - 24 * 3600 and parse_window("", now).limit == 500
    assert parse_window("6", now).oldest == now - 6 * 3600 and parse_window("6h limit 20", now).limit == 20
    since = parse_window("since 2023-11-14 09:00", now)
    assert since.oldest == 1699952400 and "2023-11-14 09:00" in since.label
    for bad in ("soon", "limit 0", "0"):
        with pytest.raises(Exception) as err:
            parse_window(bad, now)
        assert "Usage:" in str(err.value.user_message)


# ---- Slack -----------------------------------------------------------------------------------

async def slack_command(h, text: str, channel: str = CHANNEL, user: str = ADA) -> list[str]:
    body, key = h.fake.command("/llm-summarize", text, user=user, channel=channel)
    assert await h.send(body) == 200
    await h.settle()
    return [r["text"] for r in h.fake.responses_for(key) if r.get("response_type") == "ephemeral"]


async def test_slack_channel_summary_is_private_and_names_who_spoke(slack_factory):
    h = await slack_factory()
    prompts = spy_prompts(h.engine)
    now = time.time()
    h.fake.add_message("Old news from last week.", user=LIN, at=now - 8 * 86400)
    h.fake.add_message("The launch moved to Tuesday.", user=ADA, at=now - 3600)
    root = h.fake.add_message("Who books the room?", user=GRACE, at=now - 1800)
    h.fake.add_message("Lin does, on Monday.", user=ADA, thread_ts=root.ts, at=now - 1700)
    posted = len(h.fake.calls_of("chat.postMessage"))

    [summary] = await slack_command(h, "")
    assert summary.startswith("*Summary of the last 24 hours*") and "Ada" in summary and "Grace" in summary
    assert len(h.fake.calls_of("chat.postMessage")) == posted, "a channel summary is for the asker alone"
    [prompt] = prompts
    assert said_lines(prompt) == ["Ada: The launch moved to Tuesday.", "Grace: Who books the room?",
                                  "Ada: Lin does, on Monday."], "the window's messages, thread replies included"

    # An empty window: no model call, the plain answer.
    assert await slack_command(h, "", channel="C0QUIET") == ["Nothing to summarise in the last 24 hours."]
    assert len(prompts) == 1
    usage = await slack_command(h, "whenever")
    assert "Usage:" in usage[0]


async def test_slack_summarize_thread_shortcut_posts_in_the_thread(slack_factory):
    h = await slack_factory()
    prompts = spy_prompts(h.engine)
    root = h.fake.add_message("Planning the offsite.", user=ADA)
    h.fake.add_message("Budget is 12,000 euros.", user=GRACE, thread_ts=root.ts)
    picked = h.fake.add_message("I'll book Lisbon.", user=LIN, thread_ts=root.ts)
    body, _ = h.fake.shortcut("summarize_thread", picked, user=GRACE)
    assert await h.send(body) == 200
    await h.settle()
    [summary] = h.fake.bot_messages(CHANNEL, root.ts)
    assert summary.text.startswith("*Summary of this thread* (3 messages from ")
    assert all(name in summary.text for name in ("Ada", "Grace", "Lin"))
    assert said_lines(prompts[0]) == ["Ada: Planning the offsite.", "Grace: Budget is 12,000 euros.",
                                      "Lin: I'll book Lisbon."]

    # "@Parley summarize" in the thread: the same, posted there, the mention itself not read.
    await h.mention("summarize", user=ADA, thread_ts=root.ts)
    assert len(h.fake.bot_messages(CHANNEL, root.ts)) == 2
    assert said_lines(prompts[1])[:3] == said_lines(prompts[0]) and len(prompts) == 2, "no answer, a summary"


@pytest.mark.slow
async def test_a_long_slack_thread_is_summarised_in_parts(slack_factory):
    h = await slack_factory(max_new_tokens=24)
    calls = spy_calls(h.engine)
    root = h.fake.add_message("Daily status thread.", user=ADA)
    for i in range(90):
        h.fake.add_message(f"Update {i}: the field team checked site {i} and found the pumps working. "
                           "Water levels are normal and nobody reported a problem.",
                           user=(ADA, GRACE, LIN)[i % 3], thread_ts=root.ts)
    body, _ = h.fake.shortcut("summarize_thread", root, user=ADA)
    assert await h.send(body) == 200
    await h.settle()
    [summary] = h.fake.bot_messages(CHANNEL, root.ts)
    assert summary.text.startswith("*Summary of this thread* (91 messages")
    assert any("parts" in text for text in summary.history[:-1]), "progress was shown while it worked"
    import re

    [parts] = {int(m.group(1)) for text in summary.history if (m := re.search(r"in (\d+) parts", text))}
    assert parts >= 2, summary.history
    assert len(calls) == parts + 1, "one call per part, then one to combine their points"
    assert all(len(prompt) + 24 <= 2048 for prompt in calls), "every call fits the context window"


# ---- Discord ---------------------------------------------------------------------------------

async def interaction_texts(interaction) -> list[str]:
    await until(lambda: any(r["kind"] == "edit" and "…" not in (r["content"] or "") for r in interaction.replies),
                what="the interaction's final text")
    await asyncio.sleep(0.1)
    assert all(r["ephemeral"] for r in interaction.replies), interaction.replies
    return [r["content"] for r in interaction.replies if r["kind"] == "edit"]


async def test_discord_channel_summary_and_the_summarize_menu(discord_factory):
    h = await discord_factory()
    prompts = spy_prompts(h.engine)
    await h.say(h.general, "ada", "The launch moved to Tuesday.")
    await h.say(h.general, "grace", "Then the demo is on Wednesday.")
    interaction = await h.fake.slash(h.guild, h.general, h.people["lin"], "llm-summarize")
    texts = await interaction_texts(interaction)
    assert texts[-1].startswith("**Summary of the last 24 hours**") and "Ada" in texts[-1] and "Grace" in texts[-1]
    assert said_lines(prompts[-1]) == ["Ada: The launch moved to Tuesday.", "Grace: Then the demo is on Wednesday."]
    assert not h.fake.bot_messages(h.general), "only the asker sees a channel summary"

    # The "Summarize" menu on a message in a thread: posted in that thread.
    _, thread = await h.mention("Plan the offsite with me.", who="ada")
    await h.say(thread, "grace", "Budget is 12,000 euros.")
    picked = await h.say(thread, "lin", "I'll book Lisbon.")
    menu = await h.fake.message_menu(h.guild, thread, h.people["grace"], "Summarize", int(picked["id"]))
    await until(lambda: any("Posted" in (r["content"] or "") for r in menu.replies), what="the menu's reply")
    await h.settle()
    summary = h.fake.bot_messages(thread)[-1].text
    assert summary.startswith("**Summary of this thread**") and "Grace" in summary and "Lin" in summary
    lines = said_lines(prompts[-1])  # Parley answered each message in its thread: its answers are read too
    assert lines.index("Grace: Budget is 12,000 euros.") < lines.index("Lin: I'll book Lisbon.")
    assert any(line.startswith("Parley: ") for line in lines)

    # "@Parley summarize" in the thread: summarised there too, the mention itself not read.
    calls = len(prompts)
    await h.say(thread, "ada", "summarize", mention=True)
    assert h.fake.bot_messages(thread)[-1].text.startswith("**Summary of this thread**")
    assert len(prompts) == calls + 1 and "summarize" not in said_lines(prompts[-1])[-1]


async def test_discord_empty_channel_summary(discord_factory):
    h = await discord_factory()
    quiet = h.fake.add_channel(h.guild, "quiet")
    await h.fake.dispatch("CHANNEL_CREATE", h.fake.channels[quiet])
    interaction = await h.fake.slash(h.guild, quiet, h.people["ada"], "llm-summarize")
    texts = await interaction_texts(interaction)
    assert texts[-1] == "Nothing to summarise in the last 24 hours."
