"""Model backends behind one interface: a local model (llama.cpp or transformers) driven by the
batching scheduler, or (engine/runtime/remote.py) a server speaking the OpenAI chat API.

The engine asks a backend to count tokens, to turn chat messages into a generation handle, and
to shut down; it never touches torch itself. torch, transformers and llama.cpp are imported only
when a local model is loaded: a deployment that only talks to a server never imports them.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from engine.config import ModelConfig, SchedulerConfig
from engine.runtime.generation import GenerationHandle, SamplingParams

log = logging.getLogger(__name__)


class Backend(Protocol):
    config: ModelConfig

    def count_tokens(self, text: str) -> int: ...

    def encode_chat(self, messages: list[dict]) -> list[int] | list[dict]: ...

    def submit(self, prompt: list[int] | list[dict], params: SamplingParams) -> GenerationHandle: ...

    async def shutdown(self, *, cancel: bool) -> None: ...

    def describe(self) -> dict: ...

    def scheduler_snapshot(self) -> dict: ...

    def set_max_batch(self, n: int) -> None: ...


def load_local_model(cfg: ModelConfig):
    """Load a packaged or local model (blocking): engine/models.py picks its runtime."""
    from engine.runtime.loading import load_model

    return load_model(cfg)


class LocalBackend:
    """A local model (engine/models.py: GGUFModel or LoadedModel) owned by a continuous-batching
    scheduler thread."""

    def __init__(self, loaded, scheduler_config: SchedulerConfig,
                 on_fault: Callable[["LocalBackend", str], None] | None = None):
        """`on_fault(backend, reference)` runs on the event loop once a device fault has stopped
        this backend's scheduler (engine/runtime/recovery.py reloads the model)."""
        from engine.runtime.scheduler import GenerationScheduler

        self.loaded = loaded
        self.config = loaded.config
        loop = asyncio.get_running_loop() if on_fault is not None else None

        def faulted(reference: str) -> None:  # on the worker thread
            if loop is not None:
                loop.call_soon_threadsafe(on_fault, self, reference)

        self.scheduler = GenerationScheduler(loaded, scheduler_config, on_fault=faulted)
        self.scheduler.start()

    def count_tokens(self, text: str) -> int:
        return self.loaded.count_tokens(text)

    def encode_chat(self, messages: list[dict]) -> list[int]:
        return self.loaded.chat_prompt_ids(messages)

    def submit(self, prompt: list[int], params: SamplingParams) -> GenerationHandle:
        return self.scheduler.submit(prompt, params)

    async def shutdown(self, *, cancel: bool) -> None:
        await self.scheduler.shutdown(cancel=cancel)
        device = self.loaded.device
        # Drop our references (the scheduler's thread has ended) so the weights can be freed.
        self.scheduler = None  # type: ignore[assignment]
        self.loaded = None  # type: ignore[assignment]
        from engine.runtime.torch_model import release_memory

        await asyncio.to_thread(release_memory, device)

    def describe(self) -> dict:
        return {
            "device": str(self.loaded.device),
            "dtype": str(self.loaded.dtype).removeprefix("torch."),
            "load_seconds": self.loaded.load_seconds,
            "parameters": self.loaded.parameters,
        }

    def scheduler_snapshot(self) -> dict:
        return self.scheduler.snapshot()

    def set_max_batch(self, n: int) -> None:
        self.scheduler.set_max_batch(n)
