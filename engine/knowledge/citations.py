"""Citations: retrieved passages become a prompt block tagged [1], [2]… and the sources an answer
shows with the same numbers (adapters.chat.markup renders them)."""
from __future__ import annotations

import re
from typing import Callable, Iterable, Sequence

from engine.knowledge.records import Passage
from engine.types import Source

CONTEXT_HEADER = ("Passages from the documents shared here. Answer from them when "
                  "they are relevant and cite them by number, like [1]. If they do not hold the answer, "
                  "say so instead of guessing.")
EXCERPT_CHARS = 160  # the shortest a platform shows (Slack): two sentences are joined only within it
# A sentence ends at . ! or ? before a space, but not after "e.g.", "i.e.", "etc.", "vs.", "cf." or an initial.
_SENTENCE_END = re.compile(r"(?<![Ee]\.g\.)(?<![Ii]\.e\.)(?<!etc\.)(?<!\bvs\.)(?<!\bcf\.)(?<!\b[A-Z]\.)(?<=[.!?])\s+")


def _tag(number: int, passage: Passage, text: str) -> str:
    section = f" ({' '.join(passage.heading.split())})" if passage.heading else ""
    return f"[{number}] {passage.label()}{section}: {' '.join(text.split())}"


def build_context(passages: Sequence[Passage], budget_tokens: int,
                  count_tokens: Callable[[str], int]) -> tuple[str, list[Passage]]:
    """The header and as many passages (best first) as fit in budget_tokens, and the passages used.

    A passage that does not fit whole is skipped for a shorter one after it; the first passage is
    cut to fit rather than dropped, so a tight budget still gets the best evidence.
    """
    if not passages:
        return "", []
    used: list[Passage] = []
    parts = [CONTEXT_HEADER]
    spent = count_tokens(CONTEXT_HEADER)
    for passage in passages:
        block = _tag(len(used) + 1, passage, passage.text)
        cost = count_tokens(block) + 1  # the blank line between passages
        if spent + cost <= budget_tokens:
            parts.append(block)
            used.append(passage)
            spent += cost
        elif not used:
            cut = _cut_to_fit(passage, budget_tokens - spent - 1, count_tokens)
            if cut:
                parts.append(cut)
                used.append(passage)
                spent += count_tokens(cut) + 1
    if not used:
        return "", []
    return "\n\n".join(parts), used


def _cut_to_fit(passage: Passage, budget: int, count_tokens: Callable[[str], int]) -> str:
    words = passage.text.split()
    lo, hi, best = 1, len(words), ""
    while lo <= hi:  # the longest prefix of words that fits
        mid = (lo + hi) // 2
        block = _tag(1, passage, " ".join(words[:mid]) + " …")
        if count_tokens(block) <= budget:
            best, lo = block, mid + 1
        else:
            hi = mid - 1
    return best


def sentences(text: str) -> list[str]:
    """A passage cut into sentences (and lines: list items, table rows, CSV fields)."""
    out: list[str] = []
    for line in text.split("\n"):
        out.extend(s for s in _SENTENCE_END.split(" ".join(line.split())) if s)
    return out


def excerpt(text: str, limit: int = EXCERPT_CHARS, start: int = 0) -> str:
    """A sentence or two of a passage (from sentence `start`), at most `limit` characters: whole
    sentences, unless the one sentence is longer than that."""
    parts = sentences(text)[start:] or [" ".join(text.split())]
    out = parts[0]
    if len(parts) > 1 and len(out) < limit // 2 and len(out) + 1 + len(parts[1]) <= limit:
        out = f"{out} {parts[1]}"
    if len(out) > limit:
        out = out[:limit].rsplit(" ", 1)[0] + " …"
    return out


def to_sources(passages: Iterable[Passage]) -> tuple[Source, ...]:
    """One Source per passage used, in the order they were tagged (so [n] matches), with a
    short excerpt to check the answer against."""
    return tuple(Source(file=p.file, page=p.shown_page if p.page else None, excerpt=p.excerpt or excerpt(p.text), score=p.score,
                        version=p.version) for p in passages)
