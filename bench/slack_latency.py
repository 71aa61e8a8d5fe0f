#!/usr/bin/env python3
"""How quickly Slack users see Parley's answers grow: native streaming (chat.startStream /
appendStream / stopStream) beside chat.update streaming, through the real adapter (HTTP mode,
signed requests) and the real engine on the packaged model, against the loopback fake of Slack's
Web API (tests/fake_slack.py; for the chat.update side it answers chat.startStream with
unknown_method, as a workspace without native streaming does).

For 1, then N mentions posted at once, per mode: the HTTP ack (Slack retries after 3 s), the first
answer text (p50), the answer's updates per second while it streams (p50) and its longest wait
between two updates (max over answers), the final answer (p50), and the chat.update calls spent
(all answers of a workspace share its ~50 a minute).

  python bench/slack_latency.py                  # 1, then 8 at once, in both modes
  python bench/slack_latency.py --users 16 --tokens 64 --json out.json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from adapters.slack import SlackAdapter  # noqa: E402
from conftest import make_config  # noqa: E402
from engine.core import Engine  # noqa: E402
from fake_slack import FakeSlack  # noqa: E402

QUESTIONS = ["Write three sentences about the sea.", "What is the capital of France?",
             "Give me two tips for writing clear emails.", "Name three colours of the rainbow."]
NATIVE = ("chat.startStream", "chat.appendStream", "chat.stopStream")


def text_updates(fake: FakeSlack, channel: str, thread_ts: str) -> list[float]:
    """When the answer's text grew: stream writes with text, or posts/edits showing answer text
    (not a "_Thinking…_" placeholder)."""
    msgs = {m.ts for m in fake.bot_messages(channel, thread_ts)}
    out = []
    for c in fake.calls:
        p = c.params
        mine = (p.get("thread_ts") == thread_ts and c.method in ("chat.startStream", "chat.postMessage")
                and p.get("channel") == channel) or (p.get("ts") in msgs and c.method in (*NATIVE, "chat.update"))
        words = p.get("markdown_text") or p.get("text") or ""
        if mine and words and not words.startswith("_"):
            out.append(c.at)
    return out


async def run_round(fake: FakeSlack, adapter: SlackAdapter, users: int, tag: str) -> dict:
    url = f"http://127.0.0.1:{adapter.http_port}/slack/events"
    # The tag leads each question, so neither mode reuses the other's prompts from the prefix cache.
    bodies = [fake.mention(f"{tag} {QUESTIONS[i % len(QUESTIONS)]}", user="U0ADA", channel=f"C0BENCH{i % 4}")
              for i in range(users)]
    updates_before = len(fake.calls_of("chat.update"))
    started = time.monotonic()
    acks: list[float] = []

    async def post(body: dict) -> None:
        t0 = time.monotonic()
        assert await fake.post_to_app(url, body) == 200
        acks.append(time.monotonic() - t0)

    await asyncio.gather(*(post(b) for b in bodies))
    await asyncio.sleep(0.3)
    await adapter.idle()
    first, final, rates, gaps = [], [], [], []
    for b in bodies:
        at = text_updates(fake, b["event"]["channel"], b["event"]["ts"])
        first.append(at[0] - started)
        final.append(at[-1] - started)
        if len(at) > 1:
            rates.append((len(at) - 1) / (at[-1] - at[0]))
            gaps.append(max(y - x for x, y in zip(at, at[1:])))
    return {"users": users, "ack_ms_p50": 1000 * statistics.median(acks), "first_text_s_p50": statistics.median(first),
            "updates_per_s_p50": statistics.median(rates) if rates else 0.0, "max_gap_s": max(gaps, default=0.0),
            "final_s_p50": statistics.median(final), "chat_update_calls": len(fake.calls_of("chat.update")) - updates_before}


async def run_mode(engine: Engine, config, native: bool, users: int) -> list[dict]:
    fake = await FakeSlack().start()
    fake.add_user("U0ADA", "Ada")
    if not native:
        fake.unsupported.add("chat.startStream")
    adapter = SlackAdapter(engine, config, bot_token=fake.bot_token, signing_secret=fake.signing_secret,
                           api_url=fake.api_url)
    await adapter.start("127.0.0.1", 0)
    try:
        tag = "[native]" if native else "[edited]"
        return [await run_round(fake, adapter, 1, tag), await run_round(fake, adapter, users, tag)]
    finally:
        await adapter.close()
        await fake.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=8, help="mentions posted at once in the second round")
    parser.add_argument("--tokens", type=int, default=48, help="max new tokens per answer")
    parser.add_argument("--interval", type=float, default=1.0, help="slack.stream_interval_s (config default 1.0)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args()

    config = make_config(Path(tempfile.mkdtemp()) / "data", knowledge={"enabled": False},
                         limits={"user_per_minute": 10_000, "workspace_per_minute": 10_000},
                         slack={"mode": "http", "stream_interval_s": args.interval})
    for model in config.models:
        model.generation.max_new_tokens = args.tokens
    engine = Engine(config)
    await engine.start()
    results = {}
    try:
        await run_mode(engine, config, True, 2)  # warm-up (first steps, the tokenizer's caches): not reported
        for mode, native in (("chat.update", False), ("native", True)):
            results[mode] = await run_mode(engine, config, native, args.users)
    finally:
        await engine.stop()
    for mode, rounds in results.items():
        for r in rounds:
            print(f"{mode:>11}, {r['users']:>2} at once: ack p50 {r['ack_ms_p50']:.0f} ms; "
                  f"first text p50 {r['first_text_s_p50']:.2f} s; {r['updates_per_s_p50']:.2f} updates/s per answer "
                  f"(longest wait {r['max_gap_s']:.1f} s); final p50 {r['final_s_p50']:.1f} s; "
                  f"{r['chat_update_calls']} chat.update")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
