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
# One whole sentence up to the longest a platform shows (the console: 300); two joined only
# within the shortest (Slack: 160). A platform's markup shortens what it cannot show.
EXCERPT_CHARS = 300
PAIR_CHARS = 160
# A sentence ends at . ! or ? before a space, but not after "e.g.", "i.e.", "etc.", "vs.", "cf." or an initial.
_SENTENCE_END = re.compile(r"(?<![Ee]\.g\.)(?<![Ii]\.e\.)(?<!etc\.)(?<!\bvs\.)(?<!\bcf\.)(?<!\b[A-Z]\.)(?<=[.!?])\s+")


_LIST_ITEM = re.compile(r"^(?:[•◦▪‣*–-]|\(?\d{1,3}[.)]|\(?[a-z][.)])\s")


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
    """A passage cut into sentences (and lines: list items, table rows, CSV fields); a list
    item's number ("2. ") stays with its first sentence."""
    out: list[str] = []
    for line in text.split("\n"):
        line = " ".join(line.split())
        marker = _LIST_ITEM.match(line)
        head, rest = (marker.group(0), line[marker.end():]) if marker else ("", line)
        parts = [s for s in _SENTENCE_END.split(rest) if s]
        if parts:
            parts[0] = head + parts[0]
        out.extend(parts)
    return out


def is_fragment(parts: list[str], i: int) -> bool:
    """Whether sentence i of a passage is cut: the passage starts mid-sentence (a paragraph that
    began on the page before) or stops mid-sentence (one that goes on over the page)."""
    text = parts[i]
    first = next((c for c in text if c.isalnum()), "")
    if i == 0 and first.islower() and not _LIST_ITEM.match(text):
        return True
    return i == len(parts) - 1 and i > 0 and (text[-1:].islower() or text[-1:] == ",") and not _LIST_ITEM.match(text)


def excerpt(text: str, limit: int = EXCERPT_CHARS, start: int = 0) -> str:
    """A sentence or two of a passage (from sentence `start`), at most `limit` characters: whole
    sentences, unless the one sentence is longer than that."""
    parts = sentences(text)[start:] or [" ".join(text.split())]
    out = parts[0]
    if len(parts) > 1 and (len(out) + 1 + len(parts[1]) <= min(limit, PAIR_CHARS) and not _LIST_ITEM.match(parts[1])
                           or out.endswith(":") and len(out) + 1 + len(parts[1]) <= limit):
        out = f"{out} {parts[1]}"  # a short pair, or a lead-in with what it leads in to
    if len(out) > limit:
        out = out[:limit].rsplit(" ", 1)[0] + " …"
    return out


def to_sources(passages: Iterable[Passage]) -> tuple[Source, ...]:
    """One Source per passage used, in the order they were tagged (so [n] matches), with a
    short excerpt to check the answer against."""
    return tuple(Source(file=p.file, page=p.shown_page if p.page else None, excerpt=p.excerpt or excerpt(p.text), score=p.score,
                        version=p.version) for p in passages)
