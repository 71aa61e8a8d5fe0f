"""Sessions in Redis, so several bot processes serving one workspace share every thread's history.

RedisMapping is a MutableMapping of session key -> Session (pickled, like SqliteDict does), so
SessionStore works on it unchanged. Each write also sets a TTL of the idle-expiry time: Redis
forgets an idle thread by itself, and the hourly expiry pass has little left to do.
Only trusted code may write to this Redis: values are pickles.
"""
from __future__ import annotations

import logging
import pickle
import re
from collections.abc import ItemsView, Iterator, MutableMapping, ValuesView
from typing import Any

from engine.config import Config
from engine.sessions import SessionStore

log = logging.getLogger(__name__)

BATCH = 200  # keys fetched per MGET while iterating


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


class RedisMapping(MutableMapping):
    """str -> picklable value under a key prefix, over a synchronous redis client."""

    def __init__(self, client, prefix: str, ttl_seconds: float | None = None):
        self._client = client  # redis.Redis
        self._prefix = prefix
        self._ttl = max(1, int(ttl_seconds)) if ttl_seconds else None

    @classmethod
    def from_url(cls, url: str, prefix: str, ttl_seconds: float | None = None) -> "RedisMapping":
        import redis

        client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        client.ping()  # fail at start with a clear error, not at the first message
        return cls(client, prefix, ttl_seconds)

    def _key(self, key: str) -> str:
        return self._prefix + key

    def __getitem__(self, key: str) -> Any:
        raw = self._client.get(self._key(key))
        if raw is None:
            raise KeyError(key)
        return pickle.loads(raw)

    def __setitem__(self, key: str, value: Any) -> None:
        self._client.set(self._key(key), pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL), ex=self._ttl)

    def __delitem__(self, key: str) -> None:
        if not self._client.delete(self._key(key)):
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and bool(self._client.exists(self._key(key)))

    def _raw_keys(self) -> Iterator[bytes]:
        return self._client.scan_iter(match=_glob_escape(self._prefix) + "*", count=BATCH)

    def __iter__(self) -> Iterator[str]:
        cut = len(self._prefix.encode())
        for raw in self._raw_keys():
            yield raw[cut:].decode()

    def __len__(self) -> int:
        return sum(1 for _ in self._raw_keys())

    def _pairs(self) -> Iterator[tuple[str, Any]]:
        """(key, value) in batches of MGET; a key deleted meanwhile is skipped, not an error."""
        cut = len(self._prefix.encode())
        batch: list[bytes] = []

        def flush():
            for raw_key, raw in zip(batch, self._client.mget(batch)):
                if raw is not None:
                    yield raw_key[cut:].decode(), pickle.loads(raw)

        for raw_key in self._raw_keys():
            batch.append(raw_key)
            if len(batch) >= BATCH:
                yield from flush()
                batch = []
        if batch:
            yield from flush()

    def items(self) -> ItemsView:
        return _Items(self)

    def values(self) -> ValuesView:
        return _Values(self)

    def close(self) -> None:
        self._client.close()


class _Items(ItemsView):
    def __iter__(self):
        return self._mapping._pairs()


class _Values(ValuesView):
    def __iter__(self):
        return (value for _, value in self._mapping._pairs())


def open_session_store(config: Config) -> SessionStore:
    """The session store config.sessions.backend asks for (blocking: call it in a worker thread)."""
    sessions = config.sessions
    if sessions.backend == "redis":
        from engine.limits import redis_url

        url = redis_url(sessions.redis_url_env, "sessions")
        mapping = RedisMapping.from_url(url, sessions.redis_prefix, ttl_seconds=sessions.idle_expiry_hours * 3600)
        log.info("sessions in redis", extra={"prefix": sessions.redis_prefix})
        return SessionStore(mapping)
    return SessionStore.open_sqlite(config.data_path / "sessions.sqlite")


def open_state_mapping(config: Config, sqlite_file: str, table: str, redis_key: str,
                       ttl_seconds: float | None = None) -> MutableMapping:
    """A mapping of other state (channel settings, feedback, adapters' records), where
    config.sessions.backend keeps it: table `table` of data_dir/`sqlite_file`, or Redis keys under
    redis_state_prefix + `redis_key` (blocking: call it in a worker thread)."""
    sessions = config.sessions
    if sessions.backend == "redis":
        from engine.limits import redis_url

        url = redis_url(sessions.redis_url_env, "sessions")
        return RedisMapping.from_url(url, sessions.redis_state_prefix + redis_key, ttl_seconds)
    from sqlitedict import SqliteDict

    path = config.data_path / sqlite_file
    path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteDict(str(path), tablename=table, autocommit=True)
