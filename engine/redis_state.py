"""State other than sessions, where config.sessions.backend keeps it: SQLite files, or Redis.

RedisMapping is a MutableMapping (channel settings, feedback, the audit trail, adapters' records)
under a key prefix: values are JSON (engine/state_codec.py: signed with the HMAC key when one is
configured), never pickles. `modify` changes one value by compare-and-set (WATCH/MULTI), so two
processes changing one key cannot lose either's change; `update_value` does the same over any
mapping (a SqliteDict under a process lock: one process).

The first process to open a prefix converts the values of earlier versions (pickles) once, logged;
after that a value that is not (correctly signed) JSON is refused, logged, and read as absent.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, ItemsView, Iterator, MutableMapping, ValuesView
from typing import Any

from engine.config import Config
from engine.state_codec import Refused, StateCodec, codec_from_env, legacy_pickle, refused
from engine.vote_tally import RedisTally

log = logging.getLogger(__name__)

BATCH = 200  # keys fetched per MGET while iterating
CAS_TRIES = 50  # a compare-and-set retried while other processes change the same key
FORMAT = "json"  # the marker's value once a prefix holds JSON only
KEEP = object()  # what an update function returns to leave the value as it is

Update = Callable[[Any], Any]  # the value now (None when absent) -> the new one, or KEEP
_LOCAL = threading.Lock()  # update_value's lock for mappings of one process


def glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def as_text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def redis_client(url: str):
    """A synchronous redis client, checked at once (fail at start with a clear error, not at the
    first message)."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
    client.ping()
    return client


class RedisMapping(MutableMapping):
    """str -> JSON value under a key prefix, over a synchronous redis client."""

    def __init__(self, client, prefix: str, ttl_seconds: float | None = None, codec: StateCodec | None = None):
        self._client = client  # redis.Redis
        self._prefix = prefix
        self._ttl = max(1, int(ttl_seconds)) if ttl_seconds else None
        self._codec = codec or StateCodec()
        self._migrate()

    @classmethod
    def from_url(cls, url: str, prefix: str, ttl_seconds: float | None = None,
                 codec: StateCodec | None = None) -> "RedisMapping":
        return cls(redis_client(url), prefix, ttl_seconds, codec)

    def _key(self, key: str) -> str:
        return self._prefix + key

    def _decode(self, raw_key: bytes | str, raw: bytes) -> Any:
        """The value, or None (logged) when it is refused."""
        try:
            return self._codec.decode(raw_key, raw)
        except Refused as exc:
            refused(raw_key, exc)
            return None

    def __getitem__(self, key: str) -> Any:
        raw = self._client.get(self._key(key))
        value = None if raw is None else self._decode(self._key(key), raw)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self._client.set(self._key(key), self._codec.encode(self._key(key), value), ex=self._ttl)

    def __delitem__(self, key: str) -> None:
        if not self._client.delete(self._key(key)):
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and bool(self._client.exists(self._key(key)))

    def modify(self, key: str, update: Update) -> tuple[Any, Any]:
        """Change `key`'s value by compare-and-set: `update(value now)` -> new value (or KEEP), run
        again whenever another process changed the key meanwhile. (value before, value after)."""
        from redis.exceptions import WatchError

        name = self._key(key)
        for _ in range(CAS_TRIES):
            with self._client.pipeline() as pipe:
                try:
                    pipe.watch(name)
                    raw = pipe.get(name)
                    old = None if raw is None else self._decode(name, raw)
                    new = update(old)
                    if new is KEEP:
                        pipe.unwatch()
                        return old, old
                    pipe.multi()
                    if new is None:
                        pipe.delete(name)
                    else:
                        pipe.set(name, self._codec.encode(name, new), ex=self._ttl)
                    pipe.execute()
                    return old, new
                except WatchError:
                    continue
        raise RuntimeError(f"{name!r} kept changing: gave up after {CAS_TRIES} tries")

    def _raw_keys(self) -> Iterator[bytes]:
        return self._client.scan_iter(match=glob_escape(self._prefix) + "*", count=BATCH)

    def __iter__(self) -> Iterator[str]:
        cut = len(self._prefix.encode())
        for raw in self._raw_keys():
            yield raw[cut:].decode()

    def __len__(self) -> int:
        return sum(1 for _ in self._raw_keys())

    def _pairs(self) -> Iterator[tuple[str, Any]]:
        """(key, value) in batches of MGET; a key deleted meanwhile (or refused) is skipped."""
        cut = len(self._prefix.encode())
        batch: list[bytes] = []

        def flush():
            for raw_key, raw in zip(batch, self._client.mget(batch)):
                value = None if raw is None else self._decode(raw_key, raw)
                if value is not None:
                    yield raw_key[cut:].decode(), value

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

    def _marker(self) -> str:
        return self._prefix.rstrip(":") + "#format"

    def _migrate(self) -> None:
        """Once per prefix (the first process to open it): rewrite every value of an earlier
        version (a pickle) as JSON, signed if a key is configured. Logged, so an operator sees it."""
        marker = self._marker()
        wanted = FORMAT + ("+hmac" if self._codec.signed else "")
        if as_text(self._client.get(marker) or b"") == wanted:
            return
        counts = {"converted": 0, "refused": 0}
        batch: list[bytes] = []
        for raw_key in self._raw_keys():
            batch.append(raw_key)
            if len(batch) >= BATCH:
                self._migrate_batch(batch, counts)
                batch = []
        if batch:
            self._migrate_batch(batch, counts)
        self._client.set(marker, wanted)
        level = logging.WARNING if any(counts.values()) else logging.INFO  # a fresh prefix: nothing to see
        log.log(level, "redis values migrated to JSON", extra={"prefix": self._prefix, **counts,
                                                               "signed": self._codec.signed})

    def _migrate_batch(self, keys: list[bytes], counts: dict[str, int]) -> None:
        for raw_key, raw in zip(keys, self._client.mget(keys)):
            if raw is None or self._codec.is_current(raw_key, raw):
                continue
            try:
                value = legacy_pickle(raw) if raw[:1] == b"\x80" else StateCodec().decode(raw_key, raw)
            except Exception as exc:  # noqa: BLE001 - whatever it is, it is never used (left for the operator)
                refused(raw_key, exc)
                counts["refused"] += 1
                continue
            ttl = self._client.ttl(raw_key)
            self._client.set(raw_key, self._codec.encode(raw_key, value), ex=ttl if ttl and ttl > 0 else None)
            counts["converted"] += 1

    def close(self) -> None:
        self._client.close()


