"""An ingest from bytes to embedded chunks, and the ingests in progress (which can be cancelled).

The work runs on one of the ingests' own threads (ingest_queue.py): read, split, check the size
against what this machine can embed, embed batch by batch. Between batches it checks its job: a
cancelled job stops there, and since nothing is written before the embedding is done, nothing of
it is kept. A job exists from the moment its file is accepted, so one still waiting for its turn
can be cancelled too (it never starts).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from engine.config import KnowledgeConfig
from engine.errors import ErrorCode, ParleyError
from engine.knowledge import loaders
from engine.knowledge.bounds import ParseLimits
from engine.knowledge.embedder import Embedder
from engine.knowledge.records import ChunkDraft, LoadedDocument
from engine.knowledge.sandbox import read_document
from engine.knowledge.scanned import reading_limits
from engine.knowledge.splitting import split_pages
from engine.knowledge.vector_store import Scope
from engine.types import Conversation

Emit = Callable[[str, int, int, str], None]  # (stage, done, total, unit)
# Until an ingest has measured it, the embedder is assumed to manage this many chunks a second
# (fp32 on one core of the 2-core CPUs measured; bf16 does twice as many).
DEFAULT_CHUNKS_PER_S = 30.0


RESTARTING = "restarting"  # IngestJob.cancel's `why` at shutdown


@dataclass
class IngestJob:
    """A file being indexed (or waiting its turn): who shared it, and a flag an admin, the sharer
    or the shutdown may raise. `cancel` may be called from any thread; `check` raises once it was."""

    scope: str
    filename: str
    uploader: str
    started: float = field(default_factory=time.time)
    cancelled: threading.Event = field(default_factory=threading.Event)
    cancelled_by: str = ""
    why: str = ""  # RESTARTING: Parley is stopping
    _listeners: list[Callable[[], None]] = field(default_factory=list, init=False, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def cancel(self, by: str = "", why: str = "") -> None:
        """Stop this ingest: at its next check if it runs, at once if it waits its turn."""
        with self._lock:
            if self.cancelled.is_set():
                return
            self.cancelled_by = by
            self.why = why
            self.cancelled.set()
            listeners = list(self._listeners)
        for listener in listeners:
            listener()

    def on_cancel(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` when the job is cancelled (at once if it was); returns its removal."""
        with self._lock:
            already = self.cancelled.is_set()
            if not already:
                self._listeners.append(listener)
        if already:
            listener()

        def remove() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return remove

    def check(self) -> None:
        if not self.cancelled.is_set():
            return
        if self.why == RESTARTING:
            raise ParleyError(ErrorCode.SHUTTING_DOWN,
                              f"Indexing {self.filename} was cancelled: Parley is restarting; nothing of it "
                              "was kept. Please share it again in a minute.")
        who = "by an admin" if self.cancelled_by and self.cancelled_by != self.uploader else ""
        raise ParleyError(ErrorCode.CANCELLED,
                          f"Indexing {self.filename} was cancelled{' ' + who if who else ''}; "
                          "nothing of it was kept.")


class IngestJobs:
    """The ingests in progress or waiting their turn, by channel and file name (one at a time per name)."""

    def __init__(self) -> None:
        self._jobs: dict[tuple[str, str], IngestJob] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _scope(where: Conversation) -> str:
        return Scope.own(where).channel_key

    def start(self, where: Conversation, filename: str, uploader: str) -> IngestJob:
        key = (self._scope(where), filename)
        with self._lock:
            if key in self._jobs:
                raise ParleyError(ErrorCode.INVALID_REQUEST,
                                  f"{filename} is already being indexed here; wait for it or cancel it first.")
            job = self._jobs[key] = IngestJob(scope=key[0], filename=filename, uploader=uploader)
        return job

    def finish(self, job: IngestJob) -> None:
        with self._lock:
            if self._jobs.get((job.scope, job.filename)) is job:
                del self._jobs[(job.scope, job.filename)]

    def find(self, where: Conversation, filename: str) -> IngestJob | None:
        with self._lock:
            return self._jobs.get((self._scope(where), filename))

    def in_scope(self, where: Conversation) -> list[IngestJob]:
        scope = self._scope(where)
        with self._lock:
            return [job for (s, _), job in self._jobs.items() if s == scope]

    def all(self) -> list[IngestJob]:
        """Every ingest running or waiting its turn (the shutdown cancels them)."""
        with self._lock:
            return list(self._jobs.values())


@dataclass(frozen=True)
class Prepared:
    kind: str
    document: LoadedDocument
    drafts: list[ChunkDraft]
    vectors: np.ndarray


def chunk_limit(config: KnowledgeConfig, embedder: Embedder) -> tuple[int, float]:
    """The most chunks one document may have, and the embedding speed it was computed from."""
    rate = embedder.chunks_per_s or DEFAULT_CHUNKS_PER_S
    return max(100, int(rate * config.max_ingest_minutes * 60)), rate


def prepare(config: KnowledgeConfig, embedder: Embedder, name: str, data: bytes, emit: Emit,
            job: IngestJob, busy: Callable[[], bool]) -> Prepared:
    """Read, split and embed a file (on a worker thread); raises ParleyError for what a user
    can fix, CANCELLED when the job is cancelled."""
    limits = ParseLimits.from_config(config)
    kind = loaders.sniff(name, data, limits)
    # read in a parse worker process, within the limits (sandbox.py); a cancel stops it at once
    document = read_document(kind, name, data, reading_limits(kind, limits), check=job.check,
                             on_page=lambda done, total: emit("reading", done, total, "pages"))
    job.check()
    chunk_tokens = min(config.chunk_tokens, embedder.max_tokens - 2)  # [CLS] and [SEP]
    overlap = min(config.chunk_overlap_tokens, chunk_tokens // 2)
    drafts = split_pages(document.pages, embedder.count_tokens, chunk_tokens, overlap, kind)
    if not drafts:
        raise ParleyError(ErrorCode.FILE_EMPTY, f"{name} has no text in it.")
    limit, rate = chunk_limit(config, embedder)
    if len(drafts) > limit:
        raise ParleyError(ErrorCode.FILE_TOO_LARGE,
                          f"{name} would make {len(drafts):,} passages; this server embeds about {rate:.0f} a "
                          f"second, so one document may have at most {limit:,} ({config.max_ingest_minutes:g} "
                          "minutes of work). Please split it into smaller files.")
    emit("embedding", 0, len(drafts), "chunks")
    vectors = embedder.encode([d.embedded_text for d in drafts], busy=busy, check=job.check,
                              progress=lambda done, total: emit("embedding", done, total, "chunks"))
    job.check()
    return Prepared(kind, document, drafts, vectors)
