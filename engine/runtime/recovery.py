"""What the engine does after a device fault (engine.runtime.executor.is_device_fault: a CUDA device-side
assert, an illegal memory access...). By then the model's scheduler has failed the requests it held
with MODEL_FAULT and refuses new ones, so one bad step never turns into a stream of failures.

`scheduler.on_device_fault: reload` loads the model again in place while new questions get
"I'm restarting it"; `exit` (or a reload that fails, or a second fault soon after a reload: a CUDA
context stays poisoned for the life of the process) asks bot.py to stop with EXIT_CODE, for a
supervisor (systemd `Restart=on-failure`, Docker `--restart`) to start a fresh process.

It is handed the model lineup (to reload in place, and to tell a retired backend) and the
engine's state; it knows nothing else of the assistant.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Protocol

from engine.runtime.backends import Backend

log = logging.getLogger(__name__)

EXIT_CODE = 70  # EX_SOFTWARE: an internal failure, restart me
REPEAT_WINDOW_S = 600.0  # a fault this soon after a reload means reloading does not help


class Reloadable(Protocol):
    """What recovery needs of the model lineup (engine/lineup.py)."""

    async def replace(self, broken: Backend) -> None:
        """Load `broken`'s model again and serve it in its place."""

    def is_retired(self, backend: Backend) -> bool:
        """Whether `backend` no longer serves (switched away from or already replaced)."""


class FaultRecovery:
    def __init__(self, lineup: Reloadable, mode: str, state: Callable[[], str]) -> None:
        """`mode` is scheduler.on_device_fault (reload | exit); `state()` the engine's lifecycle state."""
        self._lineup = lineup
        self._mode = mode
        self._state = state
        self._last_reload = -math.inf
        self._tasks: set[asyncio.Task] = set()
        self.reloads = 0
        self.exit_code: int | None = None
        self.exit_requested = asyncio.Event()  # bot.py stops the process when set

    def on_fault(self, backend: Backend, reference: str) -> None:
        """Called on the event loop by a LocalBackend whose scheduler stopped on a device fault."""
        task = asyncio.create_task(self._recover(backend, reference), name="recover-model")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _recover(self, backend: Backend, reference: str) -> None:
        if self._state() != "ready" or self._lineup.is_retired(backend):
            return
        name = backend.config.name
        if self._mode == "exit":
            return self._exit(reference, name, "scheduler.on_device_fault is exit")
        if time.monotonic() - self._last_reload < REPEAT_WINDOW_S:
            return self._exit(reference, name, "it failed again soon after a reload")
        log.error("device fault: reloading the model", extra={"model": name, "reference": reference})
        try:
            await self._lineup.replace(backend)
        except Exception as exc:  # noqa: BLE001 - nothing else to try in this process
            log.critical("reload after a device fault failed", exc_info=exc, extra={"model": name})
            return self._exit(reference, name, "the reload failed")
        self._last_reload = time.monotonic()
        self.reloads += 1
        log.warning("model reloaded after a device fault", extra={"model": name, "reference": reference})

    def _exit(self, reference: str, model: str, why: str) -> None:
        log.critical("device fault: exiting for the supervisor to restart Parley (%s)", why,
                     extra={"model": model, "reference": reference, "exit_code": EXIT_CODE})
        self.exit_code = EXIT_CODE
        self.exit_requested.set()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
