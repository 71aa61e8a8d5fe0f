"""The scheduler's model work on llama.cpp: one sequence per running request, every running
request in one `llama_decode` per step (engine/runtime/gguf_model.py loads the model).

The KV cache has a stream per sequence (llama.cpp's non-unified cache, as llama-server keeps a
slot's): a row's attention reads only its own cells. In one buffer shared by all (unified, kept
as `streams=False`), every row's attention read every used cell, running prompts and cached
prefixes alike: with 16 prompts of 1,000 tokens a 16-row decode step cost 276 ms of CPU against
161 ms with streams, and their prefill twice as much (README, "CPU").

Prompts that start the same way reuse their KV cells (automatic prefix caching, as vLLM does):
a finished answer's stream stays as it is until a newcomer needs one, so a thread's next
question, which repeats the system prompt and the history, takes over that stream and is
prefilled only from where it differs; a burst of questions over the same document copies the
first one's stream (a memory copy of ~50 MB for SmolLM2-135M, instead of computing it again).
llama.cpp's thread count follows engine/runtime/thread_governor.py.
"""
from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass
from typing import Iterable, Protocol

import numpy as np
import torch

from engine.errors import ErrorCode, ParleyError
from engine.runtime.kv_layout import kv_layout
from engine.runtime.thread_governor import ThreadGovernor

log = logging.getLogger(__name__)


class LlamaModel(Protocol):
    """What an executor needs of a GGUF loaded by llama.cpp (engine/runtime/gguf_model.py's GGUFModel)."""

    name: str
    context_window: int
    handle: object  # the llama_model pointer

# A cached prefix is reused only when it saves at least this many prompt tokens.
MIN_SHARED_PREFIX = 8
PAD_GAP = 4  # with streams: idle streams between running rows computed as throwaway rows, up to this many
MIN_COPIED_PREFIX = 64  # with streams: a running row's prefix is copied (its whole stream) from this length


@dataclass(eq=False)
class _Sequence:
    seq: int  # llama.cpp sequence id
    tokens: list[int]  # what its KV cells hold, in order


def longest_prefix(held: Iterable[_Sequence], tokens: list[int]) -> tuple[_Sequence | None, int]:
    """The sequence sharing the longest prefix with `tokens`, and its length (at most all but the
    last token of `tokens`)."""
    best: _Sequence | None = None
    length = 0
    for seq in held:
        n = shared_prefix(seq.tokens, tokens)
        if n > length:
            best = seq
            length = n
    return best, min(length, len(tokens) - 1)


def shared_prefix(a: list[int], b: list[int]) -> int:
    """How many first tokens `a` and `b` share, by list-slice comparisons (done in C): windows
    doubling from 32 tokens find where they differ, halving then pins it. The planner asks this
    of every waiting prompt against every held sequence each round: 128 waiting against 20 held
    took 40 ms comparing all of each pair first, a token-by-token loop longer still."""
    n = min(len(a), len(b))
    low, step = 0, 32
    while True:  # a[:low] == b[:low]
        high = min(n, low + step)
        if a[low:high] != b[low:high]:
            break
        if high == n:
            return n
        low, step = high, 2 * step
    while high - low > 16:  # a[low:high] != b[low:high]
        middle = (low + high) // 2
        if a[low:middle] == b[low:middle]:
            low = middle
        else:
            high = middle
    while a[low] == b[low]:
        low += 1
    return low


