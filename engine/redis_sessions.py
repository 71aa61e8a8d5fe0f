"""Sessions in Redis, so several bot processes serving one workspace share every thread's history.

RedisSessions keeps a session as (prefix P, key K):
- `P K`: a hash, the session's header: created_at, updated_at, settings and folded (JSON);
- `P#turns:K`: a list of its turns (JSON), appended with RPUSH;
- `P#active`: a sorted set of the keys by last activity, so counting sessions reads no session.
An answer's turns, the header's timestamps and the index move in one Lua script: atomic across
processes. Past max_turns the oldest turns are folded into the header (a WATCH transaction).
Every write sets the idle-expiry TTL on the header and the list, so Redis forgets an idle thread
by itself. A key written by the layout before (a pickled Session at `P K`) is read as it is,
indexed when a process first opens the store, and converted on its first write.

RedisMapping is a MutableMapping of other state (channel settings, feedback, adapters' records)
under a key prefix; its values are pickles, so only trusted code may write to this Redis.
"""
from __future__ import annotations

import logging
import pickle
import re
import time
from collections.abc import ItemsView, Iterator, MutableMapping, Sequence, ValuesView
from typing import Any

from engine.config import Config
from engine.sessions import SessionStore, compacted
from engine.turns import DEFAULT_MAX_TURNS, NOTHING_FOLDED, Folded, Session, Turn, json_dict, to_json
from engine.vote_tally import RedisTally

log = logging.getLogger(__name__)

BATCH = 200  # keys fetched per MGET while iterating
FOLD_TRIES = 5  # a fold (or a conversion) retried when another process wrote to the thread meanwhile

