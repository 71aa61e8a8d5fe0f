"""Knowledge on real documents: public documents nobody on this project wrote, as a new user
would share them, and questions whose answers stand in exactly one place (and a few in none).

The documents come from Debian packages, fetched at run time with `apt-get download` into
bench/results/realdocs/ (never committed) and unpacked with dpkg-deb:
  - developers-reference.pdf: Debian's Developer's Reference, 114 pages (Sphinx/LaTeX, justified)
  - menu-structure.html: chapter 2 of the Debian menu sub-policy (DocBook XSL, XHTML)
  - copyright-format.html: the machine-readable debian/copyright specification (DocBook, HTML)
  - constitution.txt, social-contract.txt: the Debian constitution and social contract (text)

Printed: ingest time and pages/s of each file, then per question whether the passage holding
the answer (its file, its printed page, the answer's words) was cited first (hit@1) or among the
top_k (hit@k), whether unanswerable questions got "not found" (no passage), and the latency of
each search; the CPU's model name heads the output. Run it on a quiet machine: figures taken
while other processes load the CPU are not meaningful.

    .venv/bin/python bench/realdocs.py                 # the shipped defaults, and the baselines
    .venv/bin/python bench/realdocs.py --dtype float32 --explain
    .venv/bin/python bench/realdocs.py --parse-ab 3 --skip-questions   # the parse sandbox's cost alone

--parse-ab ROUNDS (default 3, 0 to skip) ingests the 114-page PDF with the parse sandbox and in
the bot's process, interleaved, and prints the sandbox's overhead beside (bench/parse_ab.py).
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.config import KnowledgeConfig  # noqa: E402
from engine.runtime.cpu import cpu_name  # noqa: E402
from engine.knowledge import KnowledgeBase, loaders  # noqa: E402
from engine.knowledge.embedder import Embedder  # noqa: E402
from engine.knowledge.hybrid import relevant  # noqa: E402
from engine.types import Conversation, FileUpload, User  # noqa: E402
from bench.parse_ab import parse_ab  # noqa: E402

PACKAGES = ["developers-reference", "debian-policy", "doc-debian"]
DOCUMENTS = {  # the name shared -> its path inside the unpacked packages
    "developers-reference.pdf": "usr/share/developers-reference/developers-reference.pdf",
    "menu-structure.html": "usr/share/doc/debian-policy/menu-policy.html/ch2.html",
    "copyright-format.html": "usr/share/doc/debian-policy/copyright-format-1.0.html",
    "constitution.txt": "usr/share/doc/debian/constitution.txt.gz",
    "social-contract.txt": "usr/share/doc/debian/social-contract.txt.gz",
}
WHERE = Conversation("slack", "T-real", "C-real", "1")
# Other retrieval settings measured on the same store, for comparison.
VARIANTS = {
    "embedding alone, old cosine threshold 0.25": {"hybrid": False, "min_evidence": -2.0, "order": "fused"},
    "embedding's candidates alone, evidence decision": {"hybrid": False},
    "hybrid, kept passages in fused order": {"order": "fused"},
}
PDF = "developers-reference.pdf"


@dataclasses.dataclass(frozen=True)
class Question:
    text: str
    file: str = ""  # "" = the answer is in none of the documents
    proof: str = ""  # words of the answer, found in exactly one place
    page: str = ""  # the printed page number (PDF)


QUESTIONS = [
    Question("What delay should I use in the DELAYED queue for an NMU that is not about release-critical bugs?",
             PDF, "Other NMUs: 10 days", "51"),
    Question("How can I cancel an upload that is waiting in the DELAYED queue?", PDF, "dcut cancel", "52"),
    Question("Which day values can the DELAYED upload directories have?", PDF, "X between 0 and 15", "34"),
    Question("How long may the maintainer object after a package salvaging bug is filed?", PDF,
             "within 21 days", "54"),
    Question("How long must a porter wait before doing an NMU on unstable?", PDF, "seven days for porters", "48"),
    Question("When should I send a reminder to a maintainer who does not answer?", PDF,
             "send a reminder after two weeks", "87"),
    Question("What should I do if I cannot fix a release-critical bug in my package within two weeks?", PDF,
             "tag the bug help", "10"),
    Question("How long must an NMU made during a bug squashing party be delayed at least?", PDF,
             "DELAYED/3-day at least", "87"),
    Question("Which tool compares two .deb files, archives or directories in depth?", PDF,
             "diffoscope provides in-depth comparison", "99"),
    Question("How should a package declare its debhelper compatibility level nowadays?", PDF,
             "debhelper-compat (=12)", "100"),
    Question("Which mailing list announces important things to all developers?", PDF,
             "debian-devel-announce@lists.debian.org, used to announce", "15"),
    Question("What is the special first line of the changelog entry of a QA upload?", PDF,
             "has a special first line", "53"),
    Question("Under which menu section do screen savers and screen blanking tools go?", "menu-structure.html",
             "Screen/Saving: Tools for blanking the screen"),
    Question("Where must all Window Maker specific menu entries go?", "menu-structure.html",
             "This section is reserved for wmaker"),
    Question("Which wildcards may a Files field pattern use in debian/copyright?", "copyright-format.html",
             "Only the wildcards * and ? apply"),
    Question("What majority do developers need to amend the Debian constitution?", "constitution.txt",
             "Amend this constitution, provided they agree with a 3:1 majority"),
    Question("When does the election of the Project Leader begin?", "constitution.txt",
             "The election begins six weeks before the leadership post"),
    Question("How many developers may sit on the Technical Committee?", "constitution.txt",
             "consists of up to 8 Developers"),
    Question("Will Debian keep its bug tracking database open to the public?", "social-contract.txt",
             "bug report database open for public view"),
    Question("Who does Debian put first in its priorities?", "social-contract.txt",
             "Our priorities are our users and free software"),
    Question("How many source packages does the Debian archive hold?", PDF,
             "currently around 30000 source packages", "19"),
    Question("How much does Debian pay a developer for each package upload?"),
    Question("What is the largest package size ftp-master will accept?"),
    Question("How do I reset a forgotten root password on a Debian system?"),
    Question("What is the capital of Australia?"),
    Question("Who founded the Debian project, and in which year?"),
    Question("Who owns the Debian trademark?"),
    Question("What salary does the Debian Project Leader receive?"),
]


def fetch(into: Path) -> dict[str, bytes]:
    """The documents' bytes, from the Debian packages (downloaded once into `into`)."""
    debs = into / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    if not any(debs.glob("*.deb")) or len(list(debs.glob("*.deb"))) < len(PACKAGES):
        print(f"downloading {', '.join(PACKAGES)} with apt-get download…", flush=True)
        done = subprocess.run(["apt-get", "download", *PACKAGES], cwd=debs, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"apt-get download failed (run `apt-get update` first?):\n{done.stderr.strip()}")
    tree = into / "unpacked"
    if not tree.exists():
        for deb in debs.glob("*.deb"):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
    out = {}
    for name, path in DOCUMENTS.items():
        data = (tree / path).read_bytes()
        out[name] = gzip.decompress(data) if path.endswith(".gz") else data
    return out


