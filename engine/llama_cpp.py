"""A GGUF model computed on its quantised weights by llama.cpp, driven by Parley's scheduler.

On a CPU, reading the weights is most of a decode step: the packaged Q4_1 GGUF is 98 MB a step
where transformers' dequantised copy is 270 MB (bf16) or 540 MB (fp32), and llama.cpp's kernels
compute on the 4-bit blocks directly. So a GGUF on a CPU runs here (models[].runtime: auto), through
llama-cpp-python's C API only: one llama.cpp sequence per request, every running request in one
`llama_decode` per step. Continuous batching, sampling, streaming and limits stay the scheduler's.

Prompts that start the same way share their KV cells (automatic prefix caching, as vLLM and
llama.cpp's server do per slot): a finished answer's cells stay cached until the room is needed,
so a thread's next question, which repeats the system prompt and the history, is prefilled only
from where it differs. The KV cache is unified (one buffer, cells shared between sequences) and
flash attention skips the cells of other sequences.

The library is built for this machine's CPU (tools/llama_cpp_cmake_args.py, by `make install`);
a build that uses an instruction the CPU lacks is refused at start (it would die with SIGILL).
"""
from __future__ import annotations

import collections
import ctypes
import functools
import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.config import ModelConfig
from engine.cpu import cpu_flags
from engine.errors import ErrorCode, ParleyError
from engine.models import chat_prompt_ids, locate_weights, stop_tokens
from engine.thread_governor import ThreadGovernor

log = logging.getLogger(__name__)

# A cached prefix is reused only when it saves at least this many prompt tokens.
MIN_SHARED_PREFIX = 8
# llama.cpp's system info names -> the /proc/cpuinfo flag each needs.
BUILD_FEATURES = {"AVX": "avx", "AVX2": "avx2", "F16C": "f16c", "FMA": "fma", "BMI2": "bmi2",
                  "AVX_VNNI": "avx_vnni", "AVX512": "avx512f", "AVX512_VBMI": "avx512vbmi",
                  "AVX512_VNNI": "avx512_vnni", "AVX512_BF16": "avx512_bf16", "AMX_INT8": "amx_int8"}
LLAMA_MAX_SEQ = 256  # llama.cpp's limit on sequence ids
KV_MEMORY_SHARE = 0.25  # of the memory available when a context opens


def available_memory() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


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

    path = directory / gguf
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    cache = Path(os.environ.get("PARLEY_CACHE_DIR") or Path.home() / ".cache" / "parley") / "tokenizers" / key
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
        handle, self.handle = getattr(self, "handle", None), None
        if handle:
            try:
                import llama_cpp

                llama_cpp.llama_model_free(handle)
            except ImportError:  # the interpreter is shutting down: the process frees it
                pass


@dataclass
class GGUFModel:
    """A GGUF file loaded (memory-mapped) by llama.cpp, with its tokenizer. Each scheduler opens
    its own llama.cpp context (the KV cache) on it: `executor()`."""

    config: ModelConfig
    weights: Weights
    tokenizer: object
    stop_token_ids: frozenset[int]
    load_seconds: float
    parameters: int
    quantisation: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def context_window(self) -> int:
        return self.config.context_window

    @property
    def dtype(self) -> str:
        return f"{self.quantisation} (llama.cpp)"

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def chat_prompt_ids(self, messages: list[dict]) -> list[int]:
        return chat_prompt_ids(self.tokenizer, messages)

    @property
    def handle(self):
        return self.weights.handle

    def executor(self, threads: int, max_batch: int, max_tokens: int) -> "LlamaCppExecutor":
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
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = 0
    handle = llama_cpp.llama_model_load_from_file(str(directory / gguf).encode(), params)
    if not handle:
        raise ParleyError(ErrorCode.MODEL_LOAD_FAILED, f"model {cfg.name!r}: llama.cpp could not load {gguf}")
    weights = Weights(handle)  # freed if anything below fails
    tokenizer = cached_tokenizer(directory, gguf)
    vocab = llama_cpp.llama_model_get_vocab(handle)
    stops = set(stop_tokens(tokenizer, None))
    stops.update(t for t in (llama_cpp.llama_vocab_eos(vocab), llama_cpp.llama_vocab_eot(vocab)) if t >= 0)
    desc = ctypes.create_string_buffer(256)
    llama_cpp.llama_model_desc(handle, desc, len(desc))
    model = GGUFModel(config=cfg, weights=weights, tokenizer=tokenizer, stop_token_ids=frozenset(stops),
                      load_seconds=time.perf_counter() - started,
                      parameters=int(llama_cpp.llama_model_n_params(handle)),
                      quantisation=quantisation_of(desc.value.decode(errors="replace")))
    log.info("model loaded", extra={"model": cfg.name, "runtime": "llama.cpp", "gguf": gguf,
                                    "weights": model.quantisation, "seconds": round(model.load_seconds, 2),
                                    "cpu_features": " ".join(sorted(build_features(
                                        llama_cpp.llama_print_system_info().decode())))})
    return model


@dataclass(eq=False)
class _Sequence:
    seq: int  # llama.cpp sequence id
    tokens: list[int]  # what its KV cells hold, in order


