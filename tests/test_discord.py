"""The Discord adapter end to end: real discord.py (login, gateway, REST, app commands), the real
Engine on the packaged model, and a fake of Discord's side on loopback (tests/fake_discord.py):
the bot connects to the fake gateway, receives READY / GUILD_CREATE / MESSAGE_CREATE /
INTERACTION_CREATE as Discord sends them, and its REST calls are recorded.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import time

import docgen
import pytest
from conftest import make_config
from fake_discord import FakeDiscord

from adapters.discord import DiscordAdapter, api_base, discord_configured, run_discord
from adapters.discord import client as discord_module

pytestmark = pytest.mark.timeout(240)

CURSOR = "▍"
MANAGE_GUILD = 1 << 5
INTENTS = 1 | 1 << 9 | 1 << 12 | 1 << 15  # guilds, guild messages, DMs, message content


async def until(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Harness:
    def __init__(self, fake: FakeDiscord, adapter: DiscordAdapter, engine, runner: asyncio.Task, guild: int,
                 people: dict[str, int]):
        self.fake, self.adapter, self.engine, self.runner = fake, adapter, engine, runner
        self.guild = guild
        self.general = fake.channel_named(guild, "general")
        self.people = people

    async def settle(self, seq: int | None = None) -> None:
        """Wait until the bot has read everything sent so far, then for all it took on."""
        seq = self.fake._seq if seq is None else seq
        await until(lambda: self.adapter.ws is not None and (self.adapter.ws.sequence or 0) >= seq,
                    what="the gateway event to arrive")
        await asyncio.sleep(0.05)  # discord.py runs on_message as a task of its own
        await self.adapter.idle()

    async def say(self, channel: int, who: str, text: str, **kwargs) -> dict:
        payload = await self.fake.say(channel, self.people[who], text, **kwargs)
        await self.settle()
        return payload

    async def mention(self, text: str, who: str = "ada", **kwargs) -> tuple[dict, int]:
        """Mention Parley in #general; returns the message and the thread it opened."""
        payload = await self.say(self.general, who, text, mention=True, **kwargs)
        threads = [t for t in self.fake.threads_of(self.general) if t["id"] == payload["id"]]
        assert threads, "a mention opens a thread on the message"
        return payload, int(threads[0]["id"])

    async def slash(self, who: str, command: str, options: dict | None = None, *, permissions: int = 0,
                    channel: int | None = None) -> list[str]:
        interaction = await self.fake.slash(self.guild, channel or self.general, self.people[who], command,
                                            options, permissions=permissions)
        started = time.monotonic()
        await until(lambda: any(r["kind"] == "callback" for r in interaction.replies), what="the interaction reply")
        assert time.monotonic() - started < 3, "Discord needs an interaction answered within 3 s"
        await until(lambda: interaction.texts, what="the command's text")
        await asyncio.sleep(0.1)
        assert all(r["ephemeral"] for r in interaction.replies), interaction.replies
        return interaction.texts

    def turns(self, thread: int, channel: int | None = None, workspace: str | None = None) -> int:
        key = f"discord/{workspace or self.guild}/{channel or self.general}/{thread}"
        session = self.engine.sessions.get(key)
        return len(session.turns) if session else 0


@pytest.fixture
async def discord_factory(tmp_path, engine_factory):
    """Start a fake Discord, an Engine and the adapter (logged in, on the gateway); all closed at the end."""
    started: list[Harness] = []

    async def build(*, knowledge: bool = False, engine=None, data_dir=None, discord: dict | None = None,
                    fake: FakeDiscord | None = None, operator_names: tuple[str, ...] = (), **overrides) -> Harness:
        if fake is None:
            fake = await FakeDiscord().start()
            guild = fake.add_guild("Team", owner="Olive")
            mods = fake.add_role(guild, "Mods", permissions=MANAGE_GUILD)
            people = {"olive": int(fake.guilds[guild]["owner_id"])}
            for name, roles in (("ada", []), ("grace", [mods]), ("lin", []), ("robo", [])):
                people[name] = fake.add_user(name.capitalize(), bot=name == "robo")
                fake.add_member(guild, people[name], roles=roles)
            fake.people = people
        else:
            guild = next(iter(fake.guilds))
        if operator_names:  # people of the fake named as Parley's operators (engine/authority.py)
            overrides["operators"] = {"discord": [str(fake.people[name]) for name in operator_names]}
        config = make_config(data_dir or tmp_path / "data",
                             discord={"stream_interval_s": 0.2, **(discord or {})},
                             knowledge={"enabled": knowledge},
                             admins={"discord": {str(guild): [str(fake.people["lin"])]}}, **overrides)
        engine = engine or await engine_factory(config)
        adapter = DiscordAdapter(engine, config, api_url=fake.api_url, guild_ready_timeout=0.05)
        runner = asyncio.create_task(adapter.start(fake.token))
        await until(lambda: adapter.is_ready() or runner.done(), what="the bot to be ready")
        if runner.done():
            runner.result()
        h = Harness(fake, adapter, engine, runner, guild, fake.people)
        started.append(h)
        return h

    yield build
    for h in started:
        if not h.adapter.tasks.closing:
            await h.adapter.close(grace_s=1)
        await asyncio.wait([h.runner], timeout=5)
    for fake in {id(h.fake): h.fake for h in started}.values():
        await fake.close()