class LlamaCppExecutor:
    """The scheduler's model work on one llama.cpp context: a sequence per running request."""

    kind = "llama.cpp"
    torch_threads = 1  # torch only samples here; llama.cpp's own threads do the model work
    can_warm = True  # a long prompt may be prefilled in slices, each kept as a cached prefix

    def __init__(self, model: LlamaModel, threads: int, max_batch: int, max_tokens: int,
                 streams: bool | None = None) -> None:
        import llama_cpp

        self._ll = llama_cpp
        self._model = model
        self.device = torch.device("cpu")
        self.vocab_size = int(llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model.handle)))
        self._threads = threads
        self._governor = ThreadGovernor(threads)
        self._applied_threads = threads
        layout = kv_layout(model.context_window, max_batch, max_tokens, self._bytes_per_token(), streams)
        self.streams = layout.streams
        self._n_ctx = layout.cells
        self.max_tokens = layout.room
        self.max_rows = layout.rows
        self._n_seq = layout.sequences
        self._n_batch = max(512, model.context_window)
        self._ctx = None
        self._mem = None
        self._batch = None
        self._rows: list[_Sequence] = []
        self._cached: collections.OrderedDict[int, _Sequence] = collections.OrderedDict()  # LRU first
        self._free: list[int] = []
        self._prompt_tokens = 0  # of the prompts prefilled
        self._computed_tokens = 0  # prompt tokens computed, slices computed ahead (warm) included

    # ---- lifecycle (worker thread) ----
    def open(self) -> None:
        ll = self._ll
        params = ll.llama_context_default_params()
        params.n_ctx = self._n_ctx
        params.n_batch = self._n_batch
        params.n_ubatch = min(512, self._n_batch)
        params.n_seq_max = self._n_seq
        params.n_threads = self._threads
        params.n_threads_batch = self._threads
        params.kv_unified = not self.streams
        params.flash_attn_type = ll.LLAMA_FLASH_ATTN_TYPE_ENABLED
        params.no_perf = True
        ctx = ll.llama_init_from_model(self._model.handle, params)
        if not ctx:
            raise ParleyError(ErrorCode.MODEL_LOAD_FAILED, "llama.cpp could not create a context")
        self._ctx = ctx
        self._mem = ll.llama_get_memory(ctx)
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
            self._ctx = None
            self._mem = None
        self._rows = []
        self._cached = collections.OrderedDict()

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
                seq, start = self._place(prompt)
                new.append(seq)
                work.append((seq, start))
            logits = self._run(work)
        except BaseException:
            for seq in new:
                self._release(seq)
            raise
        self._rows.extend(new)
        self._prompt_tokens += sum(map(len, prompts))
        self._computed_tokens += sum(len(seq.tokens) - start for seq, start in work)
        return logits

    @property
    def reused_tokens(self) -> int:
        """Prompt tokens served from cached prefixes: those of the prompts prefilled that were never
        computed for them (a slice computed ahead for a prompt counts as computed)."""
        return max(0, self._prompt_tokens - self._computed_tokens)

    def cached_prefix(self, prompt: list[int]) -> int:
        """How many of `prompt`'s first tokens a running or cached sequence already holds."""
        return max((shared_prefix(s.tokens, prompt) for s in (*self._cached.values(), *self._rows)), default=0)

    def warm(self, tokens: list[int]) -> None:
        """Compute the cells of `tokens` (from the longest prefix already held) and keep them as
        the newest cached prefix: a slice of a long prompt whose prefill later reuses them."""
        seq, start = self._place(tokens)
        self._use_threads(self._governor.current)
        try:
            self._run([(seq, start)])
        except BaseException:
            self._release(seq)
            raise
        self._computed_tokens += len(seq.tokens) - start
        for held in [c for c in self._cached.values() if shared_prefix(c.tokens, seq.tokens) == len(c.tokens)]:
            del self._cached[held.seq]  # the earlier slice: its cells live on in this one
            self._release(held)
        self._cache(seq)

    def decode(self, tokens: list[int]) -> torch.Tensor:
        for row, token in zip(self._rows, tokens):
            row.tokens.append(token)
        threads = self._use_threads(self._governor.pick(len(self._rows)))
        started = time.perf_counter()
        padding = self._padding()
        try:
            logits = self._run([(row, len(row.tokens) - 1) for row in self._rows], padding)
        except BaseException:
            for row in self._rows:
                row.tokens.pop()
            raise
        finally:
            for pad in padding:
                self._ll.llama_memory_seq_rm(self._mem, pad.seq, len(pad.tokens) - 1, -1)
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
        self._rows = []
        self._cached = collections.OrderedDict()
        self._free = list(range(self._n_seq - 1, -1, -1))

    def cache_bytes(self) -> int:
        return self._n_ctx * self._bytes_per_token() if self._ctx is not None else 0

    def _bytes_per_token(self) -> int:
        ll = self._ll
        m = self._model.handle
        head_dim = ll.llama_model_n_embd(m) // max(1, ll.llama_model_n_head(m))
        return 2 * 2 * ll.llama_model_n_layer(m) * ll.llama_model_n_head_kv(m) * head_dim  # K and V, f16

    def describe(self) -> dict:
        return {"executor": self.kind, "threads": self._governor.current, "max_threads": self._threads,
                "thread_switches": self._governor.switches, "prefix_tokens_reused": self.reused_tokens,
                "kv_streams": self.streams,
                "cached_prefixes": len(self._cached)}

    # ---- sequences and the prefix cache ----
    def _take_seq(self) -> int:
        if not self._free:
            if not self._cached:
                raise ParleyError(ErrorCode.OVERLOADED, "llama.cpp has no free sequence")
            self._evict_oldest()
        return self._free.pop()

    def _place(self, tokens: list[int]) -> tuple[_Sequence, int]:
        """A sequence for `tokens` holding the longest prefix the cache can give it, and the first
        position left to compute (the last prompt token always is: its logits are the answer's)."""
        if self.streams:
            return self._place_in_stream(tokens)
        seq = _Sequence(self._take_seq(), list(tokens))
        source, length = longest_prefix((*self._cached.values(), *self._rows), tokens)
        if source is None or length < MIN_SHARED_PREFIX:
            return seq, 0
        self._ll.llama_memory_seq_cp(self._mem, source.seq, seq.seq, 0, length)  # shares the cells
        if source.seq in self._cached:
            self._cached.move_to_end(source.seq)
        return seq, length

    def _place_in_stream(self, tokens: list[int]) -> tuple[_Sequence, int]:
        """The idle stream holding the longest prefix of `tokens` is taken over, its cells past the
        prefix dropped. A prefix longer by MIN_COPIED_PREFIX held by a running row is copied into
        another stream (llama.cpp copies a whole stream: ~50 MB for 2,048 cells of SmolLM2-135M).
        Else the stream idle the longest starts empty."""
        idle, idle_length = longest_prefix(self._cached.values(), tokens)
        busy, busy_length = longest_prefix(self._rows, tokens)
        if idle is not None and idle_length >= MIN_SHARED_PREFIX and busy_length < idle_length + MIN_COPIED_PREFIX:
            del self._cached[idle.seq]
            self._ll.llama_memory_seq_rm(self._mem, idle.seq, idle_length, -1)
            return _Sequence(idle.seq, list(tokens)), idle_length
        seq = _Sequence(self._take_seq(), list(tokens))
        if busy is None or busy_length < MIN_COPIED_PREFIX:
            return seq, 0
        self._ll.llama_memory_seq_cp(self._mem, busy.seq, seq.seq, -1, -1)  # applied at the next decode
        self._ll.llama_memory_seq_rm(self._mem, seq.seq, busy_length, -1)
        return seq, busy_length

    def _cache(self, seq: _Sequence) -> None:
        self._cached[seq.seq] = seq
        # Unified, every row's attention reads the cached cells too: keep only as many as
        # kv_layout.CACHED_SHARE. An idle stream costs nothing until a newcomer needs it.
        while not self.streams and len(self._cached) > self._n_seq - self.max_rows:
            self._evict_oldest()

    def _evict_oldest(self) -> None:
        _, seq = self._cached.popitem(last=False)
        self._release(seq)

    def _release(self, seq: _Sequence) -> None:
        self._ll.llama_memory_seq_rm(self._mem, seq.seq, -1, -1)
        self._free.append(seq.seq)

    # ---- llama_decode ----
    def _padding(self) -> list[_Sequence]:
        """With streams, llama.cpp batches only consecutive streams together: running rows in
        streams 2, 3, 5 and 9 take three passes over the weights. An idle stream in a gap of at
        most PAD_GAP is given a throwaway token instead (its cell dropped after the step): on
        SmolLM2-135M with 2 threads a pass costs ~10 ms and a row ~2.5 ms."""
        if not self.streams:
            return []
        running = sorted(row.seq for row in self._rows)
        window = self._n_ctx // self._n_seq
        padding: list[_Sequence] = []
        for low, high in zip(running, running[1:]):
            if high - low - 1 > PAD_GAP:
                continue
            gap = [self._cached.get(seq, _Sequence(seq, [])) for seq in range(low + 1, high)]
            if all(len(idle.tokens) < window for idle in gap):  # a full stream has no cell for it
                padding += [_Sequence(idle.seq, [0] * (len(idle.tokens) + 1)) for idle in gap]
        return padding

    def _run(self, work: list[tuple[_Sequence, int]], padding: Iterable[_Sequence] = ()) -> torch.Tensor:
        """Compute tokens[start:] of each sequence, in llama_decode calls of at most n_batch
        tokens; the logits of each sequence's last token, [len(work), V]. `padding`'s last tokens
        are computed too, for nothing."""
        out = torch.empty((len(work), self.vocab_size), dtype=torch.float32)
        spans = [(i, seq, pos) for i, (seq, start) in enumerate(work) for pos in range(start, len(seq.tokens))]
        spans += [(-1, pad, len(pad.tokens) - 1) for pad in padding]
        if self.streams:  # llama.cpp puts consecutive streams in one batch: in stream order, a step is one
            spans.sort(key=lambda span: (span[1].seq, span[2]))
        for begin in range(0, len(spans), self._n_batch):
            chunk = spans[begin:begin + self._n_batch]
            wanted = [k for k, (i, seq, pos) in enumerate(chunk) if i >= 0 and pos == len(seq.tokens) - 1]
            self._decode_chunk(chunk, wanted)
            if wanted:
                logits = np.ctypeslib.as_array(self._ll.llama_get_logits(self._ctx),
                                               shape=(len(wanted), self.vocab_size))
                rows = torch.tensor([chunk[k][0] for k in wanted])
                out[rows] = torch.from_numpy(logits)
        return out

    def _decode_chunk(self, chunk: list[tuple[int, _Sequence, int]], wanted: list[int]) -> None:
        b = self._batch
        n = len(chunk)
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
