"""Memory monitor: watch the device the model runs on and act before it runs out.

The fraction is of the device's memory: on CUDA the GPU's total memory (used = total - free,
whoever uses it, since that is what an out-of-memory error depends on); on CPU the system RAM
(used = total - available). At `memory_warn_fraction` it logs a warning; at
`memory_act_fraction` it halves the running batch of every local model and refuses new work
with OVERLOADED, and it restores both once usage falls back below the warning line. A process
RSS that rises over several checks in a row is logged as a possible leak.
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable

import psutil

from engine.config import MaintenanceConfig
from engine.errors import ErrorCode, ParleyError

log = logging.getLogger(__name__)

MIB = 2**20


@dataclass(frozen=True)
class MemoryReading:
    device: str  # "cpu" | "cuda:N"
    used_bytes: int
    total_bytes: int
    rss_bytes: int

    @property
    def fraction(self) -> float:
        return self.used_bytes / self.total_bytes if self.total_bytes else 0.0


def read_memory(device: str = "cpu") -> MemoryReading:
    """The device's used/total memory and this process's RSS (blocking: call it in a thread)."""
    rss = psutil.Process(os.getpid()).memory_info().rss
    if device.startswith("cuda"):
        import torch

        free, total = torch.cuda.mem_get_info(torch.device(device))
        return MemoryReading(device, total - free, total, rss)
    vm = psutil.virtual_memory()
    return MemoryReading("cpu", vm.total - vm.available, vm.total, rss)


Reader = Callable[[str], MemoryReading]


class MemoryMonitor:
    """Call `check()` now and then (the maintenance task does); `admit()` before new work."""

    def __init__(self, config: MaintenanceConfig, backends: Callable[[], Iterable], reader: Reader = read_memory):
        self.config = config
        self._backends = backends  # the live backends, asked anew each check (models get switched)
        self._reader = reader
        self.state = "ok"  # ok | warn | act
        self.last: MemoryReading | None = None
        self._original_batch: dict[int, int] = {}  # id(backend) -> max_batch before we shrank it
        self._rss: deque[int] = deque(maxlen=config.leak_checks)

    @property
    def overloaded(self) -> bool:
        return self.state == "act"

    def admit(self) -> None:
        """Refuse new work while memory is short."""
        if self.overloaded:
            raise ParleyError(ErrorCode.OVERLOADED)

    def _device(self) -> str:
        for backend in self._backends():
            device = str(backend.describe().get("device", ""))
            if device.startswith("cuda"):
                return device if ":" in device else "cuda:0"
        return "cpu"

    async def check(self) -> MemoryReading:
        reading = await asyncio.to_thread(self._reader, self._device())
        self.apply(reading)
        return reading

    def apply(self, reading: MemoryReading) -> None:
        self.last = reading
        fraction = reading.fraction
        extra = {"device": reading.device, "used_mib": reading.used_bytes // MIB,
                 "total_mib": reading.total_bytes // MIB, "fraction": round(fraction, 3)}
        if fraction >= self.config.memory_act_fraction:
            if self.state != "act":
                log.warning("memory critical: shrinking the batch and refusing new work", extra=extra)
            self.state = "act"
            self._shrink()
        elif fraction >= self.config.memory_warn_fraction:
            if self.state == "ok":
                log.warning("memory high", extra=extra)
                self.state = "warn"
            # In "act" we stay until usage falls below the warning line, so it does not flap.
        else:
            if self.state == "act":
                self._restore()
                log.warning("memory back to normal: batch restored, taking new work", extra=extra)
            elif self.state == "warn":
                log.info("memory back to normal", extra=extra)
            self.state = "ok"
        self._watch_trend(reading.rss_bytes)

    def _shrink(self) -> None:
        """Halve each local model's batch (once per check while usage stays critical), down to 1."""
        for backend in self._backends():
            current = backend.scheduler_snapshot().get("max_batch")
            if not isinstance(current, int):
                continue  # a remote server batches by itself
            self._original_batch.setdefault(id(backend), current)
            if current > 1:
                backend.set_max_batch(max(1, current // 2))
                log.warning("batch shrunk", extra={"model": backend.config.name, "max_batch": max(1, current // 2)})

    def _restore(self) -> None:
        for backend in self._backends():
            original = self._original_batch.get(id(backend))
            if original is not None:
                backend.set_max_batch(original)
        self._original_batch.clear()

    def _watch_trend(self, rss: int) -> None:
        self._rss.append(rss)
        if len(self._rss) < self._rss.maxlen:
            return
        values = list(self._rss)
        rising = all(b > a for a, b in zip(values, values[1:]))
        growth = values[-1] - values[0]
        if rising and growth >= self.config.leak_growth_mb * MIB:
            log.warning("memory rising at every check: possible leak", extra={
                "checks": len(values), "rss_mib": [v // MIB for v in values], "growth_mib": growth // MIB})
            self._rss.clear()  # the next warning needs a fresh run of rising checks

    def snapshot(self) -> dict:
        last = self.last
        return {"state": self.state,
                "fraction": round(last.fraction, 4) if last else None,
                "device": last.device if last else None}
