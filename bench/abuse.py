"""Answers under abuse: users asking while large files index and one member summarises repeatedly.

One process, the packaged model on llama.cpp (as `make run` serves it) and the real knowledge base
(Chroma and the embedder) in a temporary data dir, driven through the Engine's public API only
(Engine.answer, Engine.ingest with a FileUpload, Engine.summarize): what users get.

1. Quiet: --users users (16) ask, each in a thread of their own, at seeded arrival times spread
   over a few seconds (--rounds N: N questions each, 20 s apart). Their questions are varied text
   (a few words to ~500 tokens of context of their own, no shared long prefix, so the prefix
   cache flatters neither run), answered greedily with the model's default max_new_tokens (a
   request cannot fix its answer's length).
2. Abuse, on a fresh engine: the same users at the same times, while --files large files (~2 MB
   of Markdown or text each, and one 100-page PDF) are shared at once in other channels by as
   many members, and one member calls Engine.summarize on 2,000 generated messages again and
   again (two attempts at a time, as someone pressing /llm-summarize repeatedly; a refused one
   tries again a second later). The users start once an ingest embeds and a summary runs.
   --abuse ingests or --abuse summaries runs one of the two alone.

Config: config.yaml as it stands, except the data dir (temporary), the log file (none; --log FILE
keeps the engine's INFO log), greedy sampling (temperature 0: the same answers in both runs) and
the per-minute answer limits (raised so the askers measure contention, not refusals). The summary limits are config.yaml's,
so the summariser meets them: how many of its summaries ran and how many were refused is printed.

Printed: the CPU, threads, both runs' first-token p50/p95 (from the question to its first
text), between-token p50/p95 (every gap between consecutive pieces of text), tokens/s (answers'
tokens over the span from the first question to the last answer), the ratio abuse/quiet of the
p95 first token and whether the goal (<= 2x) is met, the ingests (finished, each one's wait in
line and work) and the summaries (ran, refused and why).

    .venv/bin/python bench/abuse.py                       # 16 users, 6 files
    .venv/bin/python bench/abuse.py --quick               # a smoke run: 6 users, 3 small files
    .venv/bin/python bench/abuse.py --users 32 --files 8 --json bench/results/abuse.json
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the document generators live beside the tests

import docgen  # noqa: E402
from engine.config import Config, load_config  # noqa: E402
from engine.core import Engine  # noqa: E402
from engine.errors import ParleyError  # noqa: E402
from engine.knowledge.questions import is_document_question  # noqa: E402
from engine.runtime.cpu import cpu_count, cpu_name  # noqa: E402
from engine.types import (  # noqa: E402
    AnswerDone, AnswerFailed, ChatRequest, Conversation, FileUpload, IngestProgress, SaidMessage, TextDelta,
    User,
)

WORKSPACE = "T-bench"
GOAL = 2.0  # the abuse run's p95 first token within this many times the quiet run's
ROUND_GAP_S = 20.0
REFUSED_PAUSE_S = 1.0  # a refused summariser tries again after this
SUMMARY_ATTEMPTS = 2  # the summariser's attempts in flight at once
NAMES = ["Ana", "Bo", "Chen", "Dara", "Eli", "Femi", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lena"]
ASKS = ["Can you explain {t} in simple terms?", "What are three good ideas for {t}?",
        "Give me a short plan for {t}.", "What should a beginner know about {t}?",
        "Write a friendly message to the team about {t}.", "What are the pros and cons of {t}?",
        "How would you describe {t} to a new colleague?", "List a few questions to ask about {t}."]
TOPICS = ["learning to cook", "a weekend hike", "saving energy at home", "remote work", "a garden in spring",
          "public speaking", "a small bakery", "training for a 10k run", "a team offsite",
          "reading more books",
          "a birthday party", "moving to a new city", "keeping plants alive", "a bike commute",
          "tidying a workshop", "a quiet morning routine", "a board game night", "a science fair"]


def vocabulary() -> list[str]:
    """Plain words from the test corpus, none of which make a question about documents (which
    would be answered "there are no documents here" without the model)."""
    words = " ".join(docgen.FILLER).translate(str.maketrans("", "", ".,;:")).split()
    return sorted({w.lower() for w in words if not is_document_question(w)})


def sentences(rng: random.Random, words: list[str], count: int, low: int = 6, high: int = 18) -> str:
    return " ".join(" ".join(rng.choice(words) for _ in range(rng.randint(low, high))).capitalize() + "."
                    for _ in range(count))


# ---- the askers ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ask:
    user: int
    round: int
    at_s: float  # after the start of the run
    text: str


@dataclass
class Answered:
    ask: Ask
    first_token_s: float | None = None  # from the question
    end_s: float = 0.0  # from the question
    done_at_s: float = 0.0  # after the start of the run
    tokens: int = 0
    gaps_s: list[float] = field(default_factory=list)  # between consecutive pieces of text
    outcome: str = ""  # the finish reason, or the failure's code


def schedule(users: int, rounds: int, seed: int, gap_s: float) -> list[Ask]:
    """Seeded: each user's question (a context of their own, 0-24 sentences, then an ask), first
    arrivals with exponential gaps of mean `gap_s`, each later round ROUND_GAP_S after the last."""
    rng = random.Random(seed)
    words = vocabulary()
    firsts: list[float] = []
    t = 0.0
    for _ in range(users):
        firsts.append(t)
        t += rng.expovariate(1.0 / gap_s)
    asks = []
    for r in range(rounds):
        for u in range(users):
            context = sentences(rng, words, rng.choice([0, 0, 1, 2, 4, 8, 12, 16, 24]))
            question = rng.choice(ASKS).format(t=rng.choice(TOPICS))
            text = f"Some background: {context}\n\n{question}" if context else question
            # A question about documents would be answered "no documents here", without the model.
            assert not is_document_question(text), text
            asks.append(Ask(u, r, firsts[u] + r * ROUND_GAP_S, text))
    return sorted(asks, key=lambda a: a.at_s)


def asker(user: int) -> User:
    return User(f"U-ask-{user:02d}", f"asker{user:02d}")


async def ask(engine: Engine, a: Ask, start: float, run: str) -> Answered:
    await asyncio.sleep(max(0.0, start + a.at_s - time.perf_counter()))
    thread = f"{run}-{a.user}-{a.round}"
    where = Conversation("slack", WORKSPACE, f"C-ask-{a.user % 4}", thread, visibility="public")
    out = Answered(a)
    asked = time.perf_counter()
    last = None
    async for event in engine.answer(ChatRequest(where, asker(a.user), a.text, message_id=thread)):
        now = time.perf_counter()
        if isinstance(event, TextDelta):
            if last is None:
                out.first_token_s = now - asked
            else:
                out.gaps_s.append(now - last)
            last = now
        elif isinstance(event, AnswerDone):
            out.tokens = event.completion_tokens
            out.outcome = event.finish_reason
        elif isinstance(event, AnswerFailed):
            out.outcome = event.code.value
    end = time.perf_counter()
    out.end_s = end - asked
    out.done_at_s = end - start
    return out


async def ask_all(engine: Engine, asks: list[Ask], run: str) -> tuple[list[Answered], int]:
    """The answers, and the most requests seen waiting in the model's queue meanwhile."""
    start = time.perf_counter()
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, int(engine.snapshot().scheduler.get("queued", 0)))
            await asyncio.sleep(0.5)

    watcher = asyncio.create_task(watch())
    try:
        return list(await asyncio.gather(*(ask(engine, a, start, run) for a in asks))), peak
    finally:
        watcher.cancel()


