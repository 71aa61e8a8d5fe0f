"""The work an adapter has taken in hand, and one lock per conversation.

`TaskSet.spawn` runs a handler on the loop and keeps it until it ends (so `close` can let
answers finish, and tests can wait with `idle`). The set is bounded (limits.tasks_in_flight):
work people ask for (a message, a command, a summary) is spawned `bounded`, with a `Busy` note
for whoever addressed Parley, and past the bound it is refused (the note said) instead of joining
an ever-longer backlog; housekeeping (a deleted file's document forgotten) always runs. `KeyedLocks.lock`
serialises the answers of one thread, so each sees the previous one in its history.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

MAX_IDLE_LOCKS = 1000
BUSY_TEXT = "I'm busy — try again in a minute."
BUSY_NOTICE_S = 60.0  # each asker hears "busy" at most once in this long
MAX_NOTICES = 32  # "busy" notes being sent at once; past it they are dropped (logged)


@dataclass(frozen=True)
class Busy:
    """What to tell whoever asked for a task refused because the set is full: `send` (the
    platform's private reply, saying BUSY_TEXT), at most once a minute per `key` (the asker)."""

    key: str
    send: Callable[[], Awaitable[Any]]


class TaskSet:
    def __init__(self, name: str, limit: int = 0):
        self.name = name
        self.limit = limit  # tasks in flight past which asked-for work is refused; 0: no bound
        self.closing = False
        self.refused = 0  # tasks refused because the set was full, for the log and tests
        self._tasks: set[asyncio.Task] = set()
        self._notices: set[asyncio.Task] = set()
        self._told: dict[str, float] = {}  # asker -> monotonic time they may hear "busy" again
        self._quiet_logged = float("-inf")  # when a refusal with nobody to tell was last logged

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str, *, bounded: bool = False,
              busy: Busy | None = None) -> bool:
        """Run `coro` as a task of this set; False when refused (closed unrun): once closing, or,
        for work asked for (`bounded`, or a `busy` note given), while the set is full: then the
        asker, if any, is told."""
        if self.closing:
            coro.close()
            return False
        if (bounded or busy is not None) and self.limit and len(self._tasks) >= self.limit:
            coro.close()
            self.refused += 1
            if busy is not None:
                self._tell(busy, name)
            elif time.monotonic() - self._quiet_logged > BUSY_NOTICE_S:  # once a minute, not once a message
                self._quiet_logged = time.monotonic()
                log.warning("%s is full: work refused", self.name, extra={"task": name, "limit": self.limit})
            return False
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return True

    def _tell(self, busy: Busy, name: str) -> None:
        now = time.monotonic()
        if self._told.get(busy.key, 0.0) > now:
            return  # told a moment ago: a flood gets one note
        if len(self._told) > MAX_IDLE_LOCKS:
            self._told = {k: until for k, until in self._told.items() if until > now}
        self._told[busy.key] = now + BUSY_NOTICE_S
        if len(self._notices) >= MAX_NOTICES:
            log.warning("%s is full: a busy note dropped", self.name, extra={"task": name})
            return
        log.warning("%s is full: work refused", self.name, extra={"task": name, "limit": self.limit})
        notice = asyncio.ensure_future(busy.send())
        self._notices.add(notice)
        notice.add_done_callback(self._noticed)

    def _noticed(self, task: asyncio.Task) -> None:
        self._notices.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("%s could not say it is busy", self.name, exc_info=task.exception())

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s task failed", self.name, extra={"task": task.get_name()}, exc_info=task.exception())

    async def idle(self) -> None:
        """Wait until every task taken in hand has ended (and those they spawned, and busy notes)."""
        while self._tasks or self._notices:
            await asyncio.wait(self._tasks | self._notices)

    async def close(self, grace_s: float) -> None:
        """Take no more work; give the tasks in hand `grace_s` to finish, then cancel them."""
        self.closing = True
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)


class KeyedLocks:
    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            if len(self._locks) > MAX_IDLE_LOCKS:  # forget idle locks now and then
                for k in [k for k, v in self._locks.items() if not v.locked()]:
                    del self._locks[k]
            lock = self._locks[key] = asyncio.Lock()
        return lock
