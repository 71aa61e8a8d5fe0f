"""Sessions over Redis (a real redis-server): the SessionStore works on it as on SQLite."""
from __future__ import annotations

import time

import pytest

from engine.redis_sessions import RedisSessions, open_session_store
from engine.sessions import SessionStore, Turn
from ops_servers import redis_server
from conftest import make_config


@pytest.fixture
def redis_url(tmp_path):
    with redis_server(tmp_path / "redis") as url:
        yield url


def test_session_store_over_redis(redis_url):
    store = SessionStore(RedisSessions.from_url(redis_url, "p1:", ttl_seconds=3600))
    key = "slack/T1/C1/1700000000.000100"
    store.append(key, Turn("user", "hello", "U1", 1.0), Turn("assistant", "hi!", "", 1.0), settings={"model": "m"})
    store.append(key, Turn("user", "again", "U1", 2.0))
    odd = "discord/G*1/C[2]/t?3"  # glob characters in a key must not match other keys
    store.append(odd, Turn("user", "x", "U2", 1.0))

    other = SessionStore(RedisSessions.from_url(redis_url, "p1:"))  # another bot process
    session = other.get(key)
    assert [t.text for t in session.turns] == ["hello", "hi!", "again"] and session.settings == {"model": "m"}
    assert other.exists(odd) and other.count() == 2
    assert sorted(other.keys()) == sorted([key, odd])

    # A second deployment with its own prefix sees none of it.
    assert SessionStore(RedisSessions.from_url(redis_url, "p2:")).count() == 0

    # Every write carries the idle-expiry TTL, so Redis forgets idle threads by itself.
    import redis

    ttl = redis.Redis.from_url(redis_url).ttl("p1:" + key)
    assert 3500 < ttl <= 3600

    assert other.active_since(time.time() - 60) == 2
    assert other.expire_idle(3600, now=time.time() + 7200) == 2
    assert store.count() == 0 and store.get(key) is None
    assert not store.delete(key)
    store.close()
    other.close()


def test_config_picks_the_store(redis_url, tmp_path, monkeypatch):
    monkeypatch.setenv("PARLEY_TEST_REDIS", redis_url)
    config = make_config(tmp_path / "data", sessions={"backend": "redis", "redis_url_env": "PARLEY_TEST_REDIS",
                                                       "redis_prefix": "cfg:"})
    store = open_session_store(config)
    assert isinstance(store.backend, RedisSessions)
    store.append("k", Turn("user", "hi", "U1", 1.0))
    store.close()
    assert open_session_store(config).get("k").turns[0].text == "hi"
    sqlite = open_session_store(make_config(tmp_path / "data2"))
    assert not isinstance(sqlite.backend, RedisSessions)
    sqlite.close()
