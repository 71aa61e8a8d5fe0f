"""Ingest attempts on a store that several Parley processes share (a Chroma server).

Each attempt at storing an upload has its own id, stamped on every chunk it writes, and a
heartbeat record that a thread of its own refreshes every quarter of the lease while it runs.
Before it writes, it claims its document (an atomic insert-if-absent in the store): one attempt
per document writes at a time, on whichever replica; another waits its turn, then places its
upload against the registry as it is then (the next version, a duplicate, or a numbered name:
what one process does with two uploads in a row). An attempt whose heartbeat is older than the
lease is dead (its process was killed): its claim may be released and its chunks removed; a live
attempt's never are.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Callable

from engine.knowledge.vector_store import VectorStore

log = logging.getLogger(__name__)

CLAIM_POLL_S = 0.2  # how often a waiting attempt looks at the claim again


def live_attempts(store: VectorStore, lease_s: float) -> set[str]:
    """The attempts that beat within the lease."""
    now = time.time()
    return {attempt for attempt, beat in store.attempt_beats().items() if now - beat <= lease_s}


class Attempt:
    """One ingest attempt: its id, its heartbeat while in the `with` block, the claim it holds."""

    def __init__(self, store: VectorStore, lease_s: float):
        self.id = uuid.uuid4().hex
        self.store = store
        self.lease_s = lease_s
        self.doc_id = ""  # the document it claims (or last claimed)
        self.held = ""  # the document whose claim it holds now
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Attempt":
        self.store.beat(self.id, "")
        self._thread = threading.Thread(target=self._beat, name=f"attempt-{self.id[:8]}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self.release()
            self.store.end_attempt(self.id)
        except Exception:  # noqa: BLE001 - a record left behind goes stale and is cleaned up
            log.warning("ingest attempt not ended", extra={"attempt": self.id}, exc_info=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            try:
                self.store.beat(self.id, self.doc_id)
            except Exception:  # noqa: BLE001 - the next beat tries again; the lease allows for some
                log.warning("ingest heartbeat failed", extra={"attempt": self.id}, exc_info=True)

    def try_claim(self, doc_id: str) -> bool:
        """Claim `doc_id` if nobody alive holds it (a dead attempt's claim is released first)."""
        self.doc_id = doc_id
        for _ in range(3):
            holder = self.store.claim(doc_id, self.id)
            if holder == self.id:
                self.held = doc_id
                return True
            if holder and holder in live_attempts(self.store, self.lease_s):
                return False
            if holder:
                log.warning("dead ingest attempt's claim released", extra={"attempt": holder, "doc_id": doc_id})
                self.store.release(doc_id, holder)
        return False

    def claim(self, doc_id: str, waiting: Callable[[], None]) -> None:
        """Claim `doc_id`, waiting while another live attempt holds it (`waiting` raises to give up)."""
        while not self.try_claim(doc_id):
            waiting()
            time.sleep(CLAIM_POLL_S)

    def release(self) -> None:
        if self.held:
            self.store.release(self.held, self.id)
            self.held = ""


def dead_leftovers(store: VectorStore, doc_id: str, live_version: int, lease_s: float) -> list[str]:
    """Ids of a document's chunks left by dead attempts: of no live attempt, not the live version."""
    alive = live_attempts(store, lease_s)
    return [cid for cid, version, attempt in store.chunk_attempts(doc_id)
            if version != live_version and attempt not in alive]
