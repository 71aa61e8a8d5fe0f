"""Ingests as bounded jobs: how many index at once, in all and per person, and who waits.

An ingest reads its file in a parse worker, embeds every chunk on the embedder's one worker
thread and writes the store: minutes of blocking work for a large file. It used to hold a thread
of asyncio's default pool (cores + 4 threads) all that time, and nothing capped how many ran, so
enough uploads at once queued every other `to_thread` call (session reads, channel settings,
search, prompt planning) behind them. Now:

- ingests run on threads of their own (Ingests' pool, one per slot): the default pool, which the
  answer path uses, only ever holds short work;
- at most `knowledge.max_concurrent_ingests` run at once, and at most
  `knowledge.max_ingests_per_user` of one person's; the others wait in line, first come first
  served among those whose sharer may start one, each told how many files are ahead of it;
- at most `knowledge.max_queued_ingests` wait; past that an upload is refused (QUEUE_FULL);
- a waiting job that is cancelled leaves the line at once and never starts; at shutdown the line
  is closed, every job cancelled and the running ones awaited (each undoes its own writes).

The line lives on the event loop (no lock): jobs enter, leave and are granted there; a cancel from
any thread reaches it through call_soon_threadsafe.
"""
from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from engine.config import KnowledgeConfig
from engine.errors import ErrorCode, ParleyError
from engine.knowledge.ingesting import RESTARTING, IngestJob
from engine.knowledge.ingestor import Ingestor, ProgressRelay
from engine.types import FileUpload, IngestResult, ProgressCallback

__all__ = ["IngestCaps", "IngestLine", "Ingests", "owner_of"]

log = logging.getLogger(__name__)

Told = Callable[[int, int], None]  # (files ahead of this one, files waiting in all)


@dataclass(frozen=True)
class IngestCaps:
    """How many ingests may run at once (in all, of one person) and how many may wait."""

    running: int
    per_user: int
    queued: int

    @classmethod
    def from_config(cls, config: KnowledgeConfig) -> IngestCaps:
        return cls(running=config.max_concurrent_ingests, per_user=config.max_ingests_per_user,
                   queued=config.max_queued_ingests)


def owner_of(upload: FileUpload) -> str:
    """Whose cap an upload counts against: one person in one workspace."""
    where = upload.where
    return f"{where.platform}/{where.workspace}/{upload.user.id}"


def restarting() -> ParleyError:
    return ParleyError(ErrorCode.SHUTTING_DOWN, "Parley is restarting; please share the file again in a minute.")


@dataclass(eq=False)
class _Waiting:
    job: IngestJob
    owner: str
    told: Told
    decided: asyncio.Future  # True: a slot is this job's; False: it was cancelled while waiting
    ahead: int = -1  # what it was last told


