"""Torch on the CPU: whether bf16 is native, and OpenMP thread pools that do not fight.

PyTorch's CPU build runs its parallel ops on GNU OpenMP, and every thread that runs one keeps a
pool of helper threads for as long as it lives. Once the process holds more pool threads than
there are cores, libgomp stops spinning between parallel regions and parks its helpers, so each
of the ~200 small ops of a decode step pays a wake-up. Measured on this 2-core CPU: a decode-step
matmul ran 2.3x slower in the generation thread while the idle pool of the thread that had loaded
the model was still alive.

Hence the rule: the long-lived threads that run torch work (the generation worker, the embedding
thread) set their own thread count when they start, and a thread that only loads weights gives
its pool back when it is done (release_thread_pool).
"""
from __future__ import annotations

import ctypes
import functools
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

OMP_PAUSE_HARD = 2  # omp_pause_resource_t: free the calling thread's pool


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of this CPU (/proc/cpuinfo), empty where they cannot be read."""
    try:
        info = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return frozenset()
    for line in info.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@functools.cache
def cpu_name() -> str:
    """The CPU's model name (benchmarks print it: figures differ from one CPU kind to the next)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="ignore").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def cpu_has_bf16() -> bool:
    """bf16 matmuls are fast only where the CPU has them in hardware (AVX512_BF16 or AMX)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def embedding_threads(configured: int) -> int:
    """Threads for the embedder: as configured, else a quarter of the cores (at least one)."""
    return configured or max(1, cpu_count() // 4)


def generation_threads(configured: int, embed_threads: int) -> int:
    """Threads for the generation worker: as configured, else the cores the embedder leaves.

    An embedder on one thread holds no pool, so it takes nothing away.
    """
    if configured:
        return configured
    return max(1, cpu_count() - (embed_threads if embed_threads > 1 else 0))


def use_threads(n: int) -> None:
    """Run this thread's torch work on `n` threads, whatever other threads set later.

    torch.set_num_threads also changes a process-wide default that a thread adopts at its first
    parallel op unless it has already read its count; reading it first pins this thread's own.
    """
    import torch

    torch.get_num_threads()
    torch.set_num_threads(n)


@functools.cache
def _libgomp():
    """The libgomp that torch loaded (found in /proc/self/maps), or None (another OpenMP, or none)."""
    try:
        maps = Path("/proc/self/maps").read_text(errors="ignore")
    except OSError:
        return None
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        path = fields[5] if len(fields) > 5 else ""  # address perms offset dev inode path
        if "libgomp" in Path(path).name:
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                return None
            return lib if hasattr(lib, "omp_pause_resource_all") else None
    return None


def release_thread_pool() -> None:
    """Free the calling thread's OpenMP helper threads (the next parallel op makes new ones)."""
    lib = _libgomp()
    if lib is not None and lib.omp_pause_resource_all(OMP_PAUSE_HARD) != 0:
        log.debug("openmp pool not released")