def percentile(values: list[float], q: float) -> float | None:
    values = sorted(values)
    if not values:
        return None
    k = (len(values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def figures(answers: list[Answered]) -> dict:
    firsts = [a.first_token_s for a in answers if a.first_token_s is not None]
    gaps = [g for a in answers for g in a.gaps_s]
    tokens = sum(a.tokens for a in answers)
    span = max(a.done_at_s for a in answers) - min(a.ask.at_s for a in answers)

    def r(x: float | None, digits: int = 3) -> float | None:
        return None if x is None else round(x, digits)

    return {"answers": len(answers), "outcomes": dict(Counter(a.outcome for a in answers)), "tokens": tokens,
            "seconds": round(span, 1), "tokens_per_s": round(tokens / span, 1),
            "first_token_p50_s": r(percentile(firsts, 0.5)), "first_token_p95_s": r(percentile(firsts, 0.95)),
            "first_token_max_s": r(max(firsts, default=None)),
            "between_tokens_p50_s": r(percentile(gaps, 0.5), 4),
            "between_tokens_p95_s": r(percentile(gaps, 0.95), 4)}


# ---- the abuse -------------------------------------------------------------------------------

def large_text(rng: random.Random, words: list[str], size: int, markdown: bool) -> bytes:
    """~`size` bytes of prose, in sections with headings when `markdown`."""
    out: list[str] = []
    used = 0
    while used < size:
        if markdown and rng.random() < 0.15:
            out.append(f"## {sentences(rng, words, 1, 2, 5).rstrip('.')}")
        paragraph = sentences(rng, words, rng.randint(3, 7), 8, 20)
        out.append(paragraph)
        used += len(paragraph) + 2
    title = f"# {sentences(rng, words, 1, 2, 4).rstrip('.')}\n\n" if markdown else ""
    return (title + "\n\n".join(out)).encode("utf-8")


def large_files(count: int, size: int, pdf_pages: int, seed: int) -> list[tuple[str, bytes, str]]:
    """`count` files to share: the first a PDF of `pdf_pages` pages (when pdf_pages), the others
    alternately Markdown and text of ~`size` bytes each, every one of its own words."""
    words = vocabulary()
    files = []
    for i in range(count):
        rng = random.Random(seed * 1000 + i)
        if i == 0 and pdf_pages:
            pdf = docgen.long_pdf(pages=pdf_pages, seed=seed + i)
            files.append((f"annual-{i}.pdf", pdf, "application/pdf"))
        elif i % 2:
            files.append((f"handbook-{i}.md", large_text(rng, words, size, True), "text/markdown"))
        else:
            files.append((f"notes-{i}.txt", large_text(rng, words, size, False), "text/plain"))
    return files


def chat_history(count: int, seed: int) -> list[SaidMessage]:
    rng = random.Random(seed)
    words = vocabulary()
    now = time.time()
    return [SaidMessage(rng.choice(NAMES), sentences(rng, words, rng.randint(1, 2), 4, 16),
                        at=now - (count - i) * 60) for i in range(count)]


@dataclass
class IngestRun:
    name: str
    size: int
    started: float  # perf_counter
    stages: dict[str, float] = field(default_factory=dict)  # stage -> seconds after start, when first seen
    done_s: float | None = None
    chunks: int = 0
    error: str = ""

    def report(self) -> dict:
        began = min((s for k, s in self.stages.items() if k != "queued"), default=None)
        return {"file": self.name, "mb": round(self.size / 2**20, 2), "chunks": self.chunks,
                "error": self.error,
                "waited_s": None if began is None else round(began, 1),
                "total_s": None if self.done_s is None else round(self.done_s, 1)}


@dataclass
class SummaryTally:
    ran: int = 0
    model_calls: int = 0
    seconds: list[float] = field(default_factory=list)
    refused: Counter = field(default_factory=Counter)  # code (and which limit) -> count
    running: asyncio.Event = field(default_factory=asyncio.Event)  # a summary got past admission

    def report(self) -> dict:
        return {"ran": self.ran, "model_calls": self.model_calls,
                "seconds": [round(s, 1) for s in self.seconds],
                "refused": sum(self.refused.values()), "refused_by": dict(self.refused)}


async def ingest(engine: Engine, index: int, name: str, data: bytes, mime: str,
                 embedding: asyncio.Event) -> IngestRun:
    where = Conversation("slack", WORKSPACE, f"C-docs-{index}", f"docs-{index}", visibility="public")
    run = IngestRun(name, len(data), time.perf_counter())

    def progress(p: IngestProgress) -> None:
        run.stages.setdefault(p.stage, time.perf_counter() - run.started)
        if p.stage == "embedding":
            embedding.set()

    try:
        sharer = User(f"U-share-{index}", f"sharer{index}")
        result = await engine.ingest(FileUpload(where, sharer, name, data, mime), progress)
        run.chunks = result.chunks
        run.done_s = time.perf_counter() - run.started
    except ParleyError as exc:
        run.error = exc.code.value
    return run


async def summarise_again(engine: Engine, messages: list[SaidMessage], tally: SummaryTally,
                          stop: asyncio.Event) -> None:
    """One attempt after another until `stop`: the engine's refusals are the only brake."""
    where = Conversation("slack", WORKSPACE, "C-busy", "busy", visibility="public")
    member = User("U-summariser", "summariser")

    def progress(done: int, total: int) -> None:
        tally.running.set()

    while not stop.is_set():
        began = time.perf_counter()
        try:
            summary = await engine.summarize(where, member, messages, progress)
        except ParleyError as exc:
            tally.refused[f"{exc.code.value}/{getattr(exc, 'limit', '')}".rstrip("/")] += 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), REFUSED_PAUSE_S)
            continue
        tally.running.set()
        tally.ran += 1
        tally.model_calls += summary.model_calls
        tally.seconds.append(time.perf_counter() - began)


