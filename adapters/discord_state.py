"""The threads Parley opened on Discord, remembered across restarts.

A message in one of them is answered without a mention. Discord tells us a thread's owner when
the thread is in the client's cache, but after a restart an idle thread may not be (only active
threads come with GUILD_CREATE), so the ids and their parent channels are kept in a sqlitedict
file under data_dir, mirrored in memory so a check is a dict lookup on the event loop.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from sqlitedict import SqliteDict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ThreadRecord:
    guild: str
    parent: str  # the channel the thread hangs off: its documents are that channel's
    at: float  # last activity (epoch seconds)


class DiscordThreads:
    def __init__(self, path: Path, ttl_s: float):
        self.path = path
        self.ttl_s = ttl_s
        self._memory: dict[str, ThreadRecord] = {}
        self._db: SqliteDict | None = None
        self._pending: set[asyncio.Task] = set()

    async def open(self) -> None:
        await asyncio.to_thread(self._open)
        log.info("discord threads loaded", extra={"threads": len(self._memory)})

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = SqliteDict(str(self.path), tablename="threads", autocommit=True)
        now = time.time()
        stale = []
        for key, value in self._db.items():
            record = ThreadRecord(*value)
            if now - record.at > self.ttl_s:
                stale.append(key)
            else:
                self._memory[key] = record
        for key in stale:
            del self._db[key]

    async def close(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        db, self._db = self._db, None
        if db is not None:
            await asyncio.to_thread(db.close)

    def get(self, thread_id: int | str) -> ThreadRecord | None:
        record = self._memory.get(str(thread_id))
        if record is None or time.time() - record.at > self.ttl_s:
            return None
        return record

    def mark(self, thread_id: int | str, guild: str, parent: str) -> None:
        """Remember (or refresh) a thread as Parley's; the disk copy at most once a minute."""
        key, now = str(thread_id), time.time()
        previous = self._memory.get(key)
        record = ThreadRecord(guild, parent, now)
        self._memory[key] = record
        if self._db is not None and (previous is None or now - previous.at > 60):
            db = self._db

            def put() -> None:
                db[key] = (record.guild, record.parent, record.at)

            task = asyncio.get_running_loop().create_task(asyncio.to_thread(put))
            self._pending.add(task)
            task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("could not persist a discord thread", exc_info=task.exception())
