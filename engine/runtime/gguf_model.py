"""A GGUF model loaded by llama.cpp, to be computed on its quantised weights under Parley's scheduler.

On a CPU, reading the weights is most of a decode step: the packaged Q4_1 GGUF is 98 MB a step
where transformers' dequantised copy is 270 MB (bf16) or 540 MB (fp32), and llama.cpp's kernels
compute on the 4-bit blocks directly. So a GGUF on a CPU runs on llama.cpp (models[].runtime:
auto), through llama-cpp-python's C API only; continuous batching, sampling, streaming and limits
stay the scheduler's (engine/runtime/llama_executor.py runs the steps).

The library is built for this machine's CPU (tools/llama_cpp_cmake_args.py, by `make install`);
a build that uses an instruction the CPU lacks is refused at start (it would die with SIGILL).
A model loads in a fraction of a second (memory-mapped); its tokenizer is rebuilt from the GGUF
once (4 s) and read from a cache after that (0.3 s).
"""
from __future__ import annotations

import ctypes
import functools
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from engine.config import ModelConfig
from engine.runtime.cpu import cpu_flags
from engine.errors import ErrorCode, ParleyError
from engine.runtime.llama_weights import cache_root, file_key
from engine.runtime.model_files import ModelText, locate_weights, stop_tokens

if TYPE_CHECKING:
    from engine.runtime.executor import Executor

log = logging.getLogger(__name__)

# llama.cpp's system info names -> the /proc/cpuinfo flag each needs.
BUILD_FEATURES = {"AVX": "avx", "AVX2": "avx2", "F16C": "f16c", "FMA": "fma", "BMI2": "bmi2",
                  "AVX_VNNI": "avx_vnni", "AVX512": "avx512f", "AVX512_VBMI": "avx512vbmi",
                  "AVX512_VNNI": "avx512_vnni", "AVX512_BF16": "avx512_bf16", "AMX_INT8": "amx_int8"}


def unavailable_reason() -> str | None:
    """Why llama.cpp cannot run here (not installed, or built for a CPU with more features), else None."""
    try:
        import llama_cpp
    except Exception as exc:  # noqa: BLE001 - ImportError, or OSError from a broken shared library
        return f"llama-cpp-python is not importable ({exc.__class__.__name__}: {exc})"
    missing = sorted(name for name, flag in BUILD_FEATURES.items()
                     if name in build_features(llama_cpp.llama_print_system_info().decode())
                     and flag not in cpu_flags())
    if missing:
        return f"llama.cpp was built for a CPU with {', '.join(missing)}, which this CPU lacks (rebuild: make install)"
    return None


def build_features(system_info: str) -> set[str]:
    """Instruction sets a llama.cpp build uses, from llama_print_system_info ("AVX2 = 1 | ...")."""
    return {m.group(1) for m in re.finditer(r"\b([A-Z0-9_]+) = 1\b", system_info)}