# ---- the runs --------------------------------------------------------------------------------

def bench_config(data_dir: Path) -> Config:
    config = load_config(ROOT / "config.yaml")
    config.data_dir = str(data_dir)
    config.logging.file = ""
    for model in config.models:
        model.generation.temperature = 0.0  # greedy: both runs write the same answers
    config.limits.user_per_minute = 100_000.0  # the askers measure contention, not refusals
    config.limits.workspace_per_minute = 1_000_000.0
    return config


async def started(config: Config) -> Engine:
    engine = Engine(config)
    await engine.start()
    warm = Conversation("slack", WORKSPACE, "C-warm", "warm", visibility="public")
    # The first answers load the embedder, allocate and pick kernels.
    for text in ("Hello, who are you?", "Name three colours."):
        async for _ in engine.answer(ChatRequest(warm, User("U-warm"), text)):
            pass
    return engine


async def quiet_run(config: Config, asks: list[Ask]) -> tuple[list[Answered], dict]:
    engine = await started(config)
    try:
        answers, peak = await ask_all(engine, asks, "quiet")
        return answers, {**engine.snapshot().scheduler, "peak_queued": peak}
    finally:
        await engine.stop()


async def abuse_run(config: Config, asks: list[Ask], files: list[tuple[str, bytes, str]],
                    messages: list[SaidMessage], ingest_timeout_s: float) -> dict:
    engine = await started(config)
    embedding = asyncio.Event()
    tally = SummaryTally()
    stop = asyncio.Event()
    t0 = time.perf_counter()
    ingests = [asyncio.create_task(ingest(engine, i, *f, embedding)) for i, f in enumerate(files)]
    summariser = [asyncio.create_task(summarise_again(engine, messages, tally, stop))
                  for _ in range(SUMMARY_ATTEMPTS if messages else 0)]
    swing = ([embedding.wait()] if files else []) + ([tally.running.wait()] if messages else [])
    try:
        # The users come once the abuse is in full swing: an ingest embedding and a summary running.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*swing), 180)
        swing_s = time.perf_counter() - t0
        answers, peak = await ask_all(engine, asks, "abuse")
        asked_s = time.perf_counter() - t0
        indexing = sum(1 for t in ingests if not t.done())
        stop.set()  # no new summaries; the one running finishes
        if summariser:
            await asyncio.wait(summariser, timeout=600)
        if ingests:
            await asyncio.wait(ingests, timeout=max(1.0, ingest_timeout_s - (time.perf_counter() - t0)))
        scheduler = engine.snapshot().scheduler
    finally:
        stop.set()
        await engine.stop()  # cancels what still indexes or summarises
        if ingests or summariser:
            await asyncio.wait([*ingests, *summariser], timeout=60)
        for task in (*ingests, *summariser):
            task.cancel()
    runs = [t.result() for t in ingests if t.done() and not t.cancelled() and t.exception() is None]
    return {"answers": answers, "scheduler": {**scheduler, "peak_queued": peak}, "swing_s": round(swing_s, 1),
            "asked_s": round(asked_s, 1),
            "indexing_while_asked": indexing, "ingests": [r.report() for r in runs],
            "ingests_finished": sum(1 for r in runs if r.done_s is not None), "summaries": tally.report()}


