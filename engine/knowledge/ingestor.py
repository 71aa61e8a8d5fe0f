"""An upload's way into the store: checked, deduplicated, prepared (ingesting.prepare: read, split,
embed), then stored as the document's next version and registered.

Atomic ingest: a file's chunks are written under a version that no search returns until the
registry names it live; on any failure they are deleted again, and a crash in between leaves
only unregistered chunks of a dead attempt (attempts.py), which check() removes. Replicas
sharing a Chroma server take turns per document through its claim, and register by
compare-and-set. The superseded version's chunks go once the new one is live.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import inspect
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from engine.config import KnowledgeConfig
from engine.errors import ErrorCode, ParleyError, file_too_large
from engine.knowledge.attempts import Attempt, dead_leftovers
from engine.knowledge.embedder import Embedder
from engine.knowledge.ingesting import Emit, IngestJob, IngestJobs, Prepared, prepare
from engine.knowledge.lexical import DocumentTerms, LexicalIndex
from engine.knowledge.names import clean_filename, numbered_name
from engine.knowledge.vector_store import DocumentRecord, Scope, VectorStore, chunk_id, document_id
from engine.types import VISIBILITIES, Conversation, FileUpload, IngestProgress, IngestResult, ProgressCallback

__all__ = ["Ingestor", "ProgressRelay", "clean_filename", "place"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placement:
    """Which document an upload becomes: its id and name, the name it was shared under when that
    differs, and its live version before this one (None: a new document)."""

    doc_id: str
    filename: str
    shared_as: str
    previous: DocumentRecord | None


def place(records: list[DocumentRecord], scope: Scope, name: str, uploader: str) -> Placement:
    """An upload of `name` by `uploader` among a channel's documents (`records`): the next version of
    the uploader's own document of that name (as it is named, or as they shared it); else a new
    document, under its name when no document has it, else numbered beside the other one
    ("report (2).pdf"). Nobody's upload ever becomes a version of somebody else's document."""
    own = [r for r in records if r.uploader == uploader]
    mine = next((r for r in own if r.filename == name), None) or next((r for r in own if r.shared_as == name), None)
    if mine is not None:
        return Placement(mine.doc_id, mine.filename, mine.shared_as, mine)
    taken = {r.filename for r in records}
    if name not in taken:
        return Placement(document_id(scope, name), name, "", None)
    numbered = numbered_name(name, taken)
    return Placement(document_id(scope, numbered), numbered, name, None)


def visibility_of(said: str, previous: DocumentRecord | None) -> str:
    """What a new version records: the visibility its conversation `said`, else what was known before."""
    if said in VISIBILITIES and said != "unknown":
        return said
    return previous.visibility if previous is not None else "unknown"


class ProgressRelay:
    """An ingest's progress, emitted from any thread (its own, the parse reader's), delivered to
    `progress` on the event loop: the callback may touch adapter state. What the callback returns
    to await is awaited by `settle`, before the ingest's result is handed back."""

    def __init__(self, progress: ProgressCallback | None):
        self._progress = progress
        self._loop = asyncio.get_running_loop()
        self._pending: set[asyncio.Future] = set()

    def emit(self, stage: str, done: int, total: int, unit: str) -> None:
        if self._progress is None:
            return
        event = IngestProgress(stage=stage, done=done, total=total, unit=unit)
        try:
            self._loop.call_soon_threadsafe(self._deliver, event)
        except RuntimeError:  # the loop has closed (an ingest outliving the process's shutdown)
            pass

    def _deliver(self, event: IngestProgress) -> None:
        try:
            result = self._progress(event) if self._progress is not None else None
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)
        except Exception:  # noqa: BLE001 - a failing progress display must not fail the ingest
            log.warning("ingest progress callback failed", exc_info=True)

    async def settle(self) -> None:
        if self._pending:
            results = await asyncio.gather(*self._pending, return_exceptions=True)
            for r in results:
                if isinstance(r, Exception):
                    log.warning("ingest progress callback failed", exc_info=r)