@functools.cache
def _quiet_logs() -> None:
    """llama.cpp's own log lines go to our log at DEBUG (warnings and errors at their level)."""
    import llama_cpp

    levels = {3: logging.WARNING, 4: logging.ERROR}  # ggml_log_level: 1 debug, 2 info, 3 warn, 4 error, 5 cont

    @llama_cpp.llama_log_callback
    def forward(level, text, _user_data):
        message = text.decode(errors="replace").rstrip() if text else ""
        if message:
            log.log(levels.get(level, logging.DEBUG), "llama.cpp: %s", message)

    _quiet_logs.callback = forward  # keep it alive as long as the library may call it
    llama_cpp.llama_log_set(forward, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()


def cached_tokenizer(directory: Path, gguf: str):
    """The GGUF's tokenizer, saved once as tokenizer.json (4 s to rebuild from a GGUF, 0.3 s to read)."""
    from transformers import AutoTokenizer

    cache = cache_root() / "tokenizers" / file_key(directory / gguf)
    if (cache / "tokenizer_config.json").is_file():
        try:
            return AutoTokenizer.from_pretrained(str(cache))
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt below
            log.warning("tokenizer cache unreadable, rebuilding", extra={"path": str(cache)})
    tokenizer = AutoTokenizer.from_pretrained(str(directory), gguf_file=gguf)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(str(cache))
    except OSError as exc:  # a read-only home still runs, only slower to start
        log.info("tokenizer not cached", extra={"path": str(cache), "error": str(exc)})
    return tokenizer


class Weights:
    """A llama_model (the memory-mapped GGUF), freed with the last reference to it: copies of a
    GGUFModel made with dataclasses.replace share one."""

    def __init__(self, handle) -> None:
        self.handle = handle

    def __del__(self) -> None:
        handle = getattr(self, "handle", None)  # absent when __init__ never ran
        self.handle = None
        if handle:
            try:
                import llama_cpp

                llama_cpp.llama_model_free(handle)
            except ImportError:  # the interpreter is shutting down: the process frees it
                pass


@dataclass
class GGUFModel(ModelText):
    """A GGUF file loaded (memory-mapped) by llama.cpp, with its tokenizer (a LocalModel:
    engine/runtime/executor.py). Each scheduler opens its own llama.cpp context (the KV cache) on
    it: `executor()`."""

    config: ModelConfig
    weights: Weights
    tokenizer: object
    stop_token_ids: frozenset[int]
    load_seconds: float
    parameters: int
    quantisation: str
    path: Path | None = None  # the file llama.cpp computes on (engine/runtime/llama_weights.py may re-encode the GGUF)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def dtype(self) -> str:
        return f"{self.quantisation} (llama.cpp)"

    @property
    def handle(self):
        return self.weights.handle

    def executor(self, threads: int, max_batch: int, max_tokens: int) -> Executor:
        """The scheduler's model work on a llama.cpp context of its own (engine/runtime/llama_executor.py)."""
        from engine.runtime.llama_executor import LlamaCppExecutor

        return LlamaCppExecutor(self, threads, max_batch, max_tokens)


def quantisation_of(description: str) -> str:
    """'llama 135M Q4_1' -> 'Q4_1' (llama_model_desc ends with the file's main weight type)."""
    return description.rsplit(" ", 1)[-1] if description else "gguf"


def load_gguf(cfg: ModelConfig) -> GGUFModel:
    """Memory-map a GGUF with llama.cpp (blocking: call it from a worker thread)."""
    import llama_cpp

    started = time.perf_counter()
    directory, gguf = locate_weights(cfg)
    if gguf is None:
        raise ParleyError(ErrorCode.MODEL_LOAD_FAILED, f"model {cfg.name!r}: llama.cpp needs a .gguf file")
    _quiet_logs()
    source = directory / gguf
    weights = _load_weights(cfg, source)  # freed if anything below fails
    description = _description(weights.handle)
    weights, path, quantisation = _fastest_weights(cfg, source, weights, description)
    tokenizer = cached_tokenizer(directory, gguf)
    vocab = llama_cpp.llama_model_get_vocab(weights.handle)
    stops = set(stop_tokens(tokenizer, None))
    stops.update(t for t in (llama_cpp.llama_vocab_eos(vocab), llama_cpp.llama_vocab_eot(vocab)) if t >= 0)
    model = GGUFModel(config=cfg, weights=weights, tokenizer=tokenizer, stop_token_ids=frozenset(stops),
                      load_seconds=time.perf_counter() - started,
                      parameters=int(llama_cpp.llama_model_n_params(weights.handle)),
                      quantisation=quantisation, path=path)
    log.info("model loaded", extra={"model": cfg.name, "runtime": "llama.cpp", "gguf": gguf,
                                    "weights": model.quantisation, "seconds": round(model.load_seconds, 2),
                                    "cpu_features": " ".join(sorted(build_features(
                                        llama_cpp.llama_print_system_info().decode())))})
    return model


def _load_weights(cfg: ModelConfig, path: Path) -> Weights:
    import llama_cpp

    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = 0
    handle = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not handle:
        raise ParleyError(ErrorCode.MODEL_LOAD_FAILED, f"model {cfg.name!r}: llama.cpp could not load {path.name}")
    return Weights(handle)


def _description(handle) -> str:
    import llama_cpp

    desc = ctypes.create_string_buffer(256)
    llama_cpp.llama_model_desc(handle, desc, len(desc))
    return desc.value.decode(errors="replace")


def _fastest_weights(cfg: ModelConfig, source: Path, weights: Weights, description: str
                     ) -> tuple[Weights, Path, str]:
    """(weights, their file, their format): the GGUF as shipped, or its Q8_0 copy where
    `models[].weights` asks for it or (auto) it measured faster on this CPU (engine/runtime/llama_weights.py)."""
    import llama_cpp

    from engine.runtime.cpu import cpu_count
    from engine.runtime.llama_weights import main_type, reencoded, remembered_verdict, timed_work

    shipped = quantisation_of(description)
    target = reencoded(source, description, cfg.weights)
    if target is None:
        return weights, source, shipped
    try:
        fast = _load_weights(cfg, target)
    except ParleyError:  # a damaged copy: the shipped file still serves (delete the copy to redo it)
        log.warning("re-encoded weights unreadable: using the GGUF as shipped", extra={"path": str(target)})
        return weights, source, shipped

    def measure() -> dict[str, float]:
        def timed(w: Weights) -> float:
            probe = GGUFModel(config=cfg, weights=w, tokenizer=None, stop_token_ids=frozenset(), load_seconds=0.0,
                              parameters=int(llama_cpp.llama_model_n_params(w.handle)), quantisation="")
            return timed_work(probe, cpu_count())

        return {"gguf": timed(weights), "Q8_0": timed(fast)}

    if cfg.weights == "Q8_0" or remembered_verdict(source, measure) == "Q8_0":
        return fast, target, f"Q8_0 (from {main_type(description) or shipped})"
    return weights, source, shipped
