"""What the scheduler asks of a model runtime: the Executor (vLLM v1's split: the scheduler plans,
the executor runs). Two exist: engine/runtime/torch_executor.py (transformers; CUDA and CPU) and
engine/runtime/llama_executor.py (a GGUF computed by llama.cpp on its quantised weights; CPU).
"""
from __future__ import annotations

from typing import Protocol

import torch


class Executor(Protocol):
    """The model work of one loaded model, run on the scheduler's worker thread only.

    Rows are the running requests, in the order the scheduler keeps them: prefill appends rows,
    keep() drops and reorders them. Logits come back as a float tensor on `device`.
    """

    kind: str
    device: torch.device
    vocab_size: int
    torch_threads: int  # the worker's torch threads on a CPU (sampling, or everything); 0 = configured
    max_tokens: int | None  # KV room for the running requests' tokens; None = grows as needed
    max_rows: int | None  # the most rows its cache holds; None = as many as the scheduler runs

    def prefill_groups(self, prompts: list[list[int]]) -> list[list[int]]: ...

    def prefill(self, prompts: list[list[int]]) -> torch.Tensor: ...

    def decode(self, tokens: list[int]) -> torch.Tensor: ...
    def keep(self, rows: list[int]) -> None: ...

    def clear(self) -> None: ...

    def cache_bytes(self) -> int: ...

    def describe(self) -> dict: ...

    def open(self) -> None: ...  # on the worker thread, before any work

    def close(self) -> None: ...  # on the worker thread, after the last work


# Errors after which the device's state cannot be trusted: a CUDA device-side assert or an illegal
# memory access poisons the process's CUDA context, so every later step would fail the same way.
# (Out of memory is not one of them: the step fails, the memory is freed, the rest goes on.)
_DEVICE_FAULT_MARKS = ("CUDA error", "device-side assert", "illegal memory access", "CUBLAS_STATUS",
                       "CUDNN_STATUS", "unspecified launch failure")


class DeviceFault(RuntimeError):
    """An executor's own report that its device or runtime state is broken for good."""


def is_device_fault(exc: BaseException) -> bool:
    """Whether `exc` breaks the device for every later request (the model must be reloaded),
    rather than failing only the rows of the step that raised it."""
    if isinstance(exc, torch.OutOfMemoryError):
        return False
    if isinstance(exc, (DeviceFault, torch.AcceleratorError)):
        return True
    return isinstance(exc, RuntimeError) and any(mark in str(exc) for mark in _DEVICE_FAULT_MARKS)
