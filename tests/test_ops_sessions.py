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


def test_appends_from_several_processes_lose_nothing_and_stay_bounded(redis_url, tmp_path, monkeypatch):
    """Four bot processes answering in one thread at once: every turn is either stored or folded,
    exactly once, each answer next to its question, and the thread stays within max_turns."""
    import threading

    monkeypatch.setenv("PARLEY_TEST_REDIS", redis_url)
    config = make_config(tmp_path / "data", sessions={"backend": "redis", "redis_url_env": "PARLEY_TEST_REDIS",
                                                      "redis_prefix": "p3:", "max_turns": 50})
    stores = [open_session_store(config) for _ in range(4)]
    assert all(store.max_turns == 50 for store in stores)
    key = "slack/T1/C1/busy"

    def answer(n: int, store: SessionStore) -> None:
        for i in range(40):
            store.append(key, Turn("user", f"w{n} q{i}", f"U{n}", time.time()),
                         Turn("assistant", f"w{n} a{i}", "", time.time()))

    threads = [threading.Thread(target=answer, args=(n, store)) for n, store in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    session = stores[0].get(key)
    assert len(session.turns) == 50 and session.folded.turns + len(session.turns) == 4 * 80
    assert session.folded.questions == 4 * 40 - 25
    texts = [t.text for t in session.turns]
    assert all(q.replace(" q", " a") == a for q, a in zip(texts[::2], texts[1::2]))
    for n in range(4):
        mine = [int(t.split("q")[1]) for t in texts[::2] if t.startswith(f"w{n} ")]
        assert mine == sorted(mine), "each process's turns in the order it wrote them"
    for store in stores:
        store.close()
