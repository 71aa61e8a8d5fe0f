"""Rate limits on their own: the in-memory buckets and the Redis ones (a real redis-server)."""
from __future__ import annotations

import asyncio
import re

import pytest

from engine.config import LimitsConfig
from engine.errors import ErrorCode, ParleyError
from engine.limits import MemoryBuckets, RateLimiter, RedisBuckets
from engine.types import Conversation, User
from ops_servers import redis_server

HERE = Conversation("slack", "T1", "C1", "1.0")
ELSEWHERE = Conversation("slack", "T2", "C9", "2.0")
ADA, BOB = User("U1", "ada"), User("U2", "bob")


async def outcomes(limiter: RateLimiter, n: int, where=HERE, user=ADA, ingest=False) -> list:
    """'ok', or the ParleyError, for n requests in a row."""
    out = []
    for _ in range(n):
        try:
            await (limiter.check_ingest if ingest else limiter.check_answer)(where, user)
            out.append("ok")
        except ParleyError as exc:
            out.append(exc)
    return out


def retry_seconds(error: ParleyError) -> int:
    match = re.search(r"Try again in (\d+) s", error.user_message)
    assert match, error.user_message
    return int(match.group(1))


async def test_user_bucket_one_notice_then_silence():
    limiter = RateLimiter(LimitsConfig(user_per_minute=3, workspace_per_minute=100), MemoryBuckets())
    results = await outcomes(limiter, 50)
    assert results[:3] == ["ok"] * 3
    refusals = results[3:]
    assert all(r.code is ErrorCode.RATE_LIMITED for r in refusals)
    shown = [r for r in refusals if not r.silent]
    assert len(shown) == 1 and shown[0] is refusals[0]  # the first one speaks, the rest are silent
    assert 15 <= retry_seconds(shown[0]) <= 20  # 3 a minute: one more fits in 20 s
    assert "3 a minute" in shown[0].user_message
    assert await outcomes(limiter, 1, user=BOB) == ["ok"]  # someone else is not affected
    assert await outcomes(limiter, 1, where=ELSEWHERE) == ["ok"]  # nor the same id in another workspace


async def test_workspace_bucket_takes_from_all_or_none():
    limiter = RateLimiter(LimitsConfig(user_per_minute=4, workspace_per_minute=5), MemoryBuckets())
    assert await outcomes(limiter, 4, user=ADA) == ["ok"] * 4
    first = await outcomes(limiter, 3, user=BOB)
    assert first[0] == "ok" and all(isinstance(r, ParleyError) for r in first[1:])
    assert "workspace" in first[1].user_message and not first[1].silent
    assert first[2].silent
    # Bob's refused requests did not use up his own allowance: only the workspace is full.
    assert first[1].limit == "workspace"


async def test_ingests_have_their_own_smaller_bucket():
    limiter = RateLimiter(LimitsConfig(user_per_minute=10, ingest_per_minute=2), MemoryBuckets())
    ingests = await outcomes(limiter, 3, ingest=True)
    assert ingests[:2] == ["ok", "ok"] and ingests[2].limit == "ingest"
    assert "sharing files" in ingests[2].user_message
    assert await outcomes(limiter, 1) == ["ok"]  # answers still flow


async def test_bucket_refills_and_a_new_cool_down_speaks_again():
    limiter = RateLimiter(LimitsConfig(user_per_minute=60, workspace_per_minute=1000), MemoryBuckets())
    results = await outcomes(limiter, 62)
    assert results.count("ok") == 60 and not results[60].silent and results[61].silent
    await asyncio.sleep(1.1)  # one request a second drains back in
    again = await outcomes(limiter, 2)
    assert again[0] == "ok"
    assert isinstance(again[1], ParleyError) and not again[1].silent  # a new cool-down: told once more


async def test_redis_buckets_are_shared_and_survive_a_restart(tmp_path):
    config = LimitsConfig(user_per_minute=3, workspace_per_minute=100, backend="redis")
    with redis_server(tmp_path / "redis") as url:
        one = RateLimiter(config, RedisBuckets.from_url(url, "test:"))
        two = RateLimiter(config, RedisBuckets.from_url(url, "test:"))  # a second bot process
        assert await outcomes(one, 2) == ["ok", "ok"]
        assert await outcomes(two, 1) == ["ok"]
        refused = await outcomes(two, 1)
        assert refused[0].code is ErrorCode.RATE_LIMITED and not refused[0].silent
        assert 15 <= retry_seconds(refused[0]) <= 20
        assert (await outcomes(one, 1))[0].silent  # the other process already told the user
        assert await outcomes(one, 1, user=BOB) == ["ok"]
        await one.close()
        await two.close()
        restarted = RateLimiter(config, RedisBuckets.from_url(url, "test:"))
        after = await outcomes(restarted, 1)
        assert isinstance(after[0], ParleyError) and after[0].silent  # same bucket, same cool-down
        # Keys expire by themselves once drained: nothing lingers in Redis for idle users.
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(url)
        keys = [k async for k in client.scan_iter(match="test:*")]
        ttls = [await client.pttl(k) for k in keys]
        assert keys and all(0 < ttl <= 62_000 for ttl in ttls)
        await client.aclose()
        await restarted.close()


async def test_redis_unreachable_fails_open(caplog):
    from ops_servers import free_port

    limiter = RateLimiter(LimitsConfig(user_per_minute=1),
                          RedisBuckets.from_url(f"redis://127.0.0.1:{free_port()}/0", "test:"))
    assert await outcomes(limiter, 3) == ["ok"] * 3  # no Redis: serve rather than refuse everyone
    assert sum("rate-limit store unreachable" in r.getMessage() for r in caplog.records) == 1
    await limiter.close()


def test_redis_url_missing_is_a_config_error(monkeypatch):
    from engine.config import ConfigError

    monkeypatch.delenv("PARLEY_TEST_REDIS", raising=False)
    with pytest.raises(ConfigError, match="PARLEY_TEST_REDIS"):
        RateLimiter.from_config(LimitsConfig(backend="redis", redis_url_env="PARLEY_TEST_REDIS"))
