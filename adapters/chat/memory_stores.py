"""Where thread memory is kept: a SqliteDict file (one process) or Redis (several processes).

SqliteDict (WAL, synchronous=NORMAL): loaded whole at open; every write is awaited (written
through), so a claim that decides "answer this once" is on disk before the answer starts, and a
kill -9 right after cannot make a restarted process answer the same event again. Redis: nothing
is loaded; a thread another process started is looked up on demand, and a claim is SET NX, so of
two processes handed the same event only one takes it.
"""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from adapters.chat.thread_record import ThreadRecord
from engine.sqlite_files import open_sqlitedict
from engine.state_codec import Refused, StateCodec, refused

log = logging.getLogger(__name__)


class SqliteMemoryStore:
    def __init__(self, path: Path):
        self.path = path
        self._threads = None  # SqliteDict tables, once open
        self._seen = None

    async def load(self, thread_ttl_s: float, seen_ttl_s: float) -> tuple[dict[str, ThreadRecord], dict[str, float]]:
        return await asyncio.to_thread(self._load, thread_ttl_s, seen_ttl_s)

    def _load(self, thread_ttl_s: float, seen_ttl_s: float) -> tuple[dict[str, ThreadRecord], dict[str, float]]:
        self._threads = open_sqlitedict(self.path, "threads")
        self._seen = open_sqlitedict(self.path, "seen")
        threads = {}
        for key, value in self._threads.items():  # (workspace, parent, at); older files kept `at` alone
            threads[key] = ThreadRecord("", "", float(value)) if isinstance(value, (int, float)) \
                else ThreadRecord(*value)
        seen = dict(self._seen.items())
        now = time.time()  # what has expired goes from the file too
        for db, stale in ((self._threads, [k for k, r in threads.items() if now - r.at > thread_ttl_s]),
                          (self._seen, [k for k, at in seen.items() if now - at > seen_ttl_s])):
            for key in stale:
                del db[key]
        return threads, seen

    async def get_thread(self, key: str) -> ThreadRecord | None:
        return None  # loaded whole: what is not in memory is not stored either

    async def put_thread(self, key: str, record: ThreadRecord, ttl_s: float) -> None:
        await self._write(self._threads, key, (record.workspace, record.parent, record.at))

    async def claim(self, key: str, at: float, ttl_s: float) -> bool:
        await self._write(self._seen, key, at)  # on disk before the caller acts on the claim
        return True

    async def _write(self, db, key: str, value) -> None:
        if db is None:
            return

        def put() -> None:
            db[key] = value
            db.commit(blocking=True)  # autocommit queues it: wait until SQLite has it

        try:
            await asyncio.to_thread(put)
        except Exception:  # noqa: BLE001 - memory still decided; the file is behind until the next write
            log.error("could not persist thread memory", exc_info=True)

    async def close(self) -> None:
        dbs = [db for db in (self._threads, self._seen) if db is not None]
        self._threads = None
        self._seen = None
        await asyncio.to_thread(lambda: [db.close() for db in dbs])


class RedisMemoryStore:
    def __init__(self, url: str, prefix: str, codec: StateCodec | None = None):
        import redis.asyncio as aioredis

        self._client = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._prefix = prefix
        self._codec = codec or StateCodec()  # thread records are JSON, signed with the state key if set

    async def load(self, thread_ttl_s: float, seen_ttl_s: float) -> tuple[dict[str, ThreadRecord], dict[str, float]]:
        await self._client.ping()  # fail at start with a clear error, not at the first message
        return {}, {}

    async def get_thread(self, key: str) -> ThreadRecord | None:
        name = f"{self._prefix}thread:{key}"
        raw = await self._client.get(name)
        if not raw:
            return None
        try:
            return ThreadRecord(*self._codec.decode(name, raw))
        except (Refused, TypeError) as exc:  # not a record of ours: the thread is not Parley's
            refused(name, exc)
            return None

    async def put_thread(self, key: str, record: ThreadRecord, ttl_s: float) -> None:
        name = f"{self._prefix}thread:{key}"
        value = self._codec.encode(name, [record.workspace, record.parent, record.at])
        await self._client.set(name, value, ex=max(1, int(ttl_s)))

    async def claim(self, key: str, at: float, ttl_s: float) -> bool:
        return bool(await self._client.set(f"{self._prefix}seen:{key}", at, nx=True, ex=max(1, int(ttl_s))))

    async def close(self) -> None:
        await self._client.aclose()
