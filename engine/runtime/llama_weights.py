"""Which weights llama.cpp computes on: the GGUF as shipped, or the same weights re-encoded as Q8_0.

llama.cpp's x86 kernels go much faster over Q8_0 blocks than over Q4_1, Q5 or K-quant ones,
whose nibbles they unpack at every use. On a 2-core AMD EPYC (AVX512) the packaged SmolLM2 Q4_1
decodes a 16-row step in 96 ms and as Q8_0 in 68 ms, prefills 16 prompts in 12.8 s against
6.5 s, and serves bench/throughput.py's 16 users at 149-155 tok/s against 111-123.

The model stays the same model: Q8_0 keeps every weight of a 4-6-bit block to within 1/254 of
that block's largest, about a seventeenth of the rounding the 4-bit file already made. Measured
on README text, next-token log-likelihood was 4.1022 against 4.1024 nats, though a near-tie can
fall the other way. The cost is 1.6x the bytes. A large model serving one user reads all its
weights at every step, so for it that can be slower. `models[].weights: auto` therefore times
both formats on this CPU at the first start and keeps the faster. The re-encoded file and that
verdict are cached under PARLEY_CACHE_DIR (default ~/.cache/parley)/weights, keyed by the GGUF,
the CPU and the llama.cpp build, so later starts only memory-map the chosen file.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from engine.runtime.cpu import cpu_flags

if TYPE_CHECKING:
    from engine.runtime.executor import LocalModel

log = logging.getLogger(__name__)

# Main weight types that Q8_0 represents more finely (F16/BF16/F32 it would round: never done).
REENCODE_FROM = {"Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"}
LLAMA_FTYPE_MOSTLY_Q8_0 = 7
MIN_GAIN = 0.05  # auto keeps Q8_0 only when it is at least this much faster


def cache_root() -> Path:
    return Path(os.environ.get("PARLEY_CACHE_DIR") or Path.home() / ".cache" / "parley")


def main_type(description: str) -> str:
    """'llama 135M Q4_1' -> 'Q4_1'; 'llama 1B Q4_K - Medium' -> 'Q4_K' (from llama_model_desc)."""
    found = re.search(r"\b(I?Q\d_(?:K|\d|[A-Z]+)|BF16|F16|F32)\b", description)
    return found.group(1) if found else ""


def file_key(path: Path) -> str:
    """A file's identity for caches: its path, size and modification time."""
    stat = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]


def machine_key() -> str:
    """The CPU's flags and the llama.cpp build: a verdict holds for this pair only."""
    import llama_cpp

    text = f"{' '.join(sorted(cpu_flags()))}|{llama_cpp.__version__}|{llama_cpp.llama_print_system_info().decode()}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def reencoded(source: Path, description: str, choice: str) -> Path | None:
    """The Q8_0 copy of `source` (made once, then cached), or None where none is wanted or can be made."""
    kind = main_type(description)
    if choice == "gguf" or kind not in REENCODE_FROM:
        return None
    target = cache_root() / "weights" / f"{source.stem}.{file_key(source)}.Q8_0.gguf"
    if target.is_file():
        return target
    import llama_cpp

    started = time.perf_counter()
    partial = target.with_suffix(f".part{os.getpid()}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = LLAMA_FTYPE_MOSTLY_Q8_0
    params.allow_requantize = True
    params.nthread = os.cpu_count() or 1
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        failed = llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), params)
        if failed:
            raise OSError(f"llama_model_quantize returned {failed}")
        os.replace(partial, target)  # atomic: another process never sees half a file
    except OSError as exc:  # a full or read-only disk: compute on the GGUF as shipped
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        log.warning("weights not re-encoded", extra={"gguf": source.name, "error": str(exc)})
        return None
    log.info("weights re-encoded as Q8_0", extra={"gguf": source.name, "from": kind, "path": str(target),
                                                   "seconds": round(time.perf_counter() - started, 1)})
    return target


def remembered_verdict(source: Path, measure: Callable[[], dict[str, float]]) -> str:
    """'Q8_0' or 'gguf' for this GGUF on this machine: measured once (`measure` returns the
    seconds of the same work on each), then read back."""
    verdict_path = cache_root() / "weights" / f"{source.stem}.{file_key(source)}.{machine_key()}.json"
    try:
        return json.loads(verdict_path.read_text())["choice"]
    except (OSError, ValueError, KeyError):
        pass
    seconds = measure()
    choice = "Q8_0" if seconds["Q8_0"] <= seconds["gguf"] * (1 - MIN_GAIN) else "gguf"
    log.info("weights format measured", extra={"gguf": source.name, "choice": choice,
                                               "seconds": {k: round(v, 3) for k, v in seconds.items()}})
    try:
        verdict_path.write_text(json.dumps({"choice": choice, "seconds": seconds}))
    except OSError:
        pass  # measured again at the next start
    return choice


def timed_work(model: LocalModel, threads: int) -> float:
    """Seconds for the work `auto` compares, on a context of its own (llama_executor): 8 prompts
    prefilled (96 tokens each for a model of 300M parameters or less, fewer for a larger one, so
    that a 1.7B model is measured in seconds too), 4 steps of 8 rows and 4 of one row."""
    length = max(16, int(96 * min(1.0, 3e8 / max(1, model.parameters))))
    executor = model.executor(threads, 8, 8 * (length + 32))
    executor.open()
    try:
        prompts = [[100 + (7 * row + i) % 2000 for i in range(length)] for row in range(8)]
        started = time.perf_counter()
        executor.prefill(prompts)
        for _ in range(4):
            executor.decode([1] * 8)
        executor.keep([0])
        for _ in range(4):
            executor.decode([1])
        return time.perf_counter() - started
    finally:
        executor.close()