def normal(text: str) -> str:
    return " ".join(text.lower().split())


def check_unique(texts: dict[str, str]) -> None:
    """Each answer's words stand in exactly one document (so a hit is the one right place)."""
    for q in QUESTIONS:
        if q.proof:
            places = [n for n, t in texts.items() if normal(q.proof) in t]
            if places != [q.file]:
                print(f"  warning: {q.proof!r} found in {places or 'no document'} (expected {q.file})")


async def ingest(kb: KnowledgeBase, docs: dict[str, bytes]) -> list[dict]:
    rows = []
    for name, data in docs.items():
        started = time.perf_counter()
        result = await kb.ingest(FileUpload(where=WHERE, user=User("U-bench"), filename=name, data=data))
        seconds = time.perf_counter() - started
        rows.append({"file": name, "pages": result.pages, "sections": result.sections, "chunks": result.chunks,
                     "seconds": round(seconds, 2),
                     "pages_per_s": round(result.pages / seconds, 1) if result.pages else None})
    return rows


def whole_sentences(text: str) -> bool:
    """Starts where a sentence (or a list item) starts, ends where one ends, nothing cut off."""
    first = next((c for c in text if c.isalnum()), "")
    return bool(first) and not first.islower() and not text.endswith("…") and text[-1:] in ".!?:;)\"'”’" + \
        "abcdefghijklmnopqrstuvwxyz0123456789" * (text[:1] in "•*-")


