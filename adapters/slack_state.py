"""What the Slack adapter must remember across restarts: the threads Parley is part of, and the
events it has already taken in hand (Slack retries an event it believes undelivered, possibly
after we restarted, and no event may ever be answered twice).

Both live in one sqlitedict file under data_dir, mirrored in memory so a check is a dict lookup
on the event loop; writes go to a worker thread.
"""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from sqlitedict import SqliteDict

log = logging.getLogger(__name__)

SEEN_TTL_S = 3600.0  # Slack retries for about 5 minutes; an hour leaves room for a slow restart


class SlackState:
    def __init__(self, path: Path, thread_ttl_s: float):
        self.path = path
        self.thread_ttl_s = thread_ttl_s
        self._threads: dict[str, float] = {}  # "team/channel/thread_ts" -> last activity
        self._seen: dict[str, float] = {}  # event id / message key / file id -> first seen
        self._threads_db: SqliteDict | None = None
        self._seen_db: SqliteDict | None = None
        self._pending: set[asyncio.Task] = set()

    async def open(self) -> None:
        await asyncio.to_thread(self._open)
        log.info("slack state loaded", extra={"threads": len(self._threads), "seen": len(self._seen)})

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._threads_db = SqliteDict(str(self.path), tablename="threads", autocommit=True)
        self._seen_db = SqliteDict(str(self.path), tablename="seen", autocommit=True)
        now = time.time()
        for db, memory, ttl in ((self._threads_db, self._threads, self.thread_ttl_s),
                                (self._seen_db, self._seen, SEEN_TTL_S)):
            stale = []
            for key, at in db.items():
                if now - at > ttl:
                    stale.append(key)
                else:
                    memory[key] = at
            for key in stale:
                del db[key]

    async def close(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        for db in (self._threads_db, self._seen_db):
            if db is not None:
                db.close()
        self._threads_db = self._seen_db = None

    def _write(self, db: SqliteDict | None, key: str, value: float) -> None:
        if db is None:
            return

        def put() -> None:
            db[key] = value

        task = asyncio.get_running_loop().create_task(asyncio.to_thread(put))
        self._pending.add(task)
        task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("could not persist slack state", exc_info=task.exception())

    # ---- dedupe ------------------------------------------------------------------------------

    def first_time(self, *keys: str, persist: bool = True) -> bool:
        """True, and remember every key, when none of `keys` was seen before. Synchronous, so
        two deliveries of one event racing on the loop cannot both pass. `persist=False` keeps a
        key in memory only (event ids: what must survive a restart is the answer/file key)."""
        keys = tuple(k for k in keys if k)
        now = time.time()
        if any(now - self._seen.get(k, float("-inf")) <= SEEN_TTL_S for k in keys):
            return False
        for key in keys:
            self._seen[key] = now
            if persist:
                self._write(self._seen_db, key, now)
        if len(self._seen) > 50_000:  # a long-running process: forget the oldest
            for key in [k for k, at in self._seen.items() if now - at > SEEN_TTL_S]:
                del self._seen[key]
        return True

    # ---- threads -----------------------------------------------------------------------------

    def is_parley_thread(self, key: str) -> bool:
        at = self._threads.get(key)
        return at is not None and time.time() - at <= self.thread_ttl_s

    def mark_thread(self, key: str) -> None:
        now = time.time()
        previous = self._threads.get(key)
        self._threads[key] = now
        if previous is None or now - previous > 60:  # refresh the disk copy at most once a minute
            self._write(self._threads_db, key, now)
