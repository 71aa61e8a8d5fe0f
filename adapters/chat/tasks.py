"""The work an adapter has taken in hand, and one lock per conversation.

`TaskSet.spawn` runs a handler on the loop and keeps it until it ends (so `close` can let
answers finish, and tests can wait with `idle`); `KeyedLocks.lock` serialises the answers of
one thread, so each sees the previous one in its history.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)

MAX_IDLE_LOCKS = 1000


class TaskSet:
    def __init__(self, name: str):
        self.name = name
        self.closing = False
        self._tasks: set[asyncio.Task] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """Run `coro` as a task of this set; refused (closed unrun) once closing."""
        if self.closing:
            coro.close()
            return
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s task failed", self.name, extra={"task": task.get_name()}, exc_info=task.exception())

    async def idle(self) -> None:
        """Wait until every task taken in hand has ended (and those they spawned)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

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