# KEYS: header, turns, index. ARGV: key, now, ttl (0 = none), settings JSON, "set" | "keep", turns...
# Returns the turns stored, or -1 when the header is in the old layout (convert it first).
_APPEND = """
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'hash' and kind ~= 'none' then return -1 end
for i = 6, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
redis.call('HSETNX', KEYS[1], 'created_at', ARGV[2])
if ARGV[5] == 'set' then redis.call('HSET', KEYS[1], 'settings', ARGV[4])
else redis.call('HSETNX', KEYS[1], 'settings', ARGV[4]) end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
end
return redis.call('LLEN', KEYS[2])
"""
# KEYS: header, turns, index. ARGV: key, cutoff. Deletes the session only if still idle.
_DELETE_IF_IDLE = """
local at = redis.call('ZSCORE', KEYS[3], ARGV[1])
if at and tonumber(at) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[3], ARGV[1])
return redis.call('DEL', KEYS[1], KEYS[2])
"""


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def redis_client(url: str):
    """A synchronous redis client, checked at once (fail at start with a clear error, not at the
    first message)."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
    client.ping()
    return client


class RedisSessions:
    """The SessionBackend over Redis (see the module's docstring for the keys)."""

    def __init__(self, client, prefix: str, ttl_seconds: float | None = None, max_turns: int = DEFAULT_MAX_TURNS):
        self._client = client  # redis.Redis
        self._prefix = prefix
        self._ttl = max(1, int(ttl_seconds)) if ttl_seconds else 0
        self.max_turns = max_turns
        self._index = f"{prefix}#active"
        self._append_script = client.register_script(_APPEND)
        self._delete_script = client.register_script(_DELETE_IF_IDLE)
        self._index_old_layout()

    @classmethod
    def from_url(cls, url: str, prefix: str, ttl_seconds: float | None = None,
                 max_turns: int = DEFAULT_MAX_TURNS) -> "RedisSessions":
        return cls(redis_client(url), prefix, ttl_seconds, max_turns)

    def _keys_of(self, key: str) -> list[str]:
        return [self._prefix + key, f"{self._prefix}#turns:{key}", self._index]

    def read(self, key: str) -> Session | None:
        head, turns, _ = self._keys_of(key)
        pipe = self._client.pipeline(transaction=True)
        pipe.hgetall(head)
        pipe.lrange(turns, -self.max_turns, -1)
        fields, rows = pipe.execute(raise_on_error=False)
        if isinstance(fields, Exception):  # WRONGTYPE: a session of the old layout
            return self._read_old(key)
        if not fields:
            return None
        fields = {_text(k): v for k, v in fields.items()}
        return Session(key, tuple(Turn.from_json(r) for r in rows), float(fields.get("created_at", 0)),
                       float(fields.get("updated_at", 0)), json_dict(fields.get("settings")),
                       Folded.from_json(fields.get("folded")))

    def _read_old(self, key: str) -> Session | None:
        raw = self._client.get(self._prefix + key)
        if raw is None:
            return None
        session = pickle.loads(raw)  # written by this app's earlier versions only
        return compacted(Session(key, tuple(session.turns), session.created_at, session.updated_at,
                                 dict(session.settings or {}), getattr(session, "folded", NOTHING_FOLDED)),
                         self.max_turns)

    def append(self, key: str, turns: Sequence[Turn], settings: dict | None, now: float) -> int:
        return self._write(key, turns, to_json(settings or {}), "keep", now)

    def set_settings(self, key: str, settings: dict, now: float) -> None:
        self._write(key, (), to_json(settings), "set", now)

    def _write(self, key: str, turns: Sequence[Turn], settings: str, mode: str, now: float) -> int:
        args = [key, repr(now), self._ttl, settings, mode, *(t.to_json() for t in turns)]
        for _ in range(FOLD_TRIES):
            stored = self._append_script(keys=self._keys_of(key), args=args)
            if stored >= 0:
                break
            self._convert(key)
        else:
            raise RuntimeError(f"session {key!r} is still in the old layout after {FOLD_TRIES} conversions")
        if stored > self.max_turns:
            self._fold(key)
        return min(stored, self.max_turns)

    def _convert(self, key: str) -> None:
        """Rewrite a session of the old layout in this one (once, whichever process gets there first)."""
        from redis.exceptions import WatchError

        head = self._prefix + key
        with self._client.pipeline() as pipe:
            try:
                pipe.watch(head)
                if _text(pipe.type(head)) != "string":
                    return  # converted (or deleted) meanwhile
                session = self._read_old(key)
                if session is None:
                    return
                pipe.multi()
                pipe.delete(head)
                self._queue_put(pipe, session)
                pipe.execute()
                log.info("session converted to the turn-by-turn layout", extra={"session": key})
            except WatchError:
                return  # another process converted it first

    def _queue_put(self, pipe, session: Session) -> None:
        head, turns, index = self._keys_of(session.key)
        pipe.delete(head, turns)
        fields = {"created_at": repr(session.created_at), "updated_at": repr(session.updated_at),
                  "settings": to_json(session.settings or {})}
        if session.folded:
            fields["folded"] = session.folded.to_json()
        pipe.hset(head, mapping=fields)
        if session.turns:
            pipe.rpush(turns, *(t.to_json() for t in session.turns))
        pipe.zadd(index, {session.key: session.updated_at})
        if self._ttl:
            pipe.expire(head, self._ttl)
            pipe.expire(turns, self._ttl)

    def _fold(self, key: str) -> None:
        """Fold the oldest turns past max_turns into the header (retried when another process wrote
        to the thread meanwhile; given up after FOLD_TRIES, the next write folds them)."""
        from redis.exceptions import WatchError

        head, turns, _ = self._keys_of(key)
        for _ in range(FOLD_TRIES):
            with self._client.pipeline() as pipe:
                try:
                    pipe.watch(head, turns)
                    excess = pipe.llen(turns) - self.max_turns
                    if excess <= 0:
                        return
                    oldest = [Turn.from_json(r) for r in pipe.lrange(turns, 0, excess - 1)]
                    folded = Folded.from_json(pipe.hget(head, "folded")).fold(oldest)
                    pipe.multi()
                    pipe.ltrim(turns, excess, -1)
                    pipe.hset(head, "folded", folded.to_json())
                    pipe.execute()
                    return
                except WatchError:
                    continue

    def put(self, session: Session) -> None:
        pipe = self._client.pipeline(transaction=True)
        self._queue_put(pipe, compacted(session, self.max_turns))
        pipe.execute()

    def exists(self, key: str) -> bool:
        return bool(self._client.exists(self._prefix + key))

    def delete(self, key: str) -> bool:
        head, turns, index = self._keys_of(key)
        pipe = self._client.pipeline(transaction=True)
        pipe.delete(head, turns)
        pipe.zrem(index, key)
        return pipe.execute()[0] > 0

    def _live_from(self) -> float | str:
        """The oldest last activity of a session Redis has not expired."""
        return time.time() - self._ttl if self._ttl else "-inf"

    def keys(self) -> list[str]:
        return [_text(k) for k in self._client.zrangebyscore(self._index, self._live_from(), "+inf")]

    def count(self) -> int:
        return int(self._client.zcount(self._index, self._live_from(), "+inf"))

    def active_since(self, since: float) -> int:
        low = self._live_from()
        return int(self._client.zcount(self._index, since if low == "-inf" else max(since, low), "+inf"))

    def expire_idle(self, cutoff: float) -> int:
        idle = [_text(k) for k in self._client.zrangebyscore(self._index, "-inf", f"({cutoff!r}")]
        return sum(1 for key in idle if self._delete_script(keys=self._keys_of(key), args=[key, repr(cutoff)]))

    def close(self) -> None:
        self._client.close()

    def _index_old_layout(self) -> None:
        """Index the sessions of the old layout by last activity, once per prefix (the first
        process to open it; doing it twice is harmless)."""
        marker = f"{self._prefix}#layout"
        if self._client.exists(marker):
            return
        indexed = 0
        for raw_key in self._client.scan_iter(match=_glob_escape(self._prefix) + "*", count=BATCH):
            key = _text(raw_key)[len(self._prefix):]
            if key.startswith("#") or _text(self._client.type(raw_key)) != "string":
                continue
            session = self._read_old(key)
            if session is not None:
                self._client.zadd(self._index, {key: session.updated_at})
                indexed += 1
        self._client.set(marker, "2")
        if indexed:
            log.info("sessions of the old layout indexed", extra={"count": indexed})


class RedisMapping(MutableMapping):
    """str -> picklable value under a key prefix, over a synchronous redis client."""

    def __init__(self, client, prefix: str, ttl_seconds: float | None = None):
        self._client = client  # redis.Redis
        self._prefix = prefix
        self._ttl = max(1, int(ttl_seconds)) if ttl_seconds else None

    @classmethod
    def from_url(cls, url: str, prefix: str, ttl_seconds: float | None = None) -> "RedisMapping":
        return cls(redis_client(url), prefix, ttl_seconds)

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
        backend = RedisSessions.from_url(url, sessions.redis_prefix, ttl_seconds=sessions.idle_expiry_hours * 3600,
                                         max_turns=sessions.max_turns)
        log.info("sessions in redis", extra={"prefix": sessions.redis_prefix})
        return SessionStore(backend)
    return SessionStore.open_sqlite(config.data_path / "sessions.sqlite", sessions.max_turns)


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
        return RedisMapping.from_url(url, sessions.redis_state_prefix + redis_key, ttl_seconds)
    from sqlitedict import SqliteDict

    path = config.data_path / sqlite_file
    path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteDict(str(path), tablename=table, autocommit=True)
