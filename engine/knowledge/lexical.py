"""BM25 over the chunks of a scope: the exact words of a question (a command, a list name, a
field), which a 384-dimension sentence embedding blurs.

The index is kept per document version (term frequencies of its chunks), so a scope's index is
the union of its live documents' and nothing is rebuilt when a document comes or goes: the
collection statistics (chunk count, average length, document frequencies) are summed over the
documents in scope at query time. A document not yet in memory (after a restart, or written by
another process) is read back from the store once.
"""
from __future__ import annotations

import math
import re
import threading
from collections import Counter
from dataclasses import dataclass, field

K1, B = 1.2, 0.75  # the usual BM25 constants (Lucene's defaults)
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
STOPWORDS = frozenset("""a about above after again against all am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for from further had has have
having he her here hers herself him himself his how i if in into is it its itself just me more most my myself no
nor not now of off on once only or other our ours ourselves out over own same she should so some such than that
the their theirs them themselves then there these they this those through to too under until up very was we were
what when where which while who whom why will with would you your yours yourself yourselves shall may must might
also us per via etc""".split())


def terms(text: str) -> list[str]:
    """Words of a text as BM25 compares them: lower case, no stop words, plurals folded."""
    return [_fold(w) for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


def _fold(word: str) -> str:
    """A light plural stemmer (Harman's S-stemmer): "packages" and "package" match."""
    if len(word) <= 3 or not word.endswith("s") or word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies") and not word.endswith(("eies", "aies")):
        return word[:-3] + "y"
    if word.endswith("es") and not word.endswith(("aes", "ees", "oes")):
        return word[:-1]
    return word[:-1]


@dataclass
class DocumentTerms:
    """One document version's chunks, as BM25 needs them."""

    version: int
    ids: list[str]
    lengths: list[int]
    postings: dict[str, list[tuple[int, int]]]  # term -> [(chunk position, frequency)]

    @classmethod
    def build(cls, version: int, ids: list[str], texts: list[str]) -> "DocumentTerms":
        postings: dict[str, list[tuple[int, int]]] = {}
        lengths = []
        for position, text in enumerate(texts):
            words = terms(text)
            lengths.append(len(words))
            for term, freq in Counter(words).items():
                postings.setdefault(term, []).append((position, freq))
        return cls(version, list(ids), lengths, postings)


@dataclass
class LexicalHits:
    """Chunk ids by BM25 score, best first, and how much of the question's weight the best
    chunk holds (the share of the question's IDF mass whose terms it contains)."""

    ranked: list[tuple[str, float]] = field(default_factory=list)
    coverage: dict[str, float] = field(default_factory=dict)  # every chunk with a word of the question


class LexicalIndex:
    def __init__(self) -> None:
        self._docs: dict[str, DocumentTerms] = {}
        self._lock = threading.Lock()

    def put(self, doc_id: str, terms_: DocumentTerms) -> None:
        with self._lock:
            self._docs[doc_id] = terms_

    def drop(self, doc_id: str) -> None:
        with self._lock:
            self._docs.pop(doc_id, None)

    def clear(self) -> None:
        with self._lock:
            self._docs.clear()

    def missing(self, live: dict[str, int]) -> list[str]:
        """The documents of `live` (doc_id -> version) not held at that version."""
        with self._lock:
            return [d for d, v in live.items() if d not in self._docs or self._docs[d].version != v]

    def search(self, question: str, live: dict[str, int], n: int) -> LexicalHits:
        """The `n` best chunks of the live documents for the question's words."""
        words = list(dict.fromkeys(terms(question)))
        with self._lock:
            docs = [self._docs[d] for d, v in live.items() if d in self._docs and self._docs[d].version == v]
        total = sum(len(d.lengths) for d in docs)
        if not words or not total:
            return LexicalHits()
        average = sum(sum(d.lengths) for d in docs) / total or 1.0
        idf = {w: math.log(1 + (total - df + 0.5) / (df + 0.5))
               for w in words if (df := sum(len(d.postings.get(w, ())) for d in docs))}
        scores: dict[str, float] = {}
        mass: dict[str, float] = {}
        for doc in docs:
            for word, weight in idf.items():
                for position, freq in doc.postings.get(word, ()):
                    norm = freq + K1 * (1 - B + B * doc.lengths[position] / average)
                    chunk = doc.ids[position]
                    scores[chunk] = scores.get(chunk, 0.0) + weight * freq * (K1 + 1) / norm
                    mass[chunk] = mass.get(chunk, 0.0) + weight
        ranked = sorted(scores.items(), key=lambda kv: -kv[1])[:n]
        # A word found nowhere in scope weighs as a word found once: the question asks about
        # something these documents never name.
        unseen = len(words) - len(idf)
        whole = sum(idf.values()) + unseen * math.log(1 + (total - 0.5) / 1.5)
        return LexicalHits(ranked, {c: m / whole for c, m in mass.items()})
