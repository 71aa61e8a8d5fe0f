"""KnowledgeBase: files shared into a channel become passages that its questions retrieve.

The engine core calls ingest / search / list_documents / delete_document from the event loop.
An ingest is a bounded job on threads of its own (ingest_queue.py: caps, the line, shutdown) that
the Ingestor does (ingestor.py); searching, listing, deleting and maintenance are here, all
through the VectorStore protocol (vector_store.py), their blocking work in asyncio's default pool,
which no ingest occupies (a question's search never waits behind an upload).
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable

from engine.config import KnowledgeConfig
from engine.errors import ErrorCode, ParleyError
from engine.knowledge.attempts import Attempt
from engine.knowledge.citations import excerpt, is_fragment, sentences
from engine.knowledge.embedder import Embedder, shared_embedder
from engine.knowledge.hybrid import DENSE_CANDIDATES, LEXICAL_CANDIDATES, Candidate, cosines, fuse, ranked
from engine.knowledge.ingesting import IngestJob
from engine.knowledge.ingest_queue import IngestCaps, Ingests
from engine.knowledge.ingestor import Ingestor
from engine.knowledge.lexical import DocumentTerms, LexicalHits, LexicalIndex
from engine.knowledge.names import clean_filename
from engine.knowledge.records import Passage
from engine.knowledge.store import open_store
from engine.knowledge.vector_store import DocumentRecord, Scope, VectorStore
from engine.types import VISIBILITIES, Conversation, DocumentInfo, FileUpload, IngestResult, ProgressCallback

__all__ = ["KnowledgeBase", "clean_filename"]

log = logging.getLogger(__name__)
LOADER_JOIN_S = 60.0  # at close, how long the background embedder load may take to finish

_MAX_SENTENCES = 12  # per passage, for choosing its excerpt
LIVE_TTL_S = 2.0


class KnowledgeBase:
    def __init__(self, config: KnowledgeConfig, data_dir: Path, embedder: Embedder | None = None, *,
                 load_embedder: bool = True):
        self.config = config
        self.data_dir = Path(data_dir)
        self.store: VectorStore = open_store(config, self.data_dir)
        self._embedder = embedder
        self._embedder_lock = threading.Lock()
        self._write_lock = threading.RLock()  # one writer at a time: dedupe, versions, restore
        self._stats_lock = threading.Lock()
        self._searches = 0
        self._search_ms_total = 0.0
        self.lexical = LexicalIndex()
        self._live_cache: dict[tuple[Scope, str], tuple[float, dict[str, int]]] = {}
        self._loader: threading.Thread | None = None
        # Whether the engine is generating now: an ingest then leaves it its cores.
        self.generation_busy: Callable[[], bool] = lambda: False
        self.ingestor = Ingestor(config, self.store, self.lexical, embedder=lambda: self.embedder,
                                 busy=lambda: self.generation_busy(), write_lock=self._write_lock,
                                 on_commit=self._forget_live)
        self.ingests = Ingests(self.ingestor, IngestCaps.from_config(config))
        if load_embedder:
            self.load_embedder_in_background()

    def load_embedder_in_background(self) -> None:
        """Load the embedder now, not at the first question, but on a thread of its own: a restart
        answers plain questions at once (the 90 MB model takes ~4 s); a search waits for it."""
        def load() -> None:
            try:
                self.embedder  # noqa: B018 - loads it
                self.warm()
            except Exception:  # noqa: BLE001 - the first search loads it again, and says why if it fails
                log.warning("the embedder did not load in the background", exc_info=True)

        self._loader = threading.Thread(target=load, name="load-embedder", daemon=True)
        self._loader.start()

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            with self._embedder_lock:
                if self._embedder is None:
                    self._embedder = shared_embedder(self.config.embed_dtype, self.config.embed_batch_size,
                                                     self.config.embed_threads)
        return self._embedder

    def _workspace_wide(self, where: Conversation, override: bool | None) -> bool:
        return override if override is not None else where.workspace in self.config.workspace_scope

    # ---- ingest ------------------------------------------------------------------------------

    async def ingest(self, upload: FileUpload, progress: ProgressCallback | None = None) -> IngestResult:
        """Index `upload` once its turn comes (progress: "queued" with the files ahead, then
        reading, embedding, storing); QUEUE_FULL when too many wait, SHUTTING_DOWN once stopping."""
        return await self.ingests.run(upload, progress)

    async def stop_ingests(self, timeout_s: float) -> int:
        """At shutdown: cancel every ingest, waiting or running, and wait (at most `timeout_s`) for
        the running ones to undo their writes. Returns how many still run."""
        return await self.ingests.stop(timeout_s)

    def active_ingest(self, where: Conversation, filename: str) -> IngestJob | None:
        """The ingest of this file in this channel now in progress, if any."""
        return self.ingestor.active(where, filename)

    # ---- search ------------------------------------------------------------------------------

    async def search(self, where: Conversation, query: str, k: int | None = None, *,
                     workspace_wide: bool | None = None) -> list[Passage]:
        if not query.strip():
            return []
        return await asyncio.to_thread(self.search_sync, where, query, k, self._workspace_wide(where, workspace_wide))

    def search_sync(self, where: Conversation, query: str, k: int | None, workspace_wide: bool) -> list[Passage]:
        started = time.perf_counter()
        k = k or self.config.top_k
        if self._embedder is None and self.store.counts()[1] == 0:
            return []  # no documents at all: nothing to wait for while the embedder loads
        candidates = self.candidates(where, query, workspace_wide)
        passages = [self._passage(c) for c in ranked(candidates, self.config)[:k]]
        elapsed_ms = (time.perf_counter() - started) * 1000
        with self._stats_lock:
            self._searches += 1
            self._search_ms_total += elapsed_ms
        log.debug("knowledge search", extra={"scope": where.session_key, "candidates": len(candidates),
                                              "kept": len(passages), "ms": round(elapsed_ms, 1)})
        return passages

    def candidates(self, where: Conversation, query: str, workspace_wide: bool) -> list[Candidate]:
        """Every candidate chunk of the live documents in scope, best fused first, with the
        figures the relevance decision reads (bench/realdocs.py prints them)."""
        vector = self.embedder.encode_query(query)
        live = self._live(where, workspace_wide)
        if not live:
            return []
        dense = [h for h in self.store.search(vector, Scope.of(where, workspace_wide), DENSE_CANDIDATES)
                 if live.get(h.meta["doc_id"]) == int(h.meta["version"])]
        lexical = self._lexical(query, live)
        if not self.config.hybrid:  # BM25 adds no candidates; its word coverage still weighs the evidence
            lexical = LexicalHits(coverage=lexical.coverage)
        seen = {h.id for h in dense}
        extra: dict[str, tuple[str, dict, float]] = {}
        wanted = [cid for cid, _ in lexical.ranked if cid not in seen]
        if wanted:
            got = self.store.get_chunks(wanted)
            for cid, text, meta, cos in zip(got.ids, got.texts, got.metadatas, cosines(got.embeddings, vector)):
                extra[cid] = (text, meta, cos)
        return fuse(dense, lexical, extra)

    def _lexical(self, query: str, live: dict[str, int]) -> LexicalHits:
        self._load_lexical(live)
        return self.lexical.search(query, live, LEXICAL_CANDIDATES)

    def _load_lexical(self, live: dict[str, int]) -> None:
        """BM25 terms of the live documents not yet held (after a restart, or written by another process)."""
        missing = {d: live[d] for d in self.lexical.missing(live)}
        if missing:
            for doc_id, (ids, texts) in self.store.chunk_texts(missing).items():
                self.lexical.put(doc_id, DocumentTerms.build(missing[doc_id], ids, texts))

    def _live(self, where: Conversation, workspace_wide: bool) -> dict[str, int]:
        """doc_id -> live version of the documents in scope. Read from the registry at most every
        LIVE_TTL_S per scope (a registry read costs ~20 ms at 130 documents); this process's own
        writes clear it at once, another process's show within LIVE_TTL_S."""
        key = (Scope.of(where, workspace_wide), where.visibility)  # a visibility said anew is settled at once
        now = time.monotonic()
        with self._stats_lock:
            cached = self._live_cache.get(key)
        if cached is not None and now - cached[0] < LIVE_TTL_S:
            return cached[1]
        live = {r.doc_id: r.version for r in self._records(where, workspace_wide)}
        with self._stats_lock:
            self._live_cache[key] = (now, live)
        return live

    def _forget_live(self) -> None:
        with self._stats_lock:
            self._live_cache.clear()

    def warm(self) -> None:
        """Hold every live document's BM25 terms, so the first search after a restart does not
        read them (on the thread that loads the embedder)."""
        try:
            self._load_lexical({r.doc_id: r.version for r in self.store.find_documents()})
        except Exception:  # noqa: BLE001 - a search loads what is missing anyway
            log.warning("could not preload the keyword index", exc_info=True)

    @staticmethod
    def _passage(c: Candidate) -> Passage:
        m = c.meta
        return Passage(text=c.text, file=m["file"], page=int(m["page"]) or None, version=int(m["version"]),
                       score=round(c.cosine, 4), channel=m["channel"], doc_id=m["doc_id"], chunk=int(m["chunk"]),
                       uploader=m.get("uploader", ""), uploaded_at=float(m.get("uploaded_at", 0.0)),
                       page_label=str(m.get("label", "") or ""), heading=str(m.get("heading", "") or ""))

    async def quote(self, query: str, passages: list[Passage]) -> list[Passage]:
        """The passages with their excerpts: in each, the sentence closest in meaning to the
        question, which an answer shows as its evidence (a chunk's first sentence is often about
        something else). Apart from search, so that it can run while the answer is written."""
        return await asyncio.to_thread(self.quote_sync, query, passages)

    def quote_sync(self, query: str, passages: list[Passage]) -> list[Passage]:
        split = [sentences(p.text)[:_MAX_SENTENCES] for p in passages]
        flat = [s for parts in split for s in parts]
        if not flat:
            return passages
        vectors = self.embedder.encode([query, *flat])
        scores = vectors[1:] @ vectors[0]
        out: list[Passage] = []
        at = 0
        for passage, parts in zip(passages, split):
            if parts:
                ranked = scores[at:at + len(parts)].copy()
                cut = [is_fragment(parts, i) for i in range(len(parts))]
                if not all(cut):  # a whole sentence is the evidence, unless there is none
                    ranked[cut] = -2.0
                best = int(ranked.argmax())
                passage = dataclasses.replace(passage, excerpt=excerpt(passage.text, start=best))
            out.append(passage)
            at += len(parts)
        return out

    # ---- documents ---------------------------------------------------------------------------

    async def list_documents(self, where: Conversation, *, workspace_wide: bool | None = None) -> list[DocumentInfo]:
        wide = self._workspace_wide(where, workspace_wide)
        return await asyncio.to_thread(self.list_documents_sync, where, wide)

    def list_documents_sync(self, where: Conversation, workspace_wide: bool = False) -> list[DocumentInfo]:
        records = self._records(where, workspace_wide)
        records.sort(key=lambda r: (r.filename.lower(), r.channel))
        return [DocumentInfo(filename=r.filename, version=r.version, pages=r.pages, chunks=r.chunks,
                             uploader=r.uploader, uploaded_at=r.uploaded_at, sha256=r.sha256, channel=r.channel,
                             sections=r.sections, visibility=r.visibility, shared_as=r.shared_as,
                             scanned=r.scanned)
                for r in records]

    async def settle_visibility(self, where: Conversation) -> int:
        """The documents of `where`'s own channel take the visibility `where` says at once (the
        platform's event: a channel made private or public), not at the channel's next use. How
        many changed."""
        return await asyncio.to_thread(self.settle_visibility_sync, where)

    def settle_visibility_sync(self, where: Conversation) -> int:
        records = self.store.documents_in(Scope.own(where))
        return sum(before is not after for before, after in zip(records, self._settle(where, records)))

    def _records(self, where: Conversation, workspace_wide: bool) -> list[DocumentRecord]:
        """The registry entries a conversation may use (Scope), their visibility settled first."""
        return self._settle(where, self.store.documents_in(Scope.of(where, workspace_wide)))

    def _settle(self, where: Conversation, records: list[DocumentRecord]) -> list[DocumentRecord]:
        """Documents migrate here: those of the conversation's own channel whose visibility is not
        what the platform now says (unknown before visibility was recorded, or a channel made
        private or public since) take the platform's word. A conversation whose visibility is not
        known changes nothing, and until a document's is known it serves only its own channel."""
        said = where.visibility
        own = Scope.own(where).channel
        stale = [r for r in records if r.channel == own and r.visibility != said]
        if said == "unknown" or said not in VISIBILITIES or not stale:
            return records
        settled: dict[str, DocumentRecord] = {}
        with self._write_lock:
            for record in stale:
                current = self.store.get_document(record.doc_id)  # as it is now, under the lock
                if current is not None and current.visibility != said:
                    settled[record.doc_id] = self.store.set_visibility(current, said)
                    log.info("document visibility recorded", extra={
                        "file": current.filename, "scope": where.session_key, "was": current.visibility,
                        "now": said})
            self._forget_live()
        return [settled.get(r.doc_id, r) for r in records]

    def find_document_sync(self, where: Conversation, filename: str) -> DocumentRecord | None:
        """The document named `filename` (as clean_filename makes it) among the conversation's own
        (a private thread's, then its channel's): one name, one document (names are unique in a
        channel). Never another channel's, even under the workspace-wide scope."""
        name = clean_filename(filename)
        own = Scope.own(where).channel
        found = [r for r in self._records(where, False) if r.filename == name]
        found.sort(key=lambda r: r.channel != own)
        return found[0] if found else None

    async def find_document(self, where: Conversation, filename: str) -> DocumentRecord | None:
        return await asyncio.to_thread(self.find_document_sync, where, filename)

    def forget_sync(self, record: DocumentRecord) -> int:
        """Delete the document `record` names, if it is still that person's (a record found before
        another's upload took the name after a forget is not theirs: DOCUMENT_NOT_FOUND). An ingest of
        it under way, on this replica or another, finishes first (it holds the document's claim)."""
        doc_id = record.doc_id
        with self._write_lock, Attempt(self.store, self.config.ingest_lease_seconds) as attempt:
            attempt.claim(doc_id, lambda: None)
            current = self.store.get_document(doc_id)
            if current is None or current.uploader != record.uploader:
                raise ParleyError(ErrorCode.DOCUMENT_NOT_FOUND, f"There is no document named {record.filename} here.")
            self.store.unregister(doc_id)  # first: from here on nothing of it is retrieved
            self._forget_live()
            self.lexical.drop(doc_id)
            removed = self.store.delete_document_chunks(doc_id)
        log.info("document deleted", extra={"file": record.filename, "channel": record.channel, "chunks": removed})
        return removed

    async def forget(self, record: DocumentRecord) -> int:
        return await asyncio.to_thread(self.forget_sync, record)

    async def delete_document(self, where: Conversation, filename: str) -> int:
        """Forget the document of that name here (find_document), whoever shared it: the caller checked."""
        return await asyncio.to_thread(self.delete_document_sync, where, filename)

    def delete_document_sync(self, where: Conversation, filename: str) -> int:
        record = self.find_document_sync(where, filename)
        if record is None:
            raise ParleyError(ErrorCode.DOCUMENT_NOT_FOUND,
                              f"There is no document named {clean_filename(filename)} here.")
        return self.forget_sync(record)

    # ---- maintenance -------------------------------------------------------------------------

    def backup(self, target: Path) -> dict:
        from engine.knowledge.backup import backup

        with self._write_lock:
            return backup(self.store, Path(target), embedder_name=self._embedder_name())

    def restore(self, source: Path) -> dict:
        from engine.knowledge.backup import restore

        with self._write_lock:
            self.lexical.clear()
            self._forget_live()
            return restore(self.store, Path(source), embedder_name=self._embedder_name())

    def check(self, repair: bool = True) -> dict:
        from engine.knowledge.backup import check

        with self._write_lock:
            self._forget_live()
            return check(self.store, repair=repair, lease_s=self.config.ingest_lease_seconds)

    def _embedder_name(self) -> str:
        return self._embedder.name if self._embedder is not None else "all-MiniLM-L6-v2"

    def stats(self) -> dict[str, Any]:
        documents, chunks = self.store.counts()
        with self._stats_lock:
            searches = self._searches
            total_ms = self._search_ms_total
        ingests = self.ingestor.count
        return {"documents": documents, "chunks": chunks, "searches": searches,
                "mean_search_ms": round(total_ms / searches, 1) if searches else None,
                "ingests": ingests, "store": self.config.chroma.mode,
                "embedder": (f"{self._embedder.name} on {self._embedder.device} ({self._embedder.dtype})"
                             if self._embedder is not None else "not loaded")}

    def close(self) -> None:
        self.ingests.close()
        # Exiting while torch loads the embedder on that thread aborts the process (a piped question)
        if self._loader is not None:
            self._loader.join(timeout=LOADER_JOIN_S)
        self.store.close()