class IngestLine:
    """The running ingests and the line of those waiting (on the event loop)."""

    def __init__(self, caps: IngestCaps):
        self.caps = caps
        self._running: Counter[str] = Counter()
        self._waiting: list[_Waiting] = []
        self._closed = False
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def running(self) -> int:
        return sum(self._running.values())

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @contextlib.asynccontextmanager
    async def turn(self, job: IngestJob, owner: str, told: Told) -> AsyncIterator[None]:
        """Hold a slot while the body runs: at once if the caps allow, else after waiting in line
        (`told` hears the files ahead each time that changes). Raises QUEUE_FULL when the line is
        full, the job's own error when it is cancelled while waiting, SHUTTING_DOWN once closed."""
        await self._enter(job, owner, told)
        try:
            yield
        finally:
            self._leave(owner)

    def _may_start(self, owner: str) -> bool:
        return self.running < self.caps.running and self._running[owner] < self.caps.per_user

    def _grant(self, owner: str) -> None:
        self._running[owner] += 1
        self._idle.clear()

    async def _enter(self, job: IngestJob, owner: str, told: Told) -> None:
        if self._closed:
            raise restarting()
        job.check()
        # Every waiting job that could start has started (_dispatch), so one that may start now
        # passes nobody who could have gone first.
        if self._may_start(owner):
            self._grant(owner)
            return
        if len(self._waiting) >= self.caps.queued:
            raise ParleyError(ErrorCode.QUEUE_FULL,
                              f"{len(self._waiting)} files are already waiting to be indexed; please share "
                              f"{job.filename} again in a few minutes.")
        loop = asyncio.get_running_loop()
        waiting = _Waiting(job, owner, told, loop.create_future())
        self._waiting.append(waiting)
        stop_listening = job.on_cancel(lambda: loop.call_soon_threadsafe(self._withdraw, waiting))
        log.info("ingest waiting", extra={"file": job.filename, "ahead": len(self._waiting) - 1,
                                          "running": self.running})
        self._tell()
        try:
            granted = await waiting.decided
        except BaseException:  # the caller went away: leave the line, or give back a slot just granted
            if waiting in self._waiting:
                self._waiting.remove(waiting)
                self._tell()
            elif waiting.decided.done() and not waiting.decided.cancelled() and waiting.decided.result():
                self._leave(owner)
            raise
        finally:
            stop_listening()
        if not granted:
            job.check()  # raises: cancelled by its sharer, an admin, or the shutdown
            raise restarting()

    def _withdraw(self, waiting: _Waiting) -> None:
        """A waiting job was cancelled: out of the line, never started."""
        if waiting in self._waiting:
            self._waiting.remove(waiting)
            if not waiting.decided.done():
                waiting.decided.set_result(False)
            self._tell()

    def _leave(self, owner: str) -> None:
        self._running[owner] -= 1
        if self._running[owner] <= 0:
            del self._running[owner]
        self._dispatch()
        if not self._running:
            self._idle.set()

    def _dispatch(self) -> None:
        """Start the first waiting jobs whose sharers may start one, while slots are free."""
        for waiting in list(self._waiting):
            if self.running >= self.caps.running:
                break
            if self._running[waiting.owner] < self.caps.per_user and not waiting.decided.done():
                self._waiting.remove(waiting)
                self._grant(waiting.owner)
                waiting.decided.set_result(True)
        self._tell()

    def _tell(self) -> None:
        total = len(self._waiting)
        for ahead, waiting in enumerate(self._waiting):
            if waiting.ahead != ahead:
                waiting.ahead = ahead
                try:
                    waiting.told(ahead, total)
                except Exception:  # noqa: BLE001 - a failing progress display must not stall the line
                    log.warning("ingest position not told", exc_info=True)

    def close(self) -> int:
        """Take no more jobs and end the line: each waiting job is cancelled (it raises
        SHUTTING_DOWN). Returns how many were waiting."""
        self._closed = True
        waiting = list(self._waiting)
        self._waiting.clear()
        for w in waiting:
            w.job.cancel(why=RESTARTING)
            if not w.decided.done():
                w.decided.set_result(False)
        return len(waiting)

    async def wait_idle(self, timeout_s: float) -> int:
        """Wait until no ingest runs (at most `timeout_s`); returns how many still do."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        return self.running


class Ingests:
    """Uploads as jobs: accepted (cheap refusals first, then cancellable), in line for a slot,
    run on the ingests' own threads, their progress relayed to the event loop."""

    def __init__(self, ingestor: Ingestor, caps: IngestCaps):
        self._ingestor = ingestor
        self.line = IngestLine(caps)
        # One thread per slot: the line never grants more, so a job never waits here.
        self._pool = ThreadPoolExecutor(max_workers=caps.running, thread_name_prefix="ingest")

    async def run(self, upload: FileUpload, progress: ProgressCallback | None = None) -> IngestResult:
        job = self._ingestor.accept(upload)
        relay = ProgressRelay(progress)
        try:
            async with self.line.turn(job, owner_of(upload),
                                      lambda ahead, waiting: relay.emit("queued", ahead, waiting, "files")):
                return await self._on_thread(job, functools.partial(self._ingestor.run, upload, job, relay.emit))
        finally:
            self._ingestor.jobs.finish(job)
            await relay.settle()

    async def _on_thread(self, job: IngestJob, work: Callable[[], IngestResult]) -> IngestResult:
        """Run `work` on an ingest thread. If the caller is cancelled, so is the job, and its slot
        is kept until the thread has undone what it wrote."""
        loop = asyncio.get_running_loop()
        running = loop.run_in_executor(self._pool, contextvars.copy_context().run, work)
        try:
            return await asyncio.shield(running)
        except asyncio.CancelledError:
            job.cancel(why=RESTARTING)
            with contextlib.suppress(BaseException):
                await running
            raise

    async def stop(self, timeout_s: float) -> int:
        """Shutdown: refuse new jobs, cancel the waiting and the running ones, wait (at most
        `timeout_s`) for the running ones to undo their writes. Returns how many still run."""
        waiting = self.line.close()
        jobs = self._ingestor.jobs.all()
        for job in jobs:
            job.cancel(why=RESTARTING)
        running = self.line.running
        left = await self.line.wait_idle(timeout_s)
        if jobs:
            log.info("ingests cancelled for shutdown", extra={"waiting": waiting, "running": running,
                                                              "still_running": left})
        return left

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
