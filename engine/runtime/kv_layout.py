"""How llama.cpp's KV cache is cut for the scheduler's rows (engine/runtime/llama_executor.py
runs it): a stream per sequence, or one unified buffer."""
from __future__ import annotations

from dataclasses import dataclass

CACHED_SHARE = 1.0  # unified: finished sequences kept for their prefixes, as a share of max_batch (cells permitting)
IDLE_STREAMS = 0.25  # streams: idle streams beyond max_batch, keeping their last prompt, as a share of it
LLAMA_MAX_SEQ = 256  # llama.cpp's limit on sequence ids
KV_MEMORY_SHARE = 0.25  # of the memory available when a context opens
# Streams hold fewer rows than max_batch rather than fall back to the unified buffer, down to this
# share of it. 64 users over three minutes (bench/server_peer.py's steady: 4,096-token windows,
# 42 streams affordable of 80 wanted) stepped 12.9 ms a token unified, 10.6 with streams; first
# token p50 0.53 s against 0.33 (2-core AMD EPYC): a unified row's attention reads every used cell.
STREAM_ROWS_SHARE = 0.5


def available_memory() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


@dataclass(frozen=True)
class KVLayout:
    cells: int  # n_ctx: KV cells in all
    sequences: int  # llama.cpp sequences (with streams: one stream each)
    rows: int  # the most running requests
    room: int  # prompt and answer tokens the running requests may hold together
    streams: bool  # a stream per sequence, else one unified buffer


def kv_layout(window: int, max_batch: int, max_tokens: int, bytes_per_token: int,
              streams: bool | None = None) -> KVLayout:
    """How the KV cache is cut. A stream per sequence (llama.cpp's non-unified cache, as
    llama-server runs its slots): `window` cells for each running request and for IDLE_STREAMS
    idle ones keeping their last prompt as a cached prefix. Unified: one buffer for all, where a
    request takes only the cells it uses. `streams=None` chooses streams where a quarter of the
    free memory holds a stream for at least STREAM_ROWS_SHARE of the rows (then the rows are as
    many as it holds), else unified (a 1.7B model's cache is 196 KB a token in f16: 2,048-token
    streams for 16 rows take 6.4 GB)."""
    window = -(-window // 256) * 256
    affordable = int(KV_MEMORY_SHARE * available_memory() / max(1, bytes_per_token))
    wanted = max_batch + max(2, int(IDLE_STREAMS * max_batch))
    if streams is None:
        streams = affordable // window >= max(2, int(STREAM_ROWS_SHARE * max_batch))
    if streams:
        sequences = max(1, min(LLAMA_MAX_SEQ, wanted, affordable // window))
        rows = min(max_batch, sequences)
        return KVLayout(cells=sequences * window, sequences=sequences, rows=rows, room=rows * window, streams=True)
    # Cells for the running requests; cached prefixes live in what they leave free.
    cells = -(-max(window, min(max_tokens, max_batch * window, affordable)) // 256) * 256
    sequences = min(LLAMA_MAX_SEQ, max_batch + max(1, int(CACHED_SHARE * max_batch)))
    return KVLayout(cells=cells, sequences=sequences, rows=max_batch, room=cells, streams=False)
