"""Thread context through the real discord.py client (gateway payloads from the fake Discord):
mentioned in a thread somebody else opened, Parley reads what was said there first. Assertions
are on the prompt the engine sent the model, never on the tiny model's wording."""
from __future__ import annotations

import pytest

from conftest import spy_prompts
from test_discord import discord_factory  # noqa: F401 - the fixture is used by name

pytestmark = pytest.mark.timeout(240)


async def test_mentioned_in_someone_elses_thread_parley_reads_it_first(discord_factory):
    h = await discord_factory()
    prompts = spy_prompts(h.engine)
    _, parleys = await h.mention("Say hello.")  # a thread of Parley's, to borrow its shape
    thread = h.fake.snowflake()
    h.fake.channels[thread] = {**h.fake.channels[parleys], "id": str(thread),
                               "owner_id": str(h.people["grace"]), "name": "offsite"}
    await h.fake.dispatch("THREAD_CREATE", {**h.fake.channels[thread], "newly_created": True})
    await h.say(thread, "grace", "Planning the team offsite.")
    await h.say(thread, "lin", "The offsite budget is 12,000 euros.")
    await h.say(thread, "robo", "Build 42 passed")
    assert len(prompts) == 1, "nobody asked Parley yet"

    await h.say(thread, "ada", "What do you make of the above?", mention=True)
    reads = h.fake.calls_of("GET", rf"/channels/{thread}/messages")
    assert reads, "the thread's history was read"
    assert len(h.fake.bot_messages(thread)) == 1
    assert [m["content"] for m in prompts[1][1:]] == [
        "Grace: Planning the team offsite.", "Lin: The offsite budget is 12,000 euros.",
        "[Robo (a bot) said: Build 42 passed]", "Ada: What do you make of the above?"]

    # Mentioned again later: the messages it missed in between join the same conversation, once.
    await h.say(thread, "grace", "Moved to Friday.")
    await h.say(thread, "ada", "When is it now?", mention=True)
    later = [m["content"] for m in prompts[2][1:]]
    assert later.count("Lin: The offsite budget is 12,000 euros.") == 1
    assert later[-2:] == ["Grace: Moved to Friday.", "Ada: When is it now?"]
