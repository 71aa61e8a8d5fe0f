"""What a generation request is and what comes back from it, free of torch: the sampling settings,
the stream of events (queued, text, finished) and the handle a caller iterates and cancels.

Every backend speaks this: the local scheduler (engine/runtime/scheduler.py) and a remote OpenAI-compatible
server (engine/runtime/remote.py) alike, so a deployment that only talks to a server never imports torch.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from engine.errors import ParleyError

__all__ = ["SamplingParams", "GenQueued", "GenText", "GenFinished", "Event", "GenerationStream",
           "GenerationHandle"]


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    max_new_tokens: int = 256
    repetition_penalty: float = 1.0
    seed: int | None = None
    # Stop tokens are suppressed until this many tokens are out (benchmarks use it for fixed lengths).
    min_new_tokens: int = 0
    # Work nobody reads token by token (a summary's parts): the local scheduler serves waiting
    # answers first and prefills a long background prompt in slices between their steps.
    background: bool = False

    @classmethod
    def from_defaults(cls, g, **overrides) -> "SamplingParams":
        """Settings from a model's GenerationDefaults (engine.config), with `overrides` applied."""
        base = cls(temperature=g.temperature, top_p=g.top_p, top_k=g.top_k, max_new_tokens=g.max_new_tokens,
                   repetition_penalty=g.repetition_penalty, seed=g.seed)
        return dataclasses.replace(base, **overrides)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass(frozen=True)
class GenQueued:
    ahead: int  # waiting requests in front of this one (0 = next)


@dataclass(frozen=True)
class GenText:
    text: str  # detokenized delta


@dataclass(frozen=True)
class GenFinished:
    reason: str  # "stop" | "length" | "cancelled"
    prompt_tokens: int
    completion_tokens: int
    first_token_s: float  # since submit; 0.0 when no token came out
    total_s: float  # since submit


Event = GenQueued | GenText | GenFinished


class GenerationStream(Protocol):
    """One request's answer as a backend hands it back (GenerationHandle below for a local model,
    remote.py's RemoteHandle for a server): iterating it gives GenQueued* GenText* GenFinished,
    or raises the ParleyError that failed it; cancel() ends it early, from any point."""

    def __aiter__(self) -> AsyncIterator[Event]: ...

    def cancel(self) -> None: ...


class GenerationHandle:
    """One request's stream from the local scheduler (a GenerationStream): the scheduler's worker
    thread emit()s its events, the event loop iterates them."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_cancel):
        self._loop = loop
        self._on_cancel = on_cancel
        self._queue: asyncio.Queue[list] = asyncio.Queue()
        self._lock = threading.Lock()
        self._pending: list = []  # worker-side buffer, handed over by one scheduled callback
        self._scheduled = False
        self._cancelled = threading.Event()
        self._closed = False  # the final event (or error) was delivered

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Thread-safe: the request leaves the queue or the batch at the worker's next step."""
        if not self._cancelled.is_set():
            self._cancelled.set()
            self._on_cancel()

    # ---- worker side ----
    def emit(self, event: Event | ParleyError) -> None:
        """Thread-safe: queue `event` for the consumer; nothing after the final one is delivered."""
        with self._lock:
            if self._closed:
                return
            last = self._pending[-1] if self._pending else None
            if isinstance(event, GenText) and isinstance(last, GenText):
                self._pending[-1] = GenText(last.text + event.text)
            elif isinstance(event, GenQueued) and isinstance(last, GenQueued):
                self._pending[-1] = event
            else:
                self._pending.append(event)
            if isinstance(event, (GenFinished, ParleyError)):
                self._closed = True
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._hand_over)
        except RuntimeError:  # the consumer's loop is closed: nobody is listening any more
            self._cancelled.set()

    # ---- event loop side ----
    def _hand_over(self) -> None:
        with self._lock:
            batch = self._pending
            self._pending = []
            self._scheduled = False
        self._queue.put_nowait(batch)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        ready: collections.deque = collections.deque()
        while True:
            if not ready:
                ready.extend(await self._queue.get())
                while not self._queue.empty():  # a slow consumer gets what piled up, merged
                    ready.extend(self._queue.get_nowait())
            event = ready.popleft()
            while isinstance(event, GenText) and ready and isinstance(ready[0], GenText):
                event = GenText(event.text + ready.popleft().text)
            if isinstance(event, ParleyError):
                raise event
            yield event
            if isinstance(event, GenFinished):
                return