def shared_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class LlamaCppExecutor:
    """The scheduler's model work on one llama.cpp context: a sequence per running request."""

    kind = "llama.cpp"
    torch_threads = 1  # torch only samples here; llama.cpp's own threads do the model work

    def __init__(self, model: GGUFModel, threads: int, max_batch: int, max_tokens: int) -> None:
        import llama_cpp

        self._ll = llama_cpp
        self._model = model
        self.device = torch.device("cpu")
        self._vocab_ptr = llama_cpp.llama_model_get_vocab(model.handle)
        self.vocab_size = int(llama_cpp.llama_vocab_n_tokens(self._vocab_ptr))
        self._threads = threads
        self._governor = ThreadGovernor(threads)
        self._applied_threads = threads
        window = model.context_window
        # KV cells for the running requests; cached prefixes live in what they leave free. Capped
        # at a quarter of the free memory (a 1.7B model's cache is 196 KB a token in f16).
        affordable = int(KV_MEMORY_SHARE * available_memory() / max(1, self._bytes_per_token()))
        self._n_ctx = max(window, min(max_tokens, max_batch * window, affordable)) // 256 * 256
        self.max_tokens = self._n_ctx
        self._n_seq = min(LLAMA_MAX_SEQ, 2 * max_batch + 1)
        self._n_batch = max(512, window)
        self._ctx = None
        self._mem = None
        self._batch = None
        self._rows: list[_Sequence] = []
        self._cached: collections.OrderedDict[int, _Sequence] = collections.OrderedDict()  # LRU first
        self._free: list[int] = []
        self.reused_tokens = 0  # prompt tokens served from cached prefixes

    # ---- lifecycle (worker thread) ----
    def open(self) -> None:
        ll = self._ll
        params = ll.llama_context_default_params()
        params.n_ctx = self._n_ctx
        params.n_batch = self._n_batch
        params.n_ubatch = min(512, self._n_batch)
        params.n_seq_max = self._n_seq
        params.n_threads = params.n_threads_batch = self._threads
        params.kv_unified = True
        params.flash_attn_type = ll.LLAMA_FLASH_ATTN_TYPE_ENABLED
        params.no_perf = True
        ctx = ll.llama_init_from_model(self._model.handle, params)
        if not ctx:
            raise ParleyError(ErrorCode.MODEL_LOAD_FAILED, "llama.cpp could not create a context")
        self._ctx, self._mem = ctx, ll.llama_get_memory(ctx)
        self._batch = ll.llama_batch_init(self._n_batch, 0, 1)
        self._free = list(range(self._n_seq - 1, -1, -1))
        log.info("llama.cpp context", extra={"model": self._model.name, "n_ctx": self._n_ctx, "sequences": self._n_seq,
                                             "threads": self._threads})

    def close(self) -> None:
        if self._batch is not None:
            self._ll.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            self._ll.llama_free(self._ctx)
            self._ctx = self._mem = None
        self._rows, self._cached = [], collections.OrderedDict()

    # ---- the scheduler's calls ----
    def prefill_groups(self, prompts: list[list[int]]) -> list[list[int]]:
        """All at once (no padding in a ragged batch), except that a prompt sharing a longer prefix
        with an earlier newcomer than with anything cached waits one group, to reuse its cells."""
        groups: list[list[int]] = [[]]
        known = [s.tokens for s in (*self._cached.values(), *self._rows)]
        for i, prompt in enumerate(prompts):
            cached = max((shared_prefix(t, prompt) for t in known), default=0)
            fresh = max((shared_prefix(prompts[j], prompt) for j in groups[-1]), default=0)
            if fresh >= cached + MIN_SHARED_PREFIX:
                known.extend(prompts[j] for j in groups[-1])
                groups.append([])
            groups[-1].append(i)
        return groups

    def prefill(self, prompts: list[list[int]]) -> torch.Tensor:
        """Next-token logits [n, V]; each prompt becomes a sequence after the running rows."""
        new: list[_Sequence] = []
        work: list[tuple[_Sequence, int]] = []  # (sequence, first position to compute)
        self._use_threads(self._governor.current)
        try:
            for prompt in prompts:
                seq = _Sequence(self._take_seq(), list(prompt))
                new.append(seq)
                work.append((seq, self._reuse_prefix(seq)))
            logits = self._run(work)
        except BaseException:
            for seq in new:
                self._release(seq)
            raise
        self._rows.extend(new)
        return logits

    def decode(self, tokens: list[int]) -> torch.Tensor:
        for row, token in zip(self._rows, tokens):
            row.tokens.append(token)
        threads = self._use_threads(self._governor.pick(len(self._rows)))
        started = time.perf_counter()
        try:
            logits = self._run([(row, len(row.tokens) - 1) for row in self._rows])
        except BaseException:
            for row in self._rows:
                row.tokens.pop()
            raise
        self._governor.record(threads, len(self._rows), time.perf_counter() - started)
        return logits

    def _use_threads(self, n: int) -> int:
        if n != self._applied_threads:
            self._ll.llama_set_n_threads(self._ctx, n, n)
            self._applied_threads = n
        return n

    def keep(self, rows: list[int]) -> None:
        kept = [self._rows[i] for i in rows]
        leaving = set(map(id, self._rows)) - set(map(id, kept))
        for row in self._rows:
            if id(row) in leaving:
                self._cache(row)
        self._rows = kept

    def clear(self) -> None:
        if self._mem is not None:
            self._ll.llama_memory_clear(self._mem, False)
        self._rows, self._cached = [], collections.OrderedDict()
        self._free = list(range(self._n_seq - 1, -1, -1))

    def cache_bytes(self) -> int:
        return self._n_ctx * self._bytes_per_token() if self._ctx is not None else 0

    def _bytes_per_token(self) -> int:
        ll, m = self._ll, self._model.handle
        head_dim = ll.llama_model_n_embd(m) // max(1, ll.llama_model_n_head(m))
        return 2 * 2 * ll.llama_model_n_layer(m) * ll.llama_model_n_head_kv(m) * head_dim  # K and V, f16

    def describe(self) -> dict:
        return {"executor": self.kind, "threads": self._governor.current, "max_threads": self._threads,
                "thread_switches": self._governor.switches, "prefix_tokens_reused": self.reused_tokens,
                "cached_prefixes": len(self._cached)}

    # ---- sequences and the prefix cache ----
    def _take_seq(self) -> int:
        if not self._free:
            if not self._cached:
                raise ParleyError(ErrorCode.OVERLOADED, "llama.cpp has no free sequence")
            self._evict_oldest()
        return self._free.pop()

    def _reuse_prefix(self, seq: _Sequence) -> int:
        """Share the cells of the longest cached or running prefix of `seq`; returns how many."""
        best, length = None, 0
        for other in (*self._cached.values(), *self._rows):
            n = shared_prefix(other.tokens, seq.tokens)
            if n > length:
                best, length = other, n
        length = min(length, len(seq.tokens) - 1)  # the last prompt token is computed: its logits
        if best is None or length < MIN_SHARED_PREFIX:
            return 0
        self._ll.llama_memory_seq_cp(self._mem, best.seq, seq.seq, 0, length)
        if best.seq in self._cached:
            self._cached.move_to_end(best.seq)
        self.reused_tokens += length
        return length

    def _cache(self, seq: _Sequence) -> None:
        self._cached[seq.seq] = seq
        while len(self._cached) > self._n_seq // 2:
            self._evict_oldest()

    def _evict_oldest(self) -> None:
        _, seq = self._cached.popitem(last=False)
        self._ll.llama_memory_seq_rm(self._mem, seq.seq, -1, -1)
        self._free.append(seq.seq)

    def _release(self, seq: _Sequence) -> None:
        self._ll.llama_memory_seq_rm(self._mem, seq.seq, -1, -1)
        self._free.append(seq.seq)

    # ---- llama_decode ----
    def _run(self, work: list[tuple[_Sequence, int]]) -> torch.Tensor:
        """Compute tokens[start:] of each sequence, in llama_decode calls of at most n_batch
        tokens; the logits of each sequence's last token, [len(work), V]."""
        out = torch.empty((len(work), self.vocab_size), dtype=torch.float32)
        spans = [(i, seq, pos) for i, (seq, start) in enumerate(work) for pos in range(start, len(seq.tokens))]
        for begin in range(0, len(spans), self._n_batch):
            chunk = spans[begin:begin + self._n_batch]
            wanted = [k for k, (_, seq, pos) in enumerate(chunk) if pos == len(seq.tokens) - 1]
            self._decode_chunk(chunk, wanted)
            if wanted:
                logits = np.ctypeslib.as_array(self._ll.llama_get_logits(self._ctx),
                                               shape=(len(wanted), self.vocab_size))
                rows = torch.tensor([chunk[k][0] for k in wanted])
                out[rows] = torch.from_numpy(logits)
        return out

    def _decode_chunk(self, chunk: list[tuple[int, _Sequence, int]], wanted: list[int]) -> None:
        b, n = self._batch, len(chunk)
        b.n_tokens = n
        tokens = np.ctypeslib.as_array(b.token, shape=(n,))
        positions = np.ctypeslib.as_array(b.pos, shape=(n,))
        n_seq = np.ctypeslib.as_array(b.n_seq_id, shape=(n,))
        outputs = np.ctypeslib.as_array(b.logits, shape=(n,))
        tokens[:] = [seq.tokens[pos] for _, seq, pos in chunk]
        positions[:] = [pos for _, _, pos in chunk]
        n_seq[:] = 1
        outputs[:] = 0
        outputs[wanted] = 1
        for k, (_, seq, _) in enumerate(chunk):
            b.seq_id[k][0] = seq.seq
        status = self._ll.llama_decode(self._ctx, b)
        while status == 1 and self._cached:  # no room in the KV cache: forget cached prefixes first
            self._evict_oldest()
            status = self._ll.llama_decode(self._ctx, b)
        if status == 1:
            raise ParleyError(ErrorCode.OVERLOADED, "the KV cache is full")
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status}")
