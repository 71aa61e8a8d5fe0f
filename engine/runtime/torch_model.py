"""A model computed by transformers: a Hugging Face directory, or a GGUF it dequantises, on a GPU
or a CPU, with the dtype and device that suit it (torch_executor.py runs its steps).
"""
from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from engine.config import ModelConfig
from engine.errors import ErrorCode, ParleyError
from engine.runtime.cpu import cpu_has_bf16, release_thread_pool
from engine.runtime.model_files import ModelText, locate_weights, stop_tokens

if TYPE_CHECKING:
    from engine.runtime.executor import Executor

log = logging.getLogger(__name__)


@dataclass
class LoadedModel(ModelText):
    """A model ready to generate: weights in eval mode on their device, and its tokenizer
    (a LocalModel: engine/runtime/executor.py)."""

    config: ModelConfig
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    dtype: torch.dtype
    stop_token_ids: frozenset[int]
    load_seconds: float
    parameters: int = 0
    extra: dict = field(default_factory=dict)

    def executor(self, threads: int = 0, max_batch: int = 0, max_tokens: int = 0) -> Executor:
        """The scheduler's model work for this model (torch_executor.py); the torch
        executor takes its threads from the worker thread and grows its cache as needed."""
        from engine.runtime.torch_executor import TorchExecutor

        return TorchExecutor(self.model, self.device, self.pad_token_id)

    @property
    def pad_token_id(self) -> int:
        """What fills a short prompt's row in a batch: the tokenizer's pad, else a stop token."""
        if self.tokenizer.pad_token_id is not None:
            return self.tokenizer.pad_token_id
        return (sorted(self.stop_token_ids) or [0])[0]


def release_memory(device: "torch.device") -> None:
    """Give freed weights' memory back once the last reference to a model is dropped."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting.startswith("cuda") and not torch.cuda.is_available():
        raise ParleyError(ErrorCode.MODEL_LOAD_FAILED, f"device {setting} was asked for but CUDA is not available")
    return torch.device(setting)


def resolve_dtype(setting: str, device: torch.device) -> torch.dtype:
    if setting == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        # bf16 where the CPU computes it natively (AMX / AVX512_BF16): measured on 2 such cores,
        # prefill 2.5x and batched decode 1.6x faster than fp32. Elsewhere fp32 is the fast path.
        return torch.bfloat16 if cpu_has_bf16() else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[setting]


def load_transformers(cfg: ModelConfig) -> LoadedModel:
    """Load a model with transformers, dequantising a GGUF (blocking)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    directory, gguf = locate_weights(cfg)
    kwargs = {"gguf_file": gguf} if gguf else {}
    log.info("loading model", extra={"model": cfg.name, "path": str(directory), "gguf": gguf,
                                     "device": str(device), "dtype": str(dtype)})
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), **kwargs)
        model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=dtype, **kwargs)
        model.to(device).eval()
    except Exception as exc:  # transformers raises many kinds; the cause goes to the log
        log.exception("model load failed", extra={"model": cfg.name})
        raise ParleyError(ErrorCode.MODEL_LOAD_FAILED, f"model {cfg.name!r} could not be loaded: {exc}") from exc
    finally:
        release_thread_pool()  # the loading thread's OpenMP pool would slow the generation worker
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    seconds = time.perf_counter() - started
    parameters = sum(p.numel() for p in model.parameters())
    log.info("model loaded", extra={"model": cfg.name, "seconds": round(seconds, 1), "parameters": parameters})
    return LoadedModel(config=cfg, model=model, tokenizer=tokenizer, device=device, dtype=dtype,
                       stop_token_ids=stop_tokens(tokenizer, model), load_seconds=seconds,
                       parameters=parameters)