def holds_text(c, q: Question) -> bool:
    return c.meta["file"] == q.file and normal(q.proof) in normal(f"{c.meta.get('heading', '')} {c.text}")


def judge(kb: KnowledgeBase, q: Question, explain: bool) -> dict:
    started = time.perf_counter()
    passages = kb.search_sync(WHERE, q.text, None, False)
    ms = (time.perf_counter() - started) * 1000

    def holds(p) -> bool:
        return (p.file == q.file and normal(q.proof) in normal(f"{p.heading} {p.text}")
                and (not q.page or p.page_label == q.page))

    row = {"question": q.text, "ms": round(ms, 1), "cited": [p.label() for p in passages]}
    if passages:  # the sentence a reader is shown as the first source's evidence
        row["excerpt"] = kb.quote_sync(q.text, passages[:1])[0].excerpt
        row["excerpt_whole"] = whole_sentences(row["excerpt"])
    if q.file:
        row["hit1"] = bool(passages) and holds(passages[0])
        row["hitk"] = any(holds(p) for p in passages)
    else:
        row["not_found"] = not passages
    candidates = kb.candidates(WHERE, q.text, False)
    evidence = [c.evidence(kb.config.word_weight) for c in candidates
                if c.cosine >= kb.config.min_relevance and (not q.proof or holds_text(c, q))]
    row["evidence"] = round(max(evidence), 3) if evidence else None  # of the answer's chunk / of any chunk
    if explain:
        row["candidates"] = [(c.meta["file"], c.meta.get("label"), round(c.cosine, 3), round(c.coverage, 2),
                              round(c.evidence(kb.config.word_weight), 3), c.dense_rank, c.lexical_rank,
                              relevant(c, kb.config),
                              normal(q.proof) in normal(f"{c.meta.get('heading', '')} {c.text}") if q.proof else None)
                             for c in kb.candidates(WHERE, q.text, False)[:6]]
    return row


