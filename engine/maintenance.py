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

if TYPE_CHECKING:
    from engine.core import Engine

log = logging.getLogger(__name__)


class Maintenance:
    def __init__(self, engine: "Engine"):
        self.engine = engine
        self._tasks: list[asyncio.Task] = []
        self.last_run: dict[str, float] = {}  # job -> when it last finished (time.time())
        self.last_result: dict[str, object] = {}

    def start(self) -> None:
        m = self.engine.config.maintenance
        jobs: list[tuple[str, float, Callable[[], Awaitable[object]], bool]] = [
            # (name, interval s, job, run once right at start)
            ("memory", m.memory_check_minutes * 60, self.check_memory, True),
            ("sessions", m.session_expiry_minutes * 60, self.expire_sessions, True),
        ]
        if self.engine.knowledge is not None:
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
        monitor = self.engine.monitor
        return await monitor.check() if monitor is not None else None

    async def expire_sessions(self) -> int:
        sessions = self.engine.sessions
        if sessions is None:
            return 0
        max_idle = self.engine.config.sessions.idle_expiry_hours * 3600
        return await asyncio.to_thread(sessions.expire_idle, max_idle)

    async def check_knowledge(self) -> dict:
        knowledge = self.engine.knowledge
        if knowledge is None:
            return {}
        if inspect.iscoroutinefunction(knowledge.check):
            result = await knowledge.check()
        else:
            result = await asyncio.to_thread(knowledge.check)
        log.info("knowledge check done", extra={"result": result})
        return result
