"""The parse sandbox's cost, A/B in one run: a file ingested with `knowledge.parse_sandbox` on and
off, interleaved (the order alternating round by round), each time into a fresh store; and the
reading alone (sandbox.read_document against loaders.load) likewise. Used by bench/ingest.py and
bench/realdocs.py (--parse-ab ROUNDS); a warm worker is what a running bot has, the first file
after a start pays the worker's start (printed apart).
"""
from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

from engine.config import KnowledgeConfig
from engine.knowledge import KnowledgeBase, loaders, sandbox
from engine.knowledge.bounds import ParseLimits
from engine.knowledge.embedder import Embedder
from engine.types import Conversation, FileUpload, User

SIDES = {"sandbox": True, "in-process": False}


async def _ingest_once(config: KnowledgeConfig, embedder: Embedder, name: str, data: bytes) -> tuple[float, float]:
    """(total seconds, reading seconds) of one ingest into a fresh store."""
    marks: dict[str, float] = {}

    def progress(event) -> None:
        if event.stage == "reading":
            marks["read"] = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="parley-parse-ab-") as tmp:
        kb = KnowledgeBase(config, Path(tmp), embedder=embedder)
        started = time.perf_counter()
        await kb.ingest(FileUpload(where=Conversation("slack", "T-ab", "C-ab", "1"), user=User("U-ab"),
                                   filename=name, data=data), progress)
        total = time.perf_counter() - started
        kb.close()
    return total, marks.get("read", started) - started


def _spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})"


def _reads(name: str, data: bytes, limits: ParseLimits, rounds: int) -> dict[str, list[float]]:
    kind = loaders.sniff(name, data, limits)
    times: dict[str, list[float]] = {side: [] for side in SIDES}
    for r in range(rounds):
        for side in (SIDES if r % 2 == 0 else reversed(SIDES)):
            started = time.perf_counter()
            sandbox.read_document(kind, name, data, dataclasses.replace(limits, sandbox=SIDES[side]))
            times[side].append(time.perf_counter() - started)
    return times


async def parse_ab(config: KnowledgeConfig, embedder: Embedder, name: str, data: bytes, rounds: int) -> dict:
    """Print and return the A/B figures for `name`."""
    limits = ParseLimits.from_config(config)
    sandbox.restart()
    kind = loaders.sniff(name, data, limits)
    started = time.perf_counter()
    sandbox.read_document(kind, name, data, limits)
    cold = time.perf_counter() - started
    reads = _reads(name, data, limits, max(rounds, 5))
    ingests: dict[str, list[tuple[float, float]]] = {side: [] for side in SIDES}
    for r in range(rounds):
        for side in (SIDES if r % 2 == 0 else reversed(SIDES)):
            ingests[side].append(await _ingest_once(dataclasses.replace(config, parse_sandbox=SIDES[side]),
                                                    embedder, name, data))
    out: dict = {"file": name, "bytes": len(data), "rounds": rounds, "first_read_cold_s": round(cold, 3)}
    for side in SIDES:
        out[side] = {"read_only_s": [round(t, 3) for t in reads[side]],
                     "ingest_s": [round(t, 2) for t, _ in ingests[side]],
                     "ingest_read_stage_s": [round(t, 3) for _, t in ingests[side]]}
    read_cost = statistics.median(reads["sandbox"]) - statistics.median(reads["in-process"])
    inside = statistics.median(t for t, _ in ingests["sandbox"])
    outside = statistics.median(t for t, _ in ingests["in-process"])
    out["read_overhead_s"] = round(read_cost, 3)
    out["ingest_overhead_pct"] = round(100 * (inside / outside - 1), 1)
    print(f"parse sandbox A/B on {name} ({len(data) / 2**20:.1f} MB), {rounds} rounds interleaved:")
    print(f"  reading alone, {len(reads['sandbox'])} each: sandbox {_spread(reads['sandbox'])}; "
          f"in-process {_spread(reads['in-process'])}; overhead {read_cost * 1000:+.0f} ms "
          f"(a cold worker's first file: {cold:.2f} s)")
    print(f"  whole ingest: sandbox {_spread([t for t, _ in ingests['sandbox']])}; "
          f"in-process {_spread([t for t, _ in ingests['in-process']])}; "
          f"overhead {out['ingest_overhead_pct']:+.1f}% of the median (goal within 10%: "
          f"{'met' if out['ingest_overhead_pct'] <= 10 else 'MISSED'})", flush=True)
    return out
