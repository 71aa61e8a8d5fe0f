"""Maintenance as asyncio tasks: memory checks, idle-session expiry, the daily knowledge check.

Each job runs on its own interval from config.maintenance; blocking work goes to a thread, so
the event loop keeps serving. A failing job is logged and tried again next interval.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import TYPE_CHECKING, Awaitable, Callable

from engine.config import MaintenanceConfig
from engine.leader import Leader, LocalLeader, open_leader
from engine.monitor import MemoryMonitor
from engine.sessions import SessionStore

if TYPE_CHECKING:
    from engine.knowledge import KnowledgeBase

__all__ = ["Maintenance", "open_leader"]

log = logging.getLogger(__name__)


class Maintenance:
    """The periodic jobs over the memory monitor, the session store and the knowledge base."""

    def __init__(self, config: MaintenanceConfig, *, monitor: MemoryMonitor | None, sessions: SessionStore | None,
                 knowledge: KnowledgeBase | None, idle_expiry_hours: float, leader: Leader | None = None):
        self.config = config
        self.leader: Leader = leader or LocalLeader()  # the knowledge check runs on one replica
        self.monitor = monitor
        self.sessions = sessions
        self.knowledge = knowledge
        self._max_idle_s = idle_expiry_hours * 3600
        self._tasks: list[asyncio.Task] = []
        self.last_run: dict[str, float] = {}  # job -> when it last finished (time.time())
        self.last_result: dict[str, object] = {}

    def start(self) -> None:
        m = self.config
        jobs: list[tuple[str, float, Callable[[], Awaitable[object]], bool]] = [
            # (name, interval s, job, run once right at start)
            ("memory", m.memory_check_minutes * 60, self.check_memory, True),
            ("sessions", m.session_expiry_minutes * 60, self.expire_sessions, True),
        ]
        if self.knowledge is not None:
            # Not at start: a restart should not pay for a full store scan before serving.
            jobs.append(("knowledge", m.knowledge_check_hours * 3600, self.check_knowledge, False))
        for name, interval, job, at_start in jobs:
            self._tasks.append(asyncio.create_task(self._every(name, interval, job, at_start),
                                                   name=f"maintenance-{name}"))
        log.info("maintenance started", extra={"jobs": [j[0] for j in jobs]})

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.leader.close()

    async def _every(self, name: str, interval: float, job: Callable[[], Awaitable[object]], at_start: bool) -> None:
        if not at_start:
            await asyncio.sleep(interval)
        while True:
            started = time.perf_counter()
            try:
                self.last_result[name] = await job()
                self.last_run[name] = time.time()
                log.debug("maintenance job done", extra={"job": name,
                                                         "seconds": round(time.perf_counter() - started, 3)})
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one bad run must not end the schedule
                log.exception("maintenance job failed", extra={"job": name})
            await asyncio.sleep(interval)

    # ---- the jobs (also callable directly) ---------------------------------------------------

    async def check_memory(self):
        monitor = self.monitor
        return await monitor.check() if monitor is not None else None

    async def expire_sessions(self) -> int:
        if self.sessions is None:
            return 0
        return await asyncio.to_thread(self.sessions.expire_idle, self._max_idle_s)

    async def check_knowledge(self) -> dict:
        knowledge = self.knowledge
        if knowledge is None:
            return {}
        async with self.leader.lead("knowledge-check") as leading:
            if not leading:  # another replica checks the shared store now
                return {"skipped": "another replica leads the check"}
            if inspect.iscoroutinefunction(knowledge.check):
                result = await knowledge.check()
            else:
                result = await asyncio.to_thread(knowledge.check)
        log.info("knowledge check done", extra={"result": result})
        return result