def test_configured_needs_a_token():
    config = make_config(__import__("pathlib").Path("/tmp/unused"))
    assert not discord_configured({}, config)
    assert not discord_configured({"DISCORD_TOKEN": "  "}, config)
    assert discord_configured({"DISCORD_TOKEN": "abc.def"}, config)
    assert api_base(None) == "https://discord.com/api/v10"
    assert api_base("http://127.0.0.1:9/api/") == "http://127.0.0.1:9/api/v10"
    assert api_base("https://proxy.example/api/v10") == "https://proxy.example/api/v10"


async def test_login_prints_the_invite_url_and_syncs_commands(discord_factory, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    h = await discord_factory()
    out = capsys.readouterr().out
    url = f"https://discord.com/oauth2/authorize?client_id={h.fake.app_id}&scope=bot+applications.commands" \
          f"&permissions=309237713920"  # view channels, send, send in threads, create public threads, history
    assert url in out
    assert h.fake.identify["intents"] == INTENTS, "guilds, guild messages, DMs and message content only"
    assert {c["name"] for c in h.fake.commands} == {"llm-stats", "llm-model", "llm-config", "llm-docs", "llm-audit",
                                                    "llm-summarize", "llm-new", "Summarize"}
    assert next(c for c in h.fake.commands if c["name"] == "Summarize")["type"] == 3, "a message menu"
    model = next(c for c in h.fake.commands if c["name"] == "llm-model")
    assert model["options"][0]["autocomplete"] is True
    assert all(c.authorized for c in h.fake.calls)
    logged = "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
    assert h.fake.token not in logged and h.fake.token not in out


async def test_mention_opens_a_thread_and_streams_the_answer(discord_factory, caplog):
    caplog.set_level(logging.DEBUG)
    h = await discord_factory()
    question = "Write three sentences about the sea."
    _, thread = await h.mention(question)

    [opened] = h.fake.threads_of(h.general)
    assert opened["name"] == question, "the thread is named from the question"
    [reply] = h.fake.bot_messages(thread)
    assert reply.text.strip() and CURSOR not in reply.text
    interim = [t for t in reply.history if t.endswith(CURSOR)]
    assert len(interim) >= 2, f"the answer should be streamed in edits, got {reply.history}"
    for earlier, later in itertools.pairwise(interim):  # each edit shows more of the same answer
        assert later.rstrip(CURSOR).startswith(earlier.rstrip(CURSOR).rstrip()[:-2])
    edits = [c.at for c in h.fake.calls_of("PATCH", rf"/channels/{thread}/messages/{reply.id}")
             if c.json.get("content", "").endswith(CURSOR)]
    gaps = [b - a for a, b in itertools.pairwise(edits)]
    assert all(g >= 0.18 for g in gaps), f"at most one edit per stream interval, gaps {gaps}"
    assert h.turns(thread) == 2, "the thread is a session: guild / parent channel / thread"
    assert not h.fake.bot_messages(h.general), "nothing is posted in the channel itself"
    # The bot's own messages came back over the gateway (as Discord sends them) and were ignored.
    assert len(h.fake.calls_of("POST", rf"/channels/{thread}/messages")) == 1
    logged = "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
    assert h.fake.token not in logged


async def test_thread_reply_continues_with_history_even_after_restart(discord_factory, tmp_path):
    h = await discord_factory()
    _, thread = await h.mention("My name is Ada. Please remember it.")
    assert h.turns(thread) == 2

    await h.say(thread, "ada", "What is my name?")
    assert len(h.fake.bot_messages(thread)) == 2, "a reply in Parley's thread needs no mention"
    assert h.turns(thread) == 4, "and is answered with the thread's history"

    # A plain message in the channel, and a thread somebody else opened, get no answer unasked.
    await h.say(h.general, "ada", "Lunch at noon?")
    assert not h.fake.bot_messages(h.general) and not h.fake.threads_of(h.general)[1:]
    user_thread = h.fake.snowflake()
    h.fake.channels[user_thread] = {**h.fake.channels[thread], "id": str(user_thread),
                                    "owner_id": str(h.people["grace"]), "name": "lunch"}
    await h.fake.dispatch("THREAD_CREATE", {**h.fake.channels[user_thread], "newly_created": True})
    await h.say(user_thread, "ada", "Sure")
    assert not h.fake.bot_messages(user_thread)
    # ...but a mention there is answered in that thread, with the parent channel's scope, and the
    # thread's earlier "Sure" read as context (a turn of the conversation).
    await h.say(user_thread, "ada", "What day is it today?", mention=True)
    assert len(h.fake.bot_messages(user_thread)) == 1 and h.turns(user_thread) == 3

    # A restart (new client, same data) still knows the thread is Parley's, even when Discord
    # no longer sends it with the guild (an idle thread is not in GUILD_CREATE).
    await h.adapter.close(grace_s=1)
    h.fake.guilds[h.guild]["threads"] = []
    h2 = await discord_factory(engine=h.engine, data_dir=tmp_path / "data", fake=h.fake)
    await h2.say(thread, "ada", "And once more: what is my name?")
    assert len(h.fake.bot_messages(thread)) == 3
    assert h.turns(thread) == 6


async def test_messages_from_bots_are_ignored(discord_factory):
    h = await discord_factory()
    await h.say(h.general, "robo", "beep, answer me", mention=True)  # another bot mentioning Parley
    _, thread = await h.mention("Say hello.")
    await h.say(thread, "robo", "beep in your thread")
    assert len(h.fake.threads_of(h.general)) == 1, "only the person's mention opened a thread"
    assert len(h.fake.bot_messages(thread)) == 1
    assert h.turns(thread) == 2


async def test_a_mention_of_parleys_role_counts_and_everyone_does_not(discord_factory):
    h = await discord_factory()
    payload = await h.say(h.general, "ada", "What is the capital of France?", mention_role=True)
    assert [t["id"] for t in h.fake.threads_of(h.general)] == [payload["id"]]
    await h.say(h.general, "ada", "@everyone lunch is ready")
    assert len(h.fake.threads_of(h.general)) == 1


async def test_long_answers_continue_in_further_messages(discord_factory, monkeypatch):
    monkeypatch.setattr(discord_module, "MESSAGE_LIMIT", 160)
    monkeypatch.setattr(discord_module, "MESSAGE_SOFT_LIMIT", 80)
    h = await discord_factory()
    h.fake.rate_limit_next_edits = 1  # Discord says "slow down" once: discord.py waits and retries
    _, thread = await h.mention("Tell me a long story about a lighthouse keeper.")
    parts = h.fake.bot_messages(thread)
    assert len(parts) >= 2, [p.text for p in parts]
    assert all(len(p.text) <= 160 and p.text.strip() for p in parts)
    assert not any(CURSOR in p.text for p in parts)
    answer = h.engine.sessions.get(f"discord/{h.guild}/{h.general}/{thread}").turns[-1].text
    assert sum(len(p.text) for p in parts) >= 0.8 * len(answer), "no part of the answer is lost in the split"
    [refused] = h.fake.refused_edits
    assert any(refused in p.history for p in parts), "discord.py waited out the 429 and sent the edit again"


async def test_a_busy_bot_shows_the_queue_position(discord_factory):
    h = await discord_factory(scheduler={"max_batch": 1})
    sent = [await h.fake.say(h.general, h.people["ada"], f"Question number {i}: name a colour.", mention=True)
            for i in range(3)]
    await h.settle()
    shown = [m.history for p in sent for m in h.fake.bot_messages(int(p["id"]))]
    assert len(shown) == 3, "every question is answered, each in its own thread"
    assert any(t == "*Queued, 1 ahead…*" for history in shown for t in history), shown
    assert not any(history[-1].startswith("*Queued") for history in shown), "queue notes are replaced"


async def test_llm_model_is_for_admins_and_commands_are_ephemeral(discord_factory):
    # The live model is the operators' (docs/security.md): Grace (Manage Server), Lin and Olive are
    # operators here too. Manage Server alone is refused: tests/test_authority.py.
    h = await discord_factory(operator_names=("grace", "lin", "olive"))
    [listing] = await h.slash("ada", "llm-model")
    assert "● `smollm2-135m` **live**" in listing and "○ `smollm2-135m-b`" in listing

    [refused] = await h.slash("ada", "llm-model", {"model": "smollm2-135m-b"})
    assert "Only Parley's operators" in refused
    assert h.engine.live_model == "smollm2-135m", "a member cannot switch the model"

    switched = await h.slash("grace", "llm-model", {"model": "smollm2-135m-b"}, permissions=MANAGE_GUILD)
    assert switched[-1].startswith("Now answering with **smollm2-135m-b**")
    assert h.engine.live_model == "smollm2-135m-b", "Manage Server may switch"
    back = await h.slash("lin", "llm-model", {"model": "smollm2-135m"})  # an admin by Parley's config
    assert back[-1].startswith("Now answering with **smollm2-135m**")
    assert "MODEL_UNKNOWN" in (await h.slash("olive", "llm-model", {"model": "gpt-17"}))[-1]  # the owner

    # Typing into the option autocompletes from the configured models.
    typing = await h.fake.slash(h.guild, h.general, h.people["ada"], "llm-model", {"model": "-b"}, focused="model")
    await until(lambda: typing.replies, what="the autocomplete answer")
    assert typing.replies[0]["type"] == 8
    assert [c["value"] for c in typing.replies[0]["choices"]] == ["smollm2-135m-b"]

    [stats] = await h.slash("ada", "llm-stats")
    assert "smollm2-135m" in stats


async def test_direct_messages_are_one_conversation_per_channel(discord_factory):
    h = await discord_factory()
    dm = h.fake.add_dm(h.people["ada"])
    await h.say(dm, "ada", "Hi! What is 2 + 2?")
    assert len(h.fake.bot_messages(dm)) == 1, "answered in the DM itself, without a mention"
    await h.say(dm, "ada", "And 3 + 3?")
    assert len(h.fake.bot_messages(dm)) == 2
    assert h.turns(dm, channel=dm, workspace="dm") == 4, "a DM channel is one conversation"


async def test_unlisted_guilds_are_not_served(discord_factory, caplog):
    caplog.set_level(logging.INFO)
    h = await discord_factory(discord={"guilds": ["1234"]})
    assert "discord guild not in discord.guilds: ignored" in caplog.text
    await h.say(h.general, "ada", "Hello?", mention=True)
    assert not h.fake.threads_of(h.general) and not h.fake.bot_messages(h.general)
    assert "not enabled" in (await h.slash("ada", "llm-stats"))[0]
    dm = h.fake.add_dm(h.people["ada"])  # a DM from someone outside the listed guilds
    await h.say(dm, "ada", "Hello?")
    assert not h.fake.bot_messages(dm)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "nothing failed on the way"


async def test_engine_errors_and_missing_permissions_become_short_replies(discord_factory):
    h = await discord_factory()
    h.fake.fail_thread_creation = True  # no Create Public Threads here: answer under the message
    payload = await h.say(h.general, "ada", "word " * 4000, mention=True)  # far beyond the context window
    [reply] = h.fake.bot_messages(h.general)
    assert reply.reference == int(payload["id"]), "a reply to the message, since no thread could be opened"
    assert reply.text.startswith("⚠️") and "CONTEXT_TOO_LONG" in reply.text and "ref " in reply.text
    assert len(reply.text) < 300


def _pdf(lines: list[str]) -> bytes:
    return docgen.lines_pdf(lines)


@pytest.mark.slow
async def test_an_attachment_is_ingested_for_the_channel_and_cited(discord_factory):
    h = await discord_factory(knowledge=True)
    report = h.fake.add_file(h.general, "report.pdf", _pdf([
        "Zorblax project report.",
        "The Zorblax project budget is 4.2 million euros.",
        "The budget was approved by Mira Patel in March."]), "application/pdf")
    archive = h.fake.add_file(h.general, "logs.zip", b"PK\x05\x06" + bytes(18), "application/zip")
    _, thread = await h.mention("What is the budget of the Zorblax project?", attachments=[report, archive])

    notes = [m.text for m in h.fake.bot_messages(thread)]
    assert notes[0].startswith("Indexed `report.pdf`: 1 page, ") and notes[0].endswith("Ask away.")
    assert notes[1].startswith("⚠️ I can't read `logs.zip`") and "UNSUPPORTED_FILE" in notes[1]
    answer = notes[-1]
    assert "**Sources**" in answer and "`report.pdf` p. 1" in answer and "4.2 million" in answer
    docs = await h.engine.list_documents(
        __import__("engine.types", fromlist=["Conversation"]).Conversation("discord", str(h.guild), str(h.general), ""))
    assert [d.filename for d in docs] == ["report.pdf"], "a thread's documents belong to its parent channel"

    # A file the engine cannot read gets a clear reply in the thread.
    broken = h.fake.add_file(thread, "broken.pdf", b"%PDF-1.4 this is not really a pdf", "application/pdf")
    await h.say(thread, "ada", "", attachments=[broken])
    failure = h.fake.bot_messages(thread)[-1].text
    assert failure.startswith("⚠️ I couldn't index `broken.pdf`") and "ref " in failure


async def test_run_discord_serves_until_stopped(tmp_path, engine_factory, capsys):
    fake = await FakeDiscord().start()
    try:
        guild = fake.add_guild()
        ada = fake.add_user("Ada")
        fake.add_member(guild, ada)
        config = make_config(tmp_path / "data", discord={"stream_interval_s": 0.2}, knowledge={"enabled": False})
        engine = await engine_factory(config)
        stop = asyncio.Event()
        env = {"DISCORD_TOKEN": fake.token, "DISCORD_API_URL": fake.api_url}
        task = asyncio.create_task(run_discord(engine, config, env, stop))
        await asyncio.wait_for(fake.connected.wait(), 20)
        general = fake.channel_named(guild, "general")
        await fake.say(general, ada, "What is the capital of France?", mention=True)
        await until(lambda: fake.threads_of(general) and fake.bot_messages(int(fake.threads_of(general)[0]["id"]))
                    and CURSOR not in fake.bot_messages(int(fake.threads_of(general)[0]["id"]))[0].text,
                    what="the answer")
        stop.set()
        await asyncio.wait_for(task, 20)
        assert "Invite Parley" in capsys.readouterr().out
        from discord.http import Route

        assert Route.BASE == "https://discord.com/api/v10", "the API hook is restored on shutdown"
    finally:
        await fake.close()


async def test_a_refused_token_is_explained_without_showing_it(tmp_path, engine_factory, caplog):
    import discord

    fake = await FakeDiscord().start()
    try:
        fake.add_guild()
        config = make_config(tmp_path / "data", knowledge={"enabled": False})
        engine = await engine_factory(config)
        wrong = "MTA-wrong." + "x" * 24
        with pytest.raises(discord.LoginFailure):
            await asyncio.wait_for(run_discord(engine, config, {"DISCORD_TOKEN": wrong, "DISCORD_API_URL": fake.api_url},
                                               asyncio.Event()), 20)
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert "Discord refused DISCORD_TOKEN" in logged and wrong not in logged
    finally:
        await fake.close()


async def test_a_channel_set_to_reply_all_needs_no_mention(discord_factory):
    h = await discord_factory()
    [refused] = await h.slash("ada", "llm-config", {"args": "reply all"})
    assert "Only admins" in refused
    changed = await h.slash("grace", "llm-config", {"args": "reply all"}, permissions=MANAGE_GUILD)
    assert "reply: all (channel)" in changed[-1]
    payload = await h.say(h.general, "ada", "What is the capital of France?")
    [thread] = h.fake.threads_of(h.general)
    assert thread["id"] == payload["id"] and len(h.fake.bot_messages(int(thread["id"]))) == 1
    await h.say(h.general, "ada", "")  # an empty message (a sticker, say) is not a question
    assert len(h.fake.threads_of(h.general)) == 1
