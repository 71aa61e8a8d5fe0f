"""Thread context through the real discord.py client (gateway payloads from the fake Discord):
mentioned in a thread somebody else opened, Parley reads what was said there first. Assertions
are on the prompt the engine sent the model, never on the tiny model's wording."""
from __future__ import annotations

import pytest

from conftest import spy_prompts
from test_discord import discord_factory, until  # noqa: F401 - the fixture is used by name

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


async def test_a_reply_reads_the_chain_of_messages_it_answers(discord_factory):
    h = await discord_factory()
    prompts = spy_prompts(h.engine)
    first = await h.say(h.general, "grace", "The offsite budget is 12,000 euros.")
    second = await h.say(h.general, "lin", "Does that include travel?", reply_to=int(first["id"]))
    await h.say(h.general, "olive", "Unrelated: lunch is at noon.")
    assert not prompts, "nobody asked Parley yet"

    await h.say(h.general, "ada", "What do you make of this?", mention=True, reply_to=int(second["id"]))
    assert [m["content"] for m in prompts[0][1:]] == [
        "Grace: The offsite budget is 12,000 euros.", "Lin: Does that include travel?",
        "Ada: What do you make of this?"], "the chain, oldest first; the unrelated message is not in it"


async def test_reset_in_a_dm_starts_a_new_session(discord_factory):
    h = await discord_factory()
    prompts = spy_prompts(h.engine)
    dm = h.fake.add_dm(h.people["ada"])
    await h.say(dm, "ada", "My name is Ada and I like tea.")
    await h.say(dm, "ada", "reset")
    assert h.fake.bot_messages(dm)[-1].text.startswith("Fresh start")
    await h.say(dm, "ada", "What do I like?")
    assert [m["content"] for m in prompts[-1] if m["role"] != "system"] == ["What do I like?"], \
        "the model no longer sees the old turns"
    assert h.turns(dm, channel=dm, workspace="dm") == 2, "the old conversation stays in the store"

    await h.say(dm, "ada", "I prefer coffee now.")
    interaction = await h.fake.slash_dm(dm, h.people["ada"], "llm-new")
    await until(lambda: interaction.texts, what="the command's reply")
    assert interaction.texts[0].startswith("Fresh start")
    await h.say(dm, "ada", "What do I prefer?")
    assert [m["content"] for m in prompts[-1] if m["role"] != "system"] == ["What do I prefer?"]
    assert "DM" in (await h.slash("ada", "llm-new"))[0], "in a server there is nothing to reset"


async def test_a_picture_in_parleys_thread_gets_no_reply_unless_parley_is_asked(discord_factory):
    h = await discord_factory(knowledge=True)
    _, thread = await h.mention("Hello!")
    answered = len(h.fake.bot_messages(thread))
    photo = h.fake.add_file(thread, "photo.png", b"\x89PNG\r\n\x1a\n", "image/png")
    await h.say(thread, "grace", "", attachments=[photo])
    assert len(h.fake.bot_messages(thread)) == answered, "a picture posted in passing gets no reply"
    photo2 = h.fake.add_file(thread, "photo2.png", b"\x89PNG\r\n\x1a\n", "image/png")
    await h.say(thread, "grace", "", mention=True, attachments=[photo2])
    [note] = h.fake.bot_messages(thread)[answered:]  # a broken picture alone: why, and no answer to nothing
    assert "photo2.png" in note.text and "FILE_UNREADABLE" in note.text
