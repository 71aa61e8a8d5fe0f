"""Hybrid search: the embedding's nearest chunks and BM25's best, fused by rank, then a
relevance decision that says "nothing here" when nothing is.

Candidates are gathered by reciprocal-rank fusion (Cormack et al.: 1/(60 + rank) summed over
the two lists, so neither score's scale matters). Each is then scored for evidence:

    evidence = (cosine - the mean cosine of the question's 30 nearest chunks) + W * coverage

where coverage is the share of the question's IDF-weighted words the chunk holds (in a store of
fewer than 30 chunks, the missing neighbours count as unrelated text). The first term is the
question's own distribution: on a real manual some chunk always lies within 0.3
of any question about the field (an unanswerable one scored 0.66), so no cosine constant tells
an answer from a neighbour, but an answer stands out from the question's other neighbours. The
second is what the embedding blurs: the question's rare words (a command, a field, a number).
A passage is kept when its evidence reaches `min_evidence` (and its cosine `min_relevance`), and
the kept ones are ordered by evidence. Calibrated on bench/realdocs.py (README has the figures).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.config import KnowledgeConfig
from engine.knowledge.lexical import LexicalHits
from engine.knowledge.vector_store import Hit

RRF_K = 60
DENSE_CANDIDATES = 30  # nearest chunks by embedding considered per question
LEXICAL_CANDIDATES = 30  # best chunks by BM25
# all-MiniLM-L6-v2's cosine between unrelated texts: 0.0-0.2 (tests/docgen.py's unrelated questions
# against its documents averaged 0.1).
UNRELATED_COSINE = 0.1


@dataclass(frozen=True)
class Candidate:
    id: str
    text: str
    meta: dict
    cosine: float
    coverage: float  # the share of the question's IDF weight among this chunk's words
    fused: float  # reciprocal-rank fusion score
    dense_rank: int | None
    lexical_rank: int | None
    margin: float = 0.0  # cosine minus the mean cosine of the question's nearest chunks

    def evidence(self, word_weight: float) -> float:
        return self.margin + word_weight * self.coverage


def fuse(dense: list[Hit], lexical: LexicalHits,
         extra: dict[str, tuple[str, dict, float]]) -> list[Candidate]:
    """Candidates from both lists, best fused first. `extra` holds text, metadata and cosine of
    chunks only BM25 found (fetched from the store); `dense` is the question's nearest chunks,
    whose mean cosine is the level each candidate's margin is measured from."""
    # A store smaller than DENSE_CANDIDATES chunks: the missing neighbours count as unrelated text.
    level = (sum(h.cosine for h in dense) + (DENSE_CANDIDATES - len(dense)) * UNRELATED_COSINE) / DENSE_CANDIDATES
    dense_rank = {cid: rank for rank, (cid, _, _, _) in enumerate(dense)}
    lexical_rank = {cid: rank for rank, (cid, _) in enumerate(lexical.ranked)}
    known = {cid: (text, meta, cos) for cid, text, meta, cos in dense}
    known.update(extra)
    out = []
    for cid in dict.fromkeys([*dense_rank, *lexical_rank]):
        if cid not in known:
            continue  # a stale id BM25 still held: the store no longer has it
        text, meta, cosine = known[cid]
        d, lx = dense_rank.get(cid), lexical_rank.get(cid)
        fused = (1 / (RRF_K + d) if d is not None else 0.0) + (1 / (RRF_K + lx) if lx is not None else 0.0)
        out.append(Candidate(cid, text, meta, cosine, lexical.coverage.get(cid, 0.0), fused, d, lx,
                             margin=cosine - level))
    out.sort(key=lambda c: -c.fused)
    return out


def cosines(vectors: list | np.ndarray, query: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(vectors, dtype=np.float32) @ query] if len(vectors) else []


def relevant(candidate: Candidate, config: KnowledgeConfig) -> bool:
    """Whether a passage answers to the question (see the module's doc)."""
    return (candidate.cosine >= config.min_relevance
            and candidate.evidence(config.word_weight) >= config.min_evidence)


def ranked(candidates: list[Candidate], config: KnowledgeConfig) -> list[Candidate]:
    """The relevant candidates, most evidence first."""
    kept = [c for c in candidates if relevant(c, config)]
    if config.order == "evidence":
        kept.sort(key=lambda c: -c.evidence(config.word_weight))
    return kept
