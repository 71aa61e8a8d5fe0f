#!/usr/bin/env python3
"""How quickly Slack users see Parley react: the real adapter (HTTP mode, signed requests) and the
real engine on the packaged model, against the loopback fake of Slack's Web API (tests/fake_slack.py).

For N mentions posted at once it reports: the HTTP ack time (Slack retries after 3 s), the time
until something shows in the thread (placeholder or text), until the first answer text, until
the final answer, and the chat.update calls made (all answers share the workspace's edit budget).

  python bench/slack_latency.py                 # 1, then 8 mentions at once
  python bench/slack_latency.py --users 16 --tokens 32 --json out.json
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


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


async def run_round(fake: FakeSlack, adapter: SlackAdapter, users: int) -> dict:
    url = f"http://127.0.0.1:{adapter.http_port}/slack/events"
    bodies = [fake.mention(QUESTIONS[i % len(QUESTIONS)], user="U0ADA", channel=f"C0BENCH{i % 4}")
              for i in range(users)]
    updates_before = len(fake.calls_of("chat.update"))
    started = time.monotonic()
    acks: list[float] = []

    async def post(body: dict) -> None:
        t0 = time.monotonic()
        assert await fake.post_to_app(url, body) == 200
        acks.append(time.monotonic() - t0)

    posting = asyncio.gather(*(post(b) for b in bodies))
    seen, text, final = {}, {}, {}
    while len(final) < users:
        now = time.monotonic() - started
        for i, b in enumerate(bodies):
            msgs = fake.bot_messages(b["event"]["channel"], b["event"]["ts"])
            if msgs and i not in seen:
                seen[i] = now
            if msgs and i not in text and any(not t.startswith("_") for m in msgs for t in m.history):
                text[i] = now
            if msgs and i not in final and not msgs[-1].text.endswith("▍") and not msgs[-1].text.startswith("_"):
                final[i] = now
        await asyncio.sleep(0.005)
    await posting
    await adapter.idle()
    elapsed = time.monotonic() - started
    updates = len(fake.calls_of("chat.update")) - updates_before
    return {"users": users, "ack_ms_p50": 1000 * statistics.median(acks), "ack_ms_max": 1000 * max(acks),
            "first_visible_s_p50": statistics.median(seen.values()), "first_text_s_p50": statistics.median(text.values()),
            "final_s_p50": statistics.median(final.values()), "final_s_max": max(final.values()),
            "chat_update_calls": updates, "updates_per_s": updates / elapsed}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=8, help="mentions posted at once in the second round")
    parser.add_argument("--tokens", type=int, default=32, help="max new tokens per answer")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args()

    fake = await FakeSlack().start()
    fake.add_user("U0ADA", "Ada")
    config = make_config(Path(tempfile.mkdtemp()) / "data", knowledge={"enabled": False},
                         limits={"user_per_minute": 10_000, "workspace_per_minute": 10_000},
                         slack={"mode": "http", "stream_interval_s": 1.0})
    for model in config.models:
        model.generation.max_new_tokens = args.tokens
    engine = Engine(config)
    await engine.start()
    adapter = SlackAdapter(engine, config, bot_token=fake.bot_token, signing_secret=fake.signing_secret,
                           api_url=fake.api_url)
    await adapter.start("127.0.0.1", 0)
    try:
        results = [await run_round(fake, adapter, 1), await run_round(fake, adapter, args.users)]
    finally:
        await adapter.close()
        await engine.stop()
        await fake.close()
    for r in results:
        print(f"{r['users']:>3} at once: ack p50 {r['ack_ms_p50']:.0f} ms (max {r['ack_ms_max']:.0f}); "
              f"visible p50 {r['first_visible_s_p50']:.2f} s; first text p50 {r['first_text_s_p50']:.2f} s; "
              f"final p50 {r['final_s_p50']:.1f} s (max {r['final_s_max']:.1f}); "
              f"{r['chat_update_calls']} chat.update ({r['updates_per_s']:.2f}/s)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
