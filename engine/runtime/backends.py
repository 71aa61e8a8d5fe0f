"""The runtime's one face to the assistant: a Backend is one model of the lineup, ready to answer.

A backend is either a local model (llama.cpp or transformers) driven by the batching scheduler
(LocalBackend here), or a server speaking the OpenAI chat API (engine/runtime/remote.py). The
assistant opens one per lineup entry it serves (open_backend), counts tokens and renders chat
prompts with it, submits prompts and iterates the answers' events, reads its description and
scheduler snapshot, and shuts it down; it never touches torch itself. torch, transformers and
llama.cpp are imported only when a local model is loaded: a deployment that only talks to a
server never imports them.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from engine.config import ModelConfig, SchedulerConfig
from engine.runtime.generation import GenerationHandle, GenerationStream, SamplingParams

if TYPE_CHECKING:
    from engine.runtime.executor import LocalModel
    from engine.runtime.scheduler import GenerationScheduler

Prompt = list[int] | list[dict]  # token ids (a local model) or chat messages (a server renders them)
ModelLoader = Callable[[ModelConfig], "LocalModel"]  # blocking: run it off the event loop
FaultHandler = Callable[["Backend", str], None]  # (the stopped backend, the failure's reference)


class Backend(Protocol):
    """One model of the lineup as the assistant uses it (LocalBackend, remote.RemoteBackend)."""

    @property
    def config(self) -> ModelConfig: ...  # the lineup entry it serves: name, context window, defaults

    def count_tokens(self, text: str) -> int: ...  # blocking for a long text: tokenising

    def encode_chat(self, messages: list[dict]) -> Prompt: ...  # chat messages -> what submit() takes

    def submit(self, prompt: Prompt, params: SamplingParams) -> GenerationStream:
        """Start answering `prompt` (what this backend's encode_chat made), on the event loop;
        ParleyError when it is refused at once (too long a prompt, a full queue, a backend shutting
        down or stopped by a device fault)."""
        ...

    async def shutdown(self, *, cancel: bool) -> None: ...  # finish (or cancel) the answers; free the model

    def describe(self) -> dict: ...  # device, dtype, load_seconds, parameters

    def scheduler_snapshot(self) -> dict: ...  # running, queued, max_batch, counters

    def set_max_batch(self, n: int) -> None: ...  # the memory monitor lowers it under pressure


def load_local_model(cfg: ModelConfig) -> LocalModel:
    """Load a packaged or local model (blocking): engine/runtime/loading.py picks its runtime."""
    from engine.runtime.loading import load_model

    return load_model(cfg)


async def open_backend(cfg: ModelConfig, scheduler: SchedulerConfig, *,
                       loader: ModelLoader = load_local_model, on_fault: FaultHandler | None = None) -> Backend:
    """A backend for lineup entry `cfg`: a server's client, or a model loaded by `loader` (off the
    event loop) under a started scheduler. `on_fault` runs on the event loop once a device fault
    has stopped a local model (engine/runtime/recovery.py reloads it)."""
    if cfg.source == "openai_compatible":
        from engine.runtime.remote import RemoteBackend

        return await asyncio.to_thread(RemoteBackend, cfg)  # may load a local tokenizer
    loaded = await asyncio.to_thread(loader, cfg)
    if loaded.config is not cfg:  # a loader sharing one model between entries: serve under this one
        loaded = loaded.serving_as(cfg)
    return LocalBackend(loaded, scheduler, on_fault=on_fault)


class LocalBackend:
    """A model loaded here (LocalModel: engine/runtime/gguf_model.py's GGUFModel or torch_model.py's
    LoadedModel) owned by a continuous-batching scheduler thread. Make it on the event loop."""

    def __init__(self, loaded: LocalModel, scheduler_config: SchedulerConfig,
                 on_fault: FaultHandler | None = None) -> None:
        """`on_fault(backend, reference)` runs on the event loop once a device fault has stopped
        this backend's scheduler (engine/runtime/recovery.py reloads the model)."""
        from engine.runtime.scheduler import GenerationScheduler

        self.loaded: LocalModel = loaded
        self.config = loaded.config
        loop = asyncio.get_running_loop() if on_fault is not None else None

        def faulted(reference: str) -> None:  # on the worker thread
            if loop is not None:
                loop.call_soon_threadsafe(on_fault, self, reference)

        self.scheduler: GenerationScheduler = GenerationScheduler(loaded, scheduler_config, on_fault=faulted)
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
