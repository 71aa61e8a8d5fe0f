"""Thread memory: which threads are Parley's, and which events and files were already taken in hand.

A message in one of Parley's threads is answered without a mention, so that has to outlive a
restart; a platform retries an event it believes undelivered (Slack does, even after a
restart, and to another process of the same app), and no event may ever be answered twice.

Everything is mirrored in memory, so a check in this process is a dict lookup; the backend
keeps it: a SqliteDict file under data_dir (one process), or Redis (`sessions.backend: redis`)
when several processes serve one app and must agree on every claim (adapters/chat/memory_stores.py).
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Protocol

from adapters.chat.thread_record import ThreadRecord

if TYPE_CHECKING:
    from engine.config import Config

log = logging.getLogger(__name__)

SEEN_TTL_S = 3600.0  # Slack retries for about 5 minutes; an hour leaves room for a slow restart
REFRESH_S = 60.0  # a thread's stored activity time is refreshed at most this often
MAX_SEEN = 50_000


class MemoryStore(Protocol):
    """Where thread memory is kept (adapters.chat.memory_stores: SqliteDict or Redis)."""

    async def load(self, thread_ttl_s: float, seen_ttl_s: float) -> tuple[dict[str, ThreadRecord], dict[str, float]]: ...

    async def get_thread(self, key: str) -> ThreadRecord | None: ...

    async def put_thread(self, key: str, record: ThreadRecord, ttl_s: float) -> None: ...

    async def claim(self, key: str, at: float, ttl_s: float) -> bool: ...

    async def close(self) -> None: ...


class ThreadMemory:
    def __init__(self, store: MemoryStore, thread_ttl_s: float, seen_ttl_s: float = SEEN_TTL_S):
        self.store = store
        self.thread_ttl_s = thread_ttl_s
        self.seen_ttl_s = seen_ttl_s
        self._threads: dict[str, ThreadRecord] = {}
        self._seen: dict[str, float] = {}

    async def open(self) -> None:
        threads, seen = await self.store.load(self.thread_ttl_s, self.seen_ttl_s)
        now = time.time()
        self._threads = {k: r for k, r in threads.items() if now - r.at <= self.thread_ttl_s}
        self._seen = {k: at for k, at in seen.items() if now - at <= self.seen_ttl_s}
        log.info("thread memory loaded", extra={"threads": len(self._threads), "seen": len(self._seen)})

    async def close(self) -> None:
        await self.store.close()

    async def thread(self, key: str) -> ThreadRecord | None:
        """The record of a thread of Parley's, or None (never one, or idle past the expiry)."""
        record = self._threads.get(key)
        if record is None:  # another process may have started it
            record = await self.store.get_thread(key)
            if record is not None:
                self._threads[key] = record
        return record if record is not None and time.time() - record.at <= self.thread_ttl_s else None

    async def mark(self, key: str, workspace: str = "", parent: str = "") -> None:
        """Remember (or refresh) a thread as Parley's."""
        now = time.time()
        previous = self._threads.get(key)
        record = ThreadRecord(workspace or (previous.workspace if previous else ""),
                              parent or (previous.parent if previous else ""), now)
        self._threads[key] = record
        if previous is None or now - previous.at > REFRESH_S:
            await self.store.put_thread(key, record, self.thread_ttl_s)

    async def claim(self, key: str, *, shared: bool = True) -> bool:
        """True for the first claim of `key`: this process's (checked before anything is awaited,
        so two deliveries racing on the loop cannot both pass) and, when `shared`, every process's.
        Not shared: this process only, and not kept across a restart (event ids)."""
        now = time.time()
        if now - self._seen.get(key, float("-inf")) <= self.seen_ttl_s:
            return False
        self._seen[key] = now
        if len(self._seen) > MAX_SEEN:  # a long-running process: forget the oldest
            for k in [k for k, at in self._seen.items() if now - at > self.seen_ttl_s]:
                del self._seen[k]
        return await self.store.claim(key, now, self.seen_ttl_s) if shared else True


def open_thread_memory(config: Config, platform: str) -> ThreadMemory:
    """The memory of one platform's adapter, kept where config.sessions.backend says."""
    from adapters.chat.memory_stores import RedisMemoryStore, SqliteMemoryStore

    sessions = config.sessions
    if sessions.backend == "redis":
        from engine.limits import redis_url

        from engine.redis_state import state_codec

        url = redis_url(sessions.redis_url_env, "sessions")
        store: MemoryStore = RedisMemoryStore(url, f"{sessions.redis_state_prefix}{platform}:", state_codec(config))
    else:
        store = SqliteMemoryStore(config.data_path / f"{platform}_state.sqlite")
    return ThreadMemory(store, thread_ttl_s=sessions.idle_expiry_hours * 3600)