def show(name: str, f: dict) -> None:
    ms = lambda x: "-" if x is None else f"{x * 1000:.0f} ms"  # noqa: E731
    print(f"{name}: first token p50 {f['first_token_p50_s']} s, p95 {f['first_token_p95_s']} s "
          f"(max {f['first_token_max_s']} s); between tokens p50 {ms(f['between_tokens_p50_s'])}, "
          f"p95 {ms(f['between_tokens_p95_s'])}; {f['tokens_per_s']} tok/s ({f['tokens']} tokens in "
          f"{f['seconds']} s); at most {f['peak_queued']} waiting for the model; {f['outcomes']}", flush=True)


def show_abuse(abuse: dict, files: list[tuple[str, bytes, str]]) -> None:
    summarising = abuse["summaries"]["ran"] or abuse["summaries"]["refused"]
    swing = " and ".join((["an ingest embedding"] if files else [])
                         + (["a summary running"] if summarising else []))
    print(f"abuse: the users began {abuse['swing_s']} s after it started ({swing}) and were answered by "
          f"{abuse['asked_s']} s, {abuse['indexing_while_asked']} of {len(files)} files still indexing then",
          flush=True)
    for r in abuse["ingests"]:
        state = f"{r['total_s']} s in all" if r["total_s"] is not None else (r["error"] or "unfinished")
        print(f"  ingest {r['file']} ({r['mb']} MB): {r['chunks']} chunks, waited {r['waited_s']} s in line, "
              f"{state}")
    s = abuse["summaries"]
    if s["ran"] or s["refused"]:
        print(f"  summaries ({SUMMARY_ATTEMPTS} attempts at a time, again and again): {s['ran']} ran "
              f"({s['model_calls']} model calls, {s['seconds']} s), {s['refused']} refused {s['refused_by']}",
              flush=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=None, help="askers (16; --quick: 6)")
    parser.add_argument("--files", type=int, default=None, help="files shared at once (6; --quick: 3)")
    parser.add_argument("--file-mb", type=float, default=None, help="each text file's MB (2; --quick: 0.2)")
    parser.add_argument("--pdf-pages", type=int, default=None, help="the PDF's pages (100; quick: 20)")
    parser.add_argument("--messages", type=int, default=None, help="messages summarised (2000; --quick: 500)")
    parser.add_argument("--rounds", type=int, default=1, help="questions per user, 20 s apart (1)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer users, smaller files")
    parser.add_argument("--abuse", choices=["all", "ingests", "summaries"], default="all",
                        help="which abuse runs beside the users (all: both)")
    parser.add_argument("--gap", type=float, default=0.25, help="mean seconds between first arrivals")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--ingest-timeout", type=float, default=1200.0,
                        help="seconds after the uploads that the ingests may take before the engine stops")
    parser.add_argument("--log", type=Path, default=None, help="the engine's log (INFO) to this file")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {"users": (16, 6), "files": (6, 3), "file_mb": (2.0, 0.2), "pdf_pages": (100, 20),
                "messages": (2000, 500)}
    for key, (full, small) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, small if quick else full)
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    logging.basicConfig(level=logging.ERROR)  # the summariser's refusals are counted, not logged here
    if args.log:
        keep = logging.FileHandler(args.log, encoding="utf-8")
        keep.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        logging.getLogger().handlers[0].setLevel(logging.ERROR)
        logging.getLogger().addHandler(keep)
        logging.getLogger().setLevel(logging.INFO)
    asks = schedule(args.users, args.rounds, args.seed, args.gap)
    files = large_files(args.files, int(args.file_mb * 2**20), args.pdf_pages, args.seed) \
        if args.abuse != "summaries" else []
    messages = chat_history(args.messages, args.seed) if args.abuse != "ingests" else []
    result: dict = {"cpu": cpu_name(), "cores": cpu_count(), "users": args.users, "rounds": args.rounds,
                    "abused_by": args.abuse,
                    "files": [(n, len(d)) for n, d, _ in files], "messages": len(messages), "seed": args.seed}
    print(f"{cpu_name()}, {cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; {args.users} users x "
          f"{args.rounds} questions over {asks[-1].at_s:.1f} s; {len(files)} files "
          f"({', '.join(f'{n} {len(d) / 2**20:.1f} MB' for n, d, _ in files)}); {len(messages)} messages "
          f"summarised again and again", flush=True)
    with tempfile.TemporaryDirectory(prefix="parley-abuse-") as tmp:
        quiet, snap = asyncio.run(quiet_run(bench_config(Path(tmp) / "quiet"), asks))
        result["threads"] = snap.get("threads")
        result["quiet"] = figures(quiet)
        result["quiet"]["peak_queued"] = snap["peak_queued"]
        print(f"threads: {snap.get('threads')} of {snap.get('max_threads')} (llama.cpp), prefix tokens "
              f"reused {snap.get('prefix_tokens_reused')}", flush=True)
        show("quiet", result["quiet"])
        print(f"load average {os.getloadavg()[0]:.1f}", flush=True)
        abuse = asyncio.run(abuse_run(bench_config(Path(tmp) / "abuse"), asks, files, messages,
                                      args.ingest_timeout))
    result["abuse"] = figures(abuse.pop("answers"))
    result["abuse"]["threads"] = abuse["scheduler"].get("threads")
    result["abuse"]["peak_queued"] = abuse["scheduler"]["peak_queued"]
    result.update({k: v for k, v in abuse.items() if k != "scheduler"})
    show("abuse", result["abuse"])
    show_abuse(abuse, files)
    ratio = result["abuse"]["first_token_p95_s"] / result["quiet"]["first_token_p95_s"]
    result["ratio_first_token_p95"] = round(ratio, 2)
    result["goal_met"] = ratio <= GOAL
    verdict = "met" if ratio <= GOAL else "NOT met"
    print(f"p95 first token, abuse / quiet: {ratio:.2f}x (goal <= {GOAL:g}x: {verdict}); ingests finished "
          f"{result['ingests_finished']} of {len(files)}; load average {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