class _Items(ItemsView):
    def __iter__(self):
        return self._mapping._pairs()


class _Values(ValuesView):
    def __iter__(self):
        return (value for _, value in self._mapping._pairs())


def update_value(mapping: MutableMapping, key: str, update: Update) -> tuple[Any, Any]:
    """`key`'s value changed by `update` (see RedisMapping.modify): by compare-and-set in Redis,
    under a process lock elsewhere (a SqliteDict: one process). (value before, value after)."""
    modify = getattr(mapping, "modify", None)
    if modify is not None:
        return modify(key, update)
    with _LOCAL:
        old = mapping.get(key)
        new = update(old)
        if new is KEEP:
            return old, old
        if new is None:
            mapping.pop(key, None)
        else:
            mapping[key] = new
        return old, new


def state_codec(config: Config) -> StateCodec:
    """The codec of Redis values: signed with the key in env `sessions.redis_hmac_key_env`, if set."""
    return codec_from_env(config.sessions.redis_hmac_key_env)


def open_state_tally(config: Config, redis_key: str, retain_s: float) -> RedisTally | None:
    """With `sessions.backend: redis`, a vote tally under redis_state_prefix + `redis_key` shared by
    every process; None otherwise (the feedback store keeps one in memory)."""
    sessions = config.sessions
    if sessions.backend != "redis":
        return None
    from engine.limits import redis_url

    url = redis_url(sessions.redis_url_env, "sessions")
    return RedisTally(redis_client(url), sessions.redis_state_prefix + redis_key, retain_s)


def open_state_mapping(config: Config, sqlite_file: str, table: str, redis_key: str,
                       ttl_seconds: float | None = None) -> MutableMapping:
    """A mapping of other state (channel settings, feedback, adapters' records), where
    config.sessions.backend keeps it: table `table` of data_dir/`sqlite_file`, or Redis keys under
    redis_state_prefix + `redis_key` (blocking: call it in a worker thread)."""
    sessions = config.sessions
    if sessions.backend == "redis":
        from engine.limits import redis_url

        url = redis_url(sessions.redis_url_env, "sessions")
        return RedisMapping.from_url(url, sessions.redis_state_prefix + redis_key, ttl_seconds, state_codec(config))
    from engine.sqlite_files import open_sqlitedict

    return open_sqlitedict(config.data_path / sqlite_file, table)
