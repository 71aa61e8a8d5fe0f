"""Several processes over one real redis-server behave as one: no value is a pickle (a planted one
runs nothing and is refused), signed values hold, two clients changing the same settings, votes or
thread lose nothing, and thread memory's claim is on disk before the answer it allows."""
from __future__ import annotations

import asyncio
import os
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT, make_config
from engine.channels import ChannelSettingsStore
from engine.feedback import AnswerRecord, FeedbackStore
from engine.redis_sessions import RedisSessions
from engine.redis_state import RedisMapping, redis_client
from engine.sessions import SessionStore
from engine.sqlite_files import open_sqlitedict, sqlite_pragmas
from engine.state_codec import StateCodec
from engine.turns import Turn
from engine.types import ChatRequest, Conversation, User
from ops_servers import redis_server

WHERE = Conversation("slack", "T1", "C1", "")


class Payload:
    """What an attacker with write access to Redis plants: unpickling it would create `path`."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


def hammer(*jobs) -> None:
    """Run the jobs at once, one thread each (as two processes' worker threads would)."""
    threads = [threading.Thread(target=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)


def test_a_planted_pickle_runs_nothing_and_is_refused(tmp_path, caplog):
    before_start, after_start, as_session = (tmp_path / f"pwned-{n}" for n in range(3))
    with redis_server(tmp_path / "redis") as url:
        client = redis_client(url)
        client.set("p:settings:slack/T1", pickle.dumps(Payload(before_start)))  # planted before a start
        client.set("s:slack/T1/C1/x", pickle.dumps(Payload(as_session)))
        settings = ChannelSettingsStore(make_config(tmp_path), RedisMapping(client, "p:settings:"))
        sessions = SessionStore(RedisSessions(client, "s:"))
        assert "redis values migrated to JSON" in caplog.text  # the one migration: the operator sees it
        client.set("p:settings:slack/T1/C1", pickle.dumps(Payload(after_start)))  # planted while running
        assert settings.effective(WHERE).origins["prompt"] == "default", "the planted values are not used"
        assert sessions.get("slack/T1/C1/x") is None
        RedisMapping(client, "p:settings:")  # another process starts: no second migration reads it
        assert not any(path.exists() for path in (before_start, after_start, as_session)), "no code ran"
        assert "redis value refused" in caplog.text
        settings.set(WHERE, "channel", "length", "long")  # the engine's own values are JSON
        assert client.get("p:settings:slack/T1/C1") == b'{"length":"long"}'
        client.close()


def test_with_an_hmac_key_unsigned_or_moved_values_are_refused(tmp_path, caplog):
    with redis_server(tmp_path / "redis") as url:
        client = redis_client(url)
        client.set("p:slack/T1/C1", b'{"prompt":"planted"}')  # written before the key was configured
        signed = RedisMapping(client, "p:", codec=StateCodec(b"k" * 32))  # signed at the migration
        assert signed["slack/T1/C1"] == {"prompt": "planted"}
        signed["slack/T1/C2"] = {"prompt": "mine"}
        assert client.get("p:slack/T1/C2").startswith(b"h1:")
        client.set("p:slack/T1/C3", b'{"prompt":"injected"}')  # no key: refused
        client.set("p:slack/T1/C4", client.get("p:slack/T1/C2"))  # a signed value moved to another key
        assert "slack/T1/C3" not in dict(signed.items()) and signed.get("slack/T1/C4") is None
        assert signed["slack/T1/C2"] == {"prompt": "mine"}
        assert caplog.text.count("redis value refused") >= 2
        asyncio.run(thread_records_are_signed(url, client))

        def say(text: str) -> Turn:
            return Turn("user", text, "U1", time.time())

        RedisSessions(client, "s:").append("slack/T1/C1/t", [say("before the key")], {"length": "long"}, time.time())
        sessions = RedisSessions(client, "s:", codec=StateCodec(b"k" * 32))  # signs what was there
        sessions.append("slack/T1/C1/t", [say("after the key")], None, time.time())
        client.rpush("s:#turns:slack/T1/C1/t", b'{"role":"assistant","text":"injected"}')
        session = sessions.read("slack/T1/C1/t")
        assert [t.text for t in session.turns] == ["before the key", "after the key"]
        assert session.settings == {"length": "long"}
        client.close()


async def thread_records_are_signed(url: str, client) -> None:
    from adapters.chat.memory_stores import RedisMemoryStore
    from adapters.chat.thread_record import ThreadRecord

    memory = RedisMemoryStore(url, "m:", StateCodec(b"k" * 32))
    await memory.put_thread("C1:1.0", ThreadRecord("T1", "", 5.0), 3600)
    assert await memory.get_thread("C1:1.0") == ThreadRecord("T1", "", 5.0)
    client.set("m:thread:C1:2.0", b'["T1", "", 5.0]')  # "answer without a mention in this thread"
    assert await memory.get_thread("C1:2.0") is None
    await memory.close()


def test_two_clients_changing_settings_votes_and_a_thread_lose_nothing(tmp_path):
    config = make_config(tmp_path)
    with redis_server(tmp_path / "redis") as url:
        stores = [ChannelSettingsStore(config, RedisMapping.from_url(url, "p:settings:")) for _ in range(2)]
        keys = ("prompt", "length", "scope", "reply")
        values = {"prompt": "be brief", "length": "long", "scope": "workspace", "reply": "all"}
        hammer(*(lambda s=s, k=k: [s.set(WHERE, "channel", k, values[k]) for _ in range(20)]
                 for s, k in zip(stores * 2, keys)))
        assert {k: stores[0].effective(WHERE).as_dict()[k] for k in keys} == values

        books = [FeedbackStore(*(RedisMapping.from_url(url, f"f:{t}:") for t in ("a", "v", "t"))) for _ in range(2)]
        books[0].register(AnswerRecord("A1", "slack", "T1", "C1", "m", False, 1.0, time.time()))
        hammer(*(lambda b=b, n=n: [b.vote("A1", f"U{n}-{i}", True, time.time()) for i in range(40)]
                 for n, b in enumerate(books)))
        totals = redis_client(url).mget("f:t:m|up")
        assert totals == [b"80"], "every press counted once, by both processes together"

        sessions = [RedisSessions.from_url(url, "s:", max_turns=1000) for _ in range(2)]
        hammer(*(lambda s=s, n=n: [s.append("slack/T1/C1/t", [Turn("user", f"{n}-{i}", "U1", time.time())], None,
                                            time.time()) for i in range(100)] for n, s in enumerate(sessions)))
        kept = [t.text for t in sessions[1].read("slack/T1/C1/t").turns]
        assert sorted(kept) == sorted(f"{n}-{i}" for n in range(2) for i in range(100))


CLAIM_THEN_DIE = """
import asyncio, os, signal, sys
from pathlib import Path
from adapters.chat.memory import ThreadMemory
from adapters.chat.memory_stores import SqliteMemoryStore

async def main():
    memory = ThreadMemory(SqliteMemoryStore(Path(sys.argv[1])), 3600)
    await memory.open()
    if await memory.claim("answer:C1:1.0"):
        os.kill(os.getpid(), signal.SIGKILL)  # right as the answer would start

asyncio.run(main())
"""


def test_the_claim_is_on_disk_before_the_answer_it_allows(tmp_path):
    from adapters.chat.memory import ThreadMemory
    from adapters.chat.memory_stores import SqliteMemoryStore

    path = tmp_path / "slack_state.sqlite"
    done = subprocess.run([sys.executable, "-c", CLAIM_THEN_DIE, str(path)], cwd=ROOT, timeout=60)
    assert done.returncode == -9

    async def restarted() -> bool:
        memory = ThreadMemory(SqliteMemoryStore(path), 3600)
        await memory.open()
        try:
            return await memory.claim("answer:C1:1.0")
        finally:
            await memory.close()

    assert asyncio.run(restarted()) is False, "the restarted process does not answer the event again"
    db = open_sqlitedict(tmp_path / "other.sqlite", "t")
    assert sqlite_pragmas(db) == ("wal", 1)  # WAL, synchronous=NORMAL
    db.close()


ADMIN = User(id="console")
CONSOLE = Conversation("console", "local", "console", "t1")


def redis_config(data: Path, monkeypatch, url: str):
    monkeypatch.setenv("PARLEY_TEST_REDIS", url)
    config = make_config(data, knowledge={"enabled": False},
                         sessions={"backend": "redis", "redis_url_env": "PARLEY_TEST_REDIS"})
    for model in config.models:
        model.generation.max_new_tokens = 8  # the figures are counted, not read
    return config


async def eventually(check, within_s: float) -> float:
    """Seconds until `check()` held (fails past `within_s`)."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within_s, "not within the time allowed"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_replicas_share_the_live_model_the_stats_and_the_usage(engine_factory, tmp_path, monkeypatch):
    with redis_server(tmp_path / "redis") as url:
        first = await engine_factory(redis_config(tmp_path / "a", monkeypatch, url))
        second = await engine_factory(redis_config(tmp_path / "b", monkeypatch, url))
        await first.switch_model("smollm2-135m-b", CONSOLE, ADMIN)
        assert await eventually(lambda: second.live_model == "smollm2-135m-b", 2.0) < 2.0
        third = await engine_factory(redis_config(tmp_path / "c", monkeypatch, url))  # a restarted replica
        assert third.live_model == "smollm2-135m-b", "the stored choice, not the config's default"

        alice = User(id="U1", name="alice")
        where = Conversation("console", "local", "console", "t2")
        for engine in (first, second, second):
            async for _ in engine.answer(ChatRequest(where=where, user=alice, text="Say hi.")):
                pass
        figures = ("requests", "answered", "prompt_tokens", "completion_tokens")

        def same() -> bool:
            snaps = [e.stats_counters.snapshot() for e in (first, second, third)]
            return all(s[f] == snaps[0][f] for s in snaps for f in figures) and snaps[0]["requests"] == 3

        await eventually(same, 5.0)
        usage = [e.stats_counters.user_usage("console/local/U1") for e in (first, second, third)]
        assert {u.questions for u in usage} == {3} and len({u.tokens for u in usage}) == 1
        assert third.stats_counters.workspace_usage("console/local")[:2] == (1, 3)


async def test_without_redis_the_switch_survives_a_restart(engine_factory, tmp_path):
    config = make_config(tmp_path / "data", knowledge={"enabled": False})
    engine = await engine_factory(config)
    await engine.switch_model("smollm2-135m-b", CONSOLE, ADMIN)
    await engine.stop()
    again = await engine_factory(make_config(tmp_path / "data", knowledge={"enabled": False}))
    assert again.live_model == "smollm2-135m-b"


async def test_the_edit_budget_and_an_ingest_cancel_cross_replicas(tmp_path):
    import redis

    from adapters.chat.edit_budget import SharedEditBudget
    from engine.buckets import RedisBuckets
    from engine.ingest_cancel import SharedCancels

    with redis_server(tmp_path / "redis") as url:
        stores = [RedisBuckets.from_url(url, "e:") for _ in range(2)]
        budgets = [SharedEditBudget(store, "T1", 50 / 60, 10) for store in stores]
        taken = [await budget.try_take() for _ in range(10) for budget in budgets]
        assert sum(taken) == 10, "two replicas share one workspace's 10-edit burst"
        await budgets[0].take()  # a final edit always goes

        replicas = [SharedCancels(redis.Redis.from_url(url), "s:") for _ in range(2)]
        cancelled = asyncio.Event()
        asked_by: list[str] = []

        def cancel(by: str) -> None:
            asked_by.append(by)
            cancelled.set()

        async with replicas[0].running(WHERE, "report.pdf", "U0ADA", cancel):
            for _ in range(40):
                if await replicas[1].uploader(WHERE, "report.pdf") == "U0ADA":
                    break
                await asyncio.sleep(0.05)
            assert await replicas[1].uploader(WHERE, "report.pdf") == "U0ADA"
            await replicas[1].request(WHERE, "report.pdf", "U0LIN")
            await asyncio.wait_for(cancelled.wait(), 3.0)
        assert asked_by == ["U0LIN"]
        assert await replicas[1].uploader(WHERE, "report.pdf") is None, "an ended ingest is no longer listed"
        for store in stores:
            await store.close()


async def test_an_ingest_is_cancelled_from_another_replica(engine_factory, embedder, tmp_path, monkeypatch):
    from engine.errors import ErrorCode, ParleyError
    from test_knowledge_ingest import ALICE, BOB, CONSOLE, start_ingest

    with redis_server(tmp_path / "redis") as url:
        monkeypatch.setenv("PARLEY_TEST_REDIS", url)
        shared = {"backend": "redis", "redis_url_env": "PARLEY_TEST_REDIS"}
        running = await engine_factory(make_config(tmp_path / "y", sessions=shared))
        elsewhere = await engine_factory(make_config(tmp_path / "x", sessions=shared))
        task, _ = await start_ingest(running, ALICE)
        with pytest.raises(ParleyError) as forbidden:
            await elsewhere.cancel_ingest(CONSOLE, "big.txt", BOB)  # neither the sharer nor an admin
        assert forbidden.value.code is ErrorCode.FORBIDDEN
        assert await elsewhere.cancel_ingest(CONSOLE, "big.txt", ALICE) is True
        with pytest.raises(ParleyError) as cancelled:
            await asyncio.wait_for(task, 60)
        assert cancelled.value.code is ErrorCode.CANCELLED and "nothing of it was kept" in cancelled.value.user_message
        assert running.knowledge.stats()["chunks"] == 0
        assert await elsewhere.cancel_ingest(CONSOLE, "big.txt", ALICE) is False, "it is over"