def report(ingests: list[dict], rows: list[dict], config: KnowledgeConfig, embedder: Embedder) -> dict:
    answerable = [r for r in rows if "hit1" in r]
    unanswerable = [r for r in rows if "not_found" in r]
    latencies = sorted(r["ms"] for r in rows)
    return {
        "cpu": cpu_name(), "embedder": f"{embedder.name} ({embedder.dtype})", "hybrid": config.hybrid,
        "ingest": ingests,
        "hit_at_1": f"{sum(r['hit1'] for r in answerable)}/{len(answerable)}",
        f"hit_at_{config.top_k}": f"{sum(r['hitk'] for r in answerable)}/{len(answerable)}",
        "answerable_lost": sum(1 for r in answerable if not r["cited"]),
        "not_found": f"{sum(r['not_found'] for r in unanswerable)}/{len(unanswerable)}",
        # Calibration: the least evidence of an answer's chunk, the most of any chunk for a question
        # with no answer; min_evidence lies between them when both goals are met.
        "answer_evidence_min": min((r["evidence"] for r in answerable if r["evidence"] is not None), default=None),
        "no_answer_evidence_max": max((r["evidence"] for r in unanswerable if r["evidence"] is not None), default=None),
        "excerpts_whole_sentences": f"{sum(r['excerpt_whole'] for r in rows if 'excerpt' in r)}/"
                                    f"{sum(1 for r in rows if 'excerpt' in r)}",
        "search_ms_p50": round(statistics.median(latencies), 1),
        "search_ms_max": round(latencies[-1], 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--chunk-tokens", type=int, default=KnowledgeConfig.chunk_tokens)
    parser.add_argument("--explain", action="store_true", help="print each question's best candidates")
    parser.add_argument("--cache", type=Path, default=ROOT / "bench" / "results" / "realdocs")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--parse-ab", type=int, default=3, metavar="ROUNDS",
                        help="ingests of the PDF with the parse sandbox and without, interleaved (0: skip)")
    parser.add_argument("--skip-questions", action="store_true", help="only the ingests (and --parse-ab)")
    args = parser.parse_args()

    print(f"CPU: {cpu_name()} ({os.cpu_count()} cores); load average {os.getloadavg()[0]:.2f} "
          "(a loaded machine makes these figures meaningless)", flush=True)
    docs = fetch(args.cache)
    config = KnowledgeConfig(embed_dtype=args.dtype, chunk_tokens=args.chunk_tokens)
    embedder = Embedder(dtype=args.dtype, batch_size=config.embed_batch_size)
    parse_figures = await parse_ab(config, embedder, PDF, docs[PDF], args.parse_ab) if args.parse_ab else None
    if args.skip_questions:
        if args.json and parse_figures:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"cpu": cpu_name(), "parse_ab": parse_figures}, indent=1))
        return
    with tempfile.TemporaryDirectory(prefix="parley-realdocs-") as tmp:
        kb = KnowledgeBase(config, Path(tmp), embedder=embedder)
        ingests = await ingest(kb, docs)
        for row in ingests:
            print(f"ingest {row['file']}: {row['pages'] or row['sections']} "
                  f"{'pages' if row['pages'] else 'sections'}, {row['chunks']} chunks, {row['seconds']} s"
                  + (f" ({row['pages_per_s']} pages/s)" if row["pages_per_s"] else ""), flush=True)
        check_unique({n: normal(" ".join(p.text for p in loaders.load(loaders.sniff(n, d), n, d).pages))
                      for n, d in docs.items()})
        rows = [judge(kb, q, args.explain) for q in QUESTIONS]
        baselines = {}
        for label, variant in VARIANTS.items():  # the same store, other retrieval settings
            kb.config = dataclasses.replace(config, **variant)
            baselines[label] = report(ingests, [judge(kb, q, False) for q in QUESTIONS], kb.config, embedder)
        kb.config = config
        kb.close()
    for r in rows:
        mark = ("hit@1" if r["hit1"] else "hit@k" if r["hitk"] else "MISS") if "hit1" in r else \
               ("not found" if r["not_found"] else "ANSWERED")
        print(f"{r['ms']:7.1f} ms  {mark:9}  {r['question']}  -> {', '.join(r['cited'][:3]) or '-'}")
        if r.get("excerpt"):
            print(f"              “{r['excerpt']}”" + ("" if r["excerpt_whole"] else "  (not whole sentences)"))
        if r.get("candidates"):
            print(f"              evidence {r['evidence']} (file, page, cosine, coverage, evidence, dense rank, "
                  "BM25 rank, kept, holds the answer):")
        for c in r.get("candidates", []):
            print(f"              {c}")
    figures = report(ingests, rows, config, embedder)
    print(json.dumps({k: v for k, v in figures.items() if k != "ingest"}, indent=1))
    for label, other in baselines.items():
        print(f"{label}: hit@1 {other['hit_at_1']}, hit@{config.top_k} {other[f'hit_at_{config.top_k}']}, "
              f"not found {other['not_found']}, answerable lost {other['answerable_lost']}")
    figures["baselines"] = baselines
    if parse_figures:
        figures["parse_ab"] = parse_figures
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**figures, "questions": rows}, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
