"""Model backends behind one interface: a local transformers model driven by the batching
scheduler, or (engine/remote.py) a server speaking the OpenAI chat API.

The engine asks a backend to count tokens, to turn chat messages into a generation handle, and
to shut down; it never touches torch itself.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from engine.config import ModelConfig, SchedulerConfig
from engine.models import LoadedModel, release_memory
from engine.scheduler import GenerationHandle, GenerationScheduler, SamplingParams

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


class LocalBackend:
    """A transformers model owned by a continuous-batching scheduler thread."""

    def __init__(self, loaded: LoadedModel, scheduler_config: SchedulerConfig):
        self.loaded = loaded
        self.config = loaded.config
        self.scheduler = GenerationScheduler(loaded, scheduler_config)
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
