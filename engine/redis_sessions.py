"""Sessions in Redis, so several bot processes serving one workspace share every thread's history.

RedisSessions keeps a session as (prefix P, key K):
- `P K`: a hash, the session's header: created_at, updated_at, settings and folded (JSON);
- `P#turns:K`: a list of its turns (JSON), appended with RPUSH;
- `P#active`: a sorted set of the keys by last activity, so counting sessions reads no session.
An answer's turns, the header's timestamps and the index move in one Lua script: atomic across
processes. Past max_turns the oldest turns are folded into the header (a WATCH transaction).
Every write sets the idle-expiry TTL on the header and the list, so Redis forgets an idle thread
by itself. With the state HMAC key (sessions.redis_hmac_key_env) each turn and each header field
is signed (engine/state_codec.py), bound to its key: a turn planted in the list is refused.
A key written by the layout before (a pickled Session at `P K`) is converted to this layout once,
by the first process to open the store (read by the restricted unpickler of
engine/state_codec.py, logged); after that a value of the old layout is refused.

Other state (channel settings, feedback, records) is in engine/redis_state.py (RedisMapping).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from engine.config import Config
from engine.redis_state import (BATCH, RedisMapping, as_text, glob_escape, open_state_mapping, open_state_tally,
                                redis_client, state_codec)
from engine.sessions import SessionStore, compacted
from engine.state_codec import SIGNED, Refused, StateCodec, legacy_pickle, refused
from engine.turns import DEFAULT_MAX_TURNS, NOTHING_FOLDED, Folded, Session, Turn, json_dict, to_json

__all__ = ["RedisMapping", "RedisSessions", "open_session_store", "open_state_mapping", "open_state_tally",
           "redis_client"]

log = logging.getLogger(__name__)

FOLD_TRIES = 5  # a fold retried when another process wrote to the thread meanwhile
LAYOUT = "3"  # the marker once every session of the prefix is in the JSON layout

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


class RedisSessions:
    """The SessionBackend over Redis (see the module's docstring for the keys)."""

    def __init__(self, client, prefix: str, ttl_seconds: float | None = None, max_turns: int = DEFAULT_MAX_TURNS,
                 codec: StateCodec | None = None):
        self._client = client  # redis.Redis
        self._prefix = prefix
        self._codec = codec or StateCodec()  # each turn and header field signed when a key is configured
        self._ttl = max(1, int(ttl_seconds)) if ttl_seconds else 0
        self.max_turns = max_turns
        self._index = f"{prefix}#active"
        self._append_script = client.register_script(_APPEND)
        self._delete_script = client.register_script(_DELETE_IF_IDLE)
        self._migrate_old_layout()

    @classmethod
    def from_url(cls, url: str, prefix: str, ttl_seconds: float | None = None,
                 max_turns: int = DEFAULT_MAX_TURNS, codec: StateCodec | None = None) -> "RedisSessions":
        return cls(redis_client(url), prefix, ttl_seconds, max_turns, codec)

    def _keys_of(self, key: str) -> list[str]:
        return [self._prefix + key, f"{self._prefix}#turns:{key}", self._index]

    def read(self, key: str) -> Session | None:
        head, turns, _ = self._keys_of(key)
        pipe = self._client.pipeline(transaction=True)
        pipe.hgetall(head)
        pipe.lrange(turns, -self.max_turns, -1)
        fields, rows = pipe.execute(raise_on_error=False)
        if isinstance(fields, Exception):  # WRONGTYPE: not this layout (the migration converted them all)
            log.error("redis session refused: not in the turn-by-turn layout", extra={"session": key})
            return None
        if not fields:
            return None
        fields = {as_text(k): v for k, v in fields.items()}
        kept = tuple(Turn.from_json(r) for r in (self._opened(turns, r) for r in rows) if r is not None)
        settings = json_dict(self._opened(f"{head}#settings", fields.get("settings")))
        folded = Folded.from_json(self._opened(f"{head}#folded", fields.get("folded")))
        return Session(key, kept, float(fields.get("created_at", 0)), float(fields.get("updated_at", 0)),
                       settings, folded)

    def _opened(self, name: str, raw: bytes | None) -> bytes | None:
        """A stored turn or header field's JSON; None (logged) when its signature fails."""
        if raw is None:
            return None
        try:
            return self._codec.unseal(name, raw)
        except Refused as exc:
            refused(name, exc)
            return None

    def _read_old(self, key: str) -> Session | None:
        raw = self._client.get(self._prefix + key)
        if raw is None:
            return None
        session = legacy_pickle(raw)  # the one-time migration only: containers and dataclasses, no calls
        return compacted(Session(key, tuple(session.turns), session.created_at, session.updated_at,
                                 dict(session.settings or {}), getattr(session, "folded", NOTHING_FOLDED)),
                         self.max_turns)

    def append(self, key: str, turns: Sequence[Turn], settings: dict | None, now: float) -> int:
        return self._write(key, turns, to_json(settings or {}), "keep", now)

    def set_settings(self, key: str, settings: dict, now: float) -> None:
        self._write(key, (), to_json(settings), "set", now)

    def _write(self, key: str, turns: Sequence[Turn], settings: str, mode: str, now: float) -> int:
        head, rows, _ = self._keys_of(key)
        args = [key, repr(now), self._ttl, self._codec.seal(f"{head}#settings", settings), mode,
                *(self._codec.seal(rows, t.to_json()) for t in turns)]
        stored = self._append_script(keys=self._keys_of(key), args=args)
        if stored < 0:  # someone wrote a plain value there: refused, never read
            raise RuntimeError(f"session {key!r} is not in the turn-by-turn layout: refused")
        if stored > self.max_turns:
            self._fold(key)
        return min(stored, self.max_turns)

    def _convert(self, key: str) -> int:
        """Rewrite a session of the old layout in this one (once, whichever process gets there first)."""
        from redis.exceptions import WatchError

        head = self._prefix + key
        with self._client.pipeline() as pipe:
            try:
                pipe.watch(head)
                if as_text(pipe.type(head)) != "string":
                    return 0  # converted (or deleted) meanwhile
                session = self._read_old(key)
                if session is None:
                    return 0
                pipe.multi()
                pipe.delete(head)
                self._queue_put(pipe, session)
                pipe.execute()
                return 1
            except WatchError:
                return 0  # another process converted it first

    def _queue_put(self, pipe, session: Session) -> None:
        head, turns, index = self._keys_of(session.key)
        pipe.delete(head, turns)
        fields = {"created_at": repr(session.created_at), "updated_at": repr(session.updated_at),
                  "settings": self._codec.seal(f"{head}#settings", to_json(session.settings or {}))}
        if session.folded:
            fields["folded"] = self._codec.seal(f"{head}#folded", session.folded.to_json())
        pipe.hset(head, mapping=fields)
        if session.turns:
            pipe.rpush(turns, *(self._codec.seal(turns, t.to_json()) for t in session.turns))
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
                    kept = (self._opened(turns, r) for r in pipe.lrange(turns, 0, excess - 1))
                    oldest = [Turn.from_json(r) for r in kept if r is not None]
                    folded = Folded.from_json(self._opened(f"{head}#folded", pipe.hget(head, "folded"))).fold(oldest)
                    pipe.multi()
                    pipe.ltrim(turns, excess, -1)
                    pipe.hset(head, "folded", self._codec.seal(f"{head}#folded", folded.to_json()))
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
        return [as_text(k) for k in self._client.zrangebyscore(self._index, self._live_from(), "+inf")]

    def count(self) -> int:
        return int(self._client.zcount(self._index, self._live_from(), "+inf"))

    def active_since(self, since: float) -> int:
        low = self._live_from()
        return int(self._client.zcount(self._index, since if low == "-inf" else max(since, low), "+inf"))

    def expire_idle(self, cutoff: float) -> int:
        idle = [as_text(k) for k in self._client.zrangebyscore(self._index, "-inf", f"({cutoff!r}")]
        return sum(1 for key in idle if self._delete_script(keys=self._keys_of(key), args=[key, repr(cutoff)]))

    def close(self) -> None:
        self._client.close()

    def _migrate_old_layout(self) -> None:
        """Convert the sessions of the old layout (pickles), once per prefix: the first process to
        open it (two at once convert each session once: _convert is a WATCH transaction). Logged."""
        marker = f"{self._prefix}#layout"
        wanted = LAYOUT + ("+hmac" if self._codec.signed else "")
        if as_text(self._client.get(marker) or b"") == wanted:
            return
        converted = 0
        for raw_key in self._client.scan_iter(match=glob_escape(self._prefix) + "*", count=BATCH):
            key = as_text(raw_key)[len(self._prefix):]
            if key.startswith("#") or as_text(self._client.type(raw_key)) != "string":
                continue
            try:
                converted += self._convert(key)
            except Exception as exc:  # noqa: BLE001 - not a session of ours: never read (left for the operator)
                refused(raw_key, exc)
        signed = sum(self._sign(as_text(k)) for k in self._client.zrange(self._index, 0, -1)) \
            if self._codec.signed else 0
        self._client.set(marker, wanted)
        level = logging.WARNING if converted or signed else logging.INFO
        log.log(level, "redis sessions migrated from pickles to JSON", extra={"prefix": self._prefix,
                                                                             "converted": converted, "signed": signed})

    def _sign(self, key: str) -> int:
        """Sign a session's unsigned turns and header fields (a key was configured since they were
        written): 1 if this call did."""
        from redis.exceptions import WatchError

        head, turns, _ = self._keys_of(key)
        with self._client.pipeline() as pipe:
            try:
                pipe.watch(head, turns)
                rows = pipe.lrange(turns, 0, -1)
                fields = {as_text(k): v for k, v in pipe.hgetall(head).items() if as_text(k) in ("settings", "folded")}
                ttl = pipe.ttl(head)
                pipe.multi()
                pipe.delete(turns)
                if rows:
                    pipe.rpush(turns, *(r if r.startswith(SIGNED) else self._codec.seal(turns, r) for r in rows))
                for name, raw in fields.items():
                    pipe.hset(head, name, raw if raw.startswith(SIGNED) else self._codec.seal(f"{head}#{name}", raw))
                if ttl and ttl > 0:
                    pipe.expire(turns, ttl)
                pipe.execute()
                return 1
            except WatchError:
                return 0  # written meanwhile by a process that signs


def open_session_store(config: Config) -> SessionStore:
    """The session store config.sessions.backend asks for (blocking: call it in a worker thread)."""
    sessions = config.sessions
    if sessions.backend == "redis":
        from engine.limits import redis_url

        url = redis_url(sessions.redis_url_env, "sessions")
        backend = RedisSessions.from_url(url, sessions.redis_prefix, ttl_seconds=sessions.idle_expiry_hours * 3600,
                                         max_turns=sessions.max_turns, codec=state_codec(config))
        log.info("sessions in redis", extra={"prefix": sessions.redis_prefix})
        return SessionStore(backend)
    return SessionStore.open_sqlite(config.data_path / "sessions.sqlite", sessions.max_turns)