class Ingestor:
    """Ingests uploads (on the ingests' threads: ingest_queue.py), one writer at a time under `write_lock`.

    `on_commit` runs once a version is live (the searcher forgets the live versions it holds);
    the new version's BM25 terms go into `lexical` at once.
    """

    def __init__(self, config: KnowledgeConfig, store: VectorStore, lexical: LexicalIndex, *,
                 embedder: Callable[[], Embedder], busy: Callable[[], bool], write_lock: threading.RLock,
                 on_commit: Callable[[], None]):
        self.config = config
        self.store = store
        self.lexical = lexical
        self.jobs = IngestJobs()
        self._embedder = embedder
        self._busy = busy
        self._write_lock = write_lock
        self._on_commit = on_commit
        self._count_lock = threading.Lock()
        self._count = 0

    @property
    def count(self) -> int:
        """Files ingested by this process (duplicates not counted)."""
        with self._count_lock:
            return self._count

    def active(self, where: Conversation, filename: str) -> IngestJob | None:
        """The ingest of this file in this channel now in progress, if any."""
        return self.jobs.find(where, clean_filename(filename))

    def accept(self, upload: FileUpload) -> IngestJob:
        """An upload's job, before it waits its turn: refused at once if too large (on the event
        loop: nothing here reads the data), else registered, so that it can be cancelled from now."""
        name = clean_filename(upload.filename)
        if len(upload.data) > self.config.max_file_mb * 2**20:
            raise file_too_large(name, len(upload.data), self.config.max_file_mb)
        return self.jobs.start(upload.where, name, upload.user.id)

    def run(self, upload: FileUpload, job: IngestJob, emit: Emit) -> IngestResult:
        """Index `upload` (blocking): its job was accepted and its turn has come. The caller ends the job."""
        started = time.perf_counter()
        name = job.filename
        data = upload.data
        job.check()
        if not data.strip():
            raise ParleyError(ErrorCode.FILE_EMPTY, f"{name} is empty.")
        sha = hashlib.sha256(data).hexdigest()
        scope = Scope.own(upload.where)
        duplicate = self._find_duplicate(scope, sha)
        if duplicate is not None:
            return duplicate
        prepared = prepare(self.config, self._embedder(), name, data, emit, job, self._busy)
        document = prepared.document
        # doc_id, filename, shared_as and visibility are settled at the commit (_store)
        record = DocumentRecord(
            doc_id="", platform=scope.platform, workspace=scope.workspace, channel=scope.channel,
            filename=name, version=0, kind=prepared.kind, pages=document.page_count,
            chunks=len(prepared.drafts), uploader=upload.user.id, uploaded_at=float(upload.uploaded_at),
            sha256=sha, sections=document.sections, visibility=upload.where.visibility, scanned=document.scanned)
        result = self._store(record, prepared, emit, job)
        if not result.duplicate:
            with self._count_lock:
                self._count += 1
            log.info("file ingested", extra={"file": name, "kind": prepared.kind, "pages": document.page_count,
                                             "sections": document.sections, "chunks": len(prepared.drafts),
                                             "version": result.version,
                                             "seconds": round(time.perf_counter() - started, 2)})
        return result

    def _store(self, draft: DocumentRecord, prepared: Prepared, emit: Emit, job: IngestJob) -> IngestResult:
        """Store a document's chunks as its next version, then register it: the commit point. Which
        document it is (place) is decided here, holding its claim, against the registry as it is."""
        with self._write_lock, Attempt(self.store, self.config.ingest_lease_seconds) as attempt:
            placed = self._claim(draft, attempt, job)
            if isinstance(placed, IngestResult):
                return placed
            return self._commit(draft, prepared, placed, attempt, emit, job)

    def _claim(self, draft: DocumentRecord, attempt: Attempt, job: IngestJob) -> Placement | IngestResult:
        """The upload's placement, its document claimed by `attempt`; or the duplicate it turned out
        to be. Another replica's attempt at the same document is waited for, then placed after."""
        while True:
            duplicate = self._find_duplicate(draft.scope, draft.sha256)  # another upload of it may have won the race
            if duplicate is not None:
                return duplicate
            placed = place(self.store.documents_in(draft.scope), draft.scope, draft.filename, draft.uploader)
            attempt.claim(placed.doc_id, job.check)
            # Holding the claim, the registry cannot change under us: place again as it is now.
            again = place(self.store.documents_in(draft.scope), draft.scope, draft.filename, draft.uploader)
            if again == placed and self._find_duplicate(draft.scope, draft.sha256) is None:
                return placed
            attempt.release()

    def _commit(self, draft: DocumentRecord, prepared: Prepared, placed: Placement, attempt: Attempt,
                emit: Emit, job: IngestJob) -> IngestResult:
        drafts = prepared.drafts
        name = placed.filename
        doc_id = placed.doc_id
        previous = placed.previous
        live = previous.version if previous else 0
        self.store.delete_chunk_ids(dead_leftovers(self.store, doc_id, live, attempt.lease_s))
        version = max([live, *(v for _, v, _ in self.store.chunk_attempts(doc_id))]) + 1
        visibility = visibility_of(draft.visibility, previous)
        record = dataclasses.replace(draft, doc_id=doc_id, filename=name, shared_as=placed.shared_as,
                                     version=version, visibility=visibility)
        base = {"platform": draft.platform, "workspace": draft.workspace, "channel": draft.channel,
                "file": name, "uploader": draft.uploader, "uploaded_at": draft.uploaded_at,
                "sha256": draft.sha256, "version": version, "doc_id": doc_id, "kind": draft.kind,
                "visibility": visibility, "attempt": attempt.id}
        metadatas = [{**base, "page": d.page or 0, "chunk": d.index, "label": d.label, "heading": d.heading}
                     for d in drafts]
        ids = [chunk_id(doc_id, version, d.index, attempt.id) for d in drafts]
        try:
            emit("storing", 0, len(ids), "chunks")
            self.store.add_chunks(ids, prepared.vectors, [d.text for d in drafts], metadatas)
            job.check()  # a cancel that came while storing: undone below, never registered
            if not self.store.register_claimed(record, attempt.id, live):  # the commit point
                raise ParleyError(ErrorCode.INTERNAL, f"Another upload of {name} was stored at the same moment, "
                                                      "so this one was not kept. Please share it again.")
            self._on_commit()
            self.lexical.put(doc_id, DocumentTerms.build(version, ids, [d.embedded_text for d in drafts]))
        except BaseException as exc:
            self._undo(doc_id, attempt.id, name)
            if isinstance(exc, ParleyError):
                raise
            log.error("ingest failed while storing", extra={"file": name}, exc_info=exc)
            raise ParleyError(ErrorCode.INTERNAL, f"{name} could not be stored; nothing of it was kept.") from exc
        emit("storing", len(ids), len(ids), "chunks")
        if previous is not None:
            try:
                self.store.delete_older_versions(doc_id, keep=version)
            except Exception:  # noqa: BLE001 - superseded chunks are filtered out; check() removes them
                log.warning("old version not deleted", extra={"file": name}, exc_info=True)
        return IngestResult(filename=name, pages=draft.pages, chunks=len(ids), version=version,
                            sections=draft.sections, shared_as=placed.shared_as, scanned=draft.scanned)

    def _find_duplicate(self, scope: Scope, sha: str) -> IngestResult | None:
        doc = self.store.find_by_sha(scope, sha)
        if doc is None:
            return None
        return IngestResult(filename=doc.filename, pages=doc.pages, chunks=doc.chunks, version=doc.version,
                            duplicate=True, sections=doc.sections, scanned=doc.scanned)

    def _undo(self, doc_id: str, attempt: str, name: str) -> None:
        try:
            self.store.delete_attempt(doc_id, attempt)
        except Exception:  # noqa: BLE001 - unregistered chunks are never retrieved; check() removes them
            log.error("could not remove a failed ingest's chunks", extra={"file": name}, exc_info=True)
