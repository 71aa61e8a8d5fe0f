"""What the scheduler asks of a model runtime: the loaded model (LocalModel) and the Executor it
makes (vLLM v1's split: the scheduler plans, the executor runs).

Two runtimes offer both: transformers (torch_model.py's LoadedModel, torch_executor.py; CUDA and
CPU) and llama.cpp (gguf_model.py's GGUFModel, llama_executor.py; a GGUF on its quantised
weights, CPU). The scheduler, LocalBackend and llama_weights.py read a model only through
LocalModel, whichever runtime loaded it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:
    from engine.config import ModelConfig
    from engine.runtime.requests import ScheduledRequest


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

    # Prefill in slices (a runtime with a prefix cache): warm() computes the cells of `tokens` and
    # keeps them as a cached prefix, no row joining; cached_prefix() says how much of a prompt the
    # cache already holds (the round planner asks it of every runtime: 0 without a cache). Without
    # one, can_warm is False and the scheduler never calls warm().
    can_warm: bool

    def cached_prefix(self, prompt: list[int]) -> int: ...

    def warm(self, tokens: list[int]) -> None: ...

    def clear(self) -> None: ...

    def cache_bytes(self) -> int: ...

    def describe(self) -> dict: ...

    def open(self) -> None: ...  # on the worker thread, before any work

    def close(self) -> None: ...  # on the worker thread, after the last work


class LocalModel(Protocol):
    """A model loaded in this process: its weights (held by the object), its tokenizer, and the
    executor that computes it under a scheduler. Every member is read-only to its readers."""

    @property
    def config(self) -> ModelConfig: ...  # the lineup entry it serves

    @property
    def name(self) -> str: ...  # config.name

    @property
    def context_window(self) -> int: ...  # config.context_window: prompt + answer, in tokens

    @property
    def tokenizer(self) -> Any: ...  # a transformers tokenizer (detokenizing, chat template)

    @property
    def stop_token_ids(self) -> frozenset[int]: ...  # an answer ends at any of these

    @property
    def device(self) -> torch.device: ...  # where its weights are

    @property
    def dtype(self) -> torch.dtype | str: ...  # a torch dtype, or a GGUF's weight format

    @property
    def load_seconds(self) -> float: ...

    @property
    def parameters(self) -> int: ...

    def count_tokens(self, text: str) -> int: ...

    def chat_prompt_ids(self, messages: list[dict]) -> list[int]: ...  # rendered with its chat template

    def serving_as(self, config: ModelConfig) -> LocalModel: ...  # the same weights under another entry

    def executor(self, threads: int, max_batch: int, max_tokens: int) -> Executor:
        """A new Executor on these weights for one scheduler: `threads` for a CPU's model work, room
        for `max_batch` rows and `max_tokens` KV tokens (a runtime may size its cache from them)."""
        ...


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


class DeviceFailure(Exception):
    """A step broke the device (is_device_fault): the scheduler's worker stops. `rows` are the
    newcomers that were still being prefilled (in neither the queue nor the batch)."""

    def __init__(self, cause: BaseException, rows: list[ScheduledRequest] | None = None):
        super().__init__(repr(cause))
        self.cause = cause
        self.rows = rows or []
