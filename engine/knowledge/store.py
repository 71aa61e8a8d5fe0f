"""ChromaStore: the VectorStore (vector_store.py) in Chroma, a collection of chunks and a small
collection registering live documents.

Both collections live in the same Chroma (embedded PersistentClient or a server), so several
Parley processes sharing one Chroma server see the same documents. A third collection holds the
ingest attempts' heartbeats and the per-document claims (attempts.py): Chroma ignores an `add`
of an id it holds, so adding a claim and reading it back is an atomic insert-if-absent, and a
delete by id and `where` removes a claim only while the same attempt holds it. Chroma's client,
its collections and its `where` filters stay in this module.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from engine.config import KnowledgeConfig
from engine.knowledge.vector_store import ChunkPage, DocumentRecord, Hit, Scope

log = logging.getLogger(__name__)

CHUNKS = "parley_chunks"
DOCUMENTS = "parley_documents"
ATTEMPTS = "parley_attempts"
_REGISTRY_VECTOR = [1.0]  # registry entries are looked up by id and metadata, never by vector
PAGE_SIZE = 2000
UNFILTERED_FACTOR = 3  # see ChromaStore._nearest


SCOPE_KEYS = ("scope", "wscope", "pscope")


def scope_keys(platform: str, workspace: str, channel: str, visibility: str = "unknown") -> dict[str, str]:
    """The scope keys of an entry of this channel (see Scope.keys for why entries carry them)."""
    return Scope(platform, workspace, channel).keys(visibility)


def scope_where(scope: Scope) -> dict:
    """The Chroma filter for a scope: the equality of each of its parts, or'ed."""
    parts = [{key: value} for key, value in scope.parts()]
    return parts[0] if len(parts) == 1 else {"$or": parts}


def open_client(config: KnowledgeConfig, data_dir: Path):
    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False)
    if config.chroma.mode == "http":
        return chromadb.HttpClient(host=config.chroma.host, port=config.chroma.port, settings=settings)
    path = Path(data_dir) / "chroma"
    path.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(path), settings=settings)


def open_store(config: KnowledgeConfig, data_dir: Path) -> "ChromaStore":
    return ChromaStore(open_client(config, data_dir))


class ChromaStore:
    """The VectorStore in Chroma."""

    def __init__(self, client, *, chunks_name: str = CHUNKS, documents_name: str = DOCUMENTS):
        self._client = client
        self._chunks_name = chunks_name
        self._documents_name = documents_name
        self.chunks = self._collection(chunks_name, cosine=True)
        self.documents = self._collection(documents_name, cosine=False)
        self.attempts = self._collection(ATTEMPTS, cosine=False)
        self._add_scope_keys()

    def _add_scope_keys(self) -> None:
        """Give entries stored before scope keys existed their keys (once, on open). An entry from
        before visibility was recorded gets "unknown": its document serves only its own channel
        until a conversation there says who can read it (KnowledgeBase settles it)."""
        for collection in (self.documents, self.chunks):
            first = collection.get(limit=1, include=["metadatas"])["metadatas"]
            if not first or all(key in first[0] for key in SCOPE_KEYS):
                continue
            offset = 0
            while True:
                got = collection.get(include=["metadatas"], limit=PAGE_SIZE, offset=offset)
                if not got["ids"]:
                    break
                collection.update(ids=got["ids"], metadatas=[_with_scope_keys(m) for m in got["metadatas"]])
                offset += len(got["ids"])
            log.info("knowledge store: scope keys added", extra={"collection": collection.name, "entries": offset})

    def _collection(self, name: str, *, cosine: bool):
        configuration = {"hnsw": {"space": "cosine"}} if cosine else None
        return self._client.get_or_create_collection(name, configuration=configuration, embedding_function=None)

    def _reopen(self) -> None:
        self.chunks = self._collection(self._chunks_name, cosine=True)
        self.documents = self._collection(self._documents_name, cosine=False)

    # ---- registry ----------------------------------------------------------------------------

    def get_document(self, doc_id: str) -> DocumentRecord | None:
        got = self.documents.get(ids=[doc_id], include=["metadatas"])
        return DocumentRecord.from_metadata(got["ids"][0], got["metadatas"][0]) if got["ids"] else None

    def find_documents(self) -> list[DocumentRecord]:
        return self._documents_where(None)

    def _documents_where(self, where: dict | None) -> list[DocumentRecord]:
        got = self.documents.get(where=where, include=["metadatas"])
        return [DocumentRecord.from_metadata(i, m) for i, m in zip(got["ids"], got["metadatas"])]

    def documents_in(self, scope: Scope) -> list[DocumentRecord]:
        """The live documents of a channel, or of every channel of its workspace."""
        return self._documents_where(scope_where(scope))

    def find_by_sha(self, scope: Scope, sha256: str) -> DocumentRecord | None:
        """A live document of this channel with exactly this content, if any."""
        found = self._documents_where({"$and": [scope_where(scope), {"sha256": sha256}]})
        return found[0] if found else None

    def register(self, record: DocumentRecord) -> None:
        self.documents.upsert(ids=[record.doc_id], embeddings=[_REGISTRY_VECTOR], metadatas=[record.metadata()],
                              documents=[record.filename])

    def unregister(self, doc_id: str) -> None:
        self.documents.delete(ids=[doc_id])

    def set_visibility(self, record: DocumentRecord, visibility: str) -> DocumentRecord:
        """The chunks first, then the entry: a search reads the entry's scope keys (documents_in)
        before it trusts a chunk's, so an entry still saying "private" keeps the document out."""
        ids = self.chunk_ids(record.doc_id)
        step = self._batch_size()
        for start in range(0, len(ids), step):
            got = self.chunks.get(ids=ids[start:start + step], include=["metadatas"])
            self.chunks.update(ids=got["ids"], metadatas=[_with_scope_keys({**m, "visibility": visibility})
                                                           for m in got["metadatas"]])
        updated = dataclasses.replace(record, visibility=visibility)
        self.register(updated)
        return updated

    # ---- ingest attempts: heartbeats and per-document claims (attempts.py) ----------------------

    def beat(self, attempt: str, doc_id: str) -> None:
        """The attempt is alive now (wall clock: the replicas' clocks are kept in step by NTP)."""
        self.attempts.upsert(ids=[f"attempt-{attempt}"], embeddings=[_REGISTRY_VECTOR],
                             metadatas=[{"kind": "attempt", "doc_id": doc_id, "beat": time.time()}])

    def end_attempt(self, attempt: str) -> None:
        self.attempts.delete(ids=[f"attempt-{attempt}"])

    def attempt_beats(self) -> dict[str, float]:
        """attempt id -> when it last beat, of every attempt record."""
        got = self.attempts.get(where={"kind": "attempt"}, include=["metadatas"])
        return {cid.removeprefix("attempt-"): float(m["beat"]) for cid, m in zip(got["ids"], got["metadatas"])}

    def claim(self, doc_id: str, attempt: str) -> str:
        """Claim the document for `attempt` unless another holds it; returns the holder ("" if none now)."""
        key = f"claim-{doc_id}"
        self.attempts.add(ids=[key], embeddings=[_REGISTRY_VECTOR],
                          metadatas=[{"kind": "claim", "doc_id": doc_id, "attempt": attempt}])
        got = self.attempts.get(ids=[key], include=["metadatas"])
        return str(got["metadatas"][0]["attempt"]) if got["ids"] else ""

    def release(self, doc_id: str, attempt: str) -> None:
        """Remove the document's claim if `attempt` (still) holds it."""
        self.attempts.delete(ids=[f"claim-{doc_id}"], where={"attempt": attempt})

    def claims(self) -> dict[str, str]:
        """doc_id -> the attempt holding its claim."""
        got = self.attempts.get(where={"kind": "claim"}, include=["metadatas"])
        return {str(m["doc_id"]): str(m["attempt"]) for m in got["metadatas"]}

    def register_claimed(self, record: DocumentRecord, attempt: str, expected: int) -> bool:
        """Register `record` only if `attempt` holds the document's claim and its live version is
        still `expected` (0: none): the compare-and-set an ingest commits with."""
        if self.claims_of(record.doc_id) != attempt:
            return False
        current = self.get_document(record.doc_id)
        if (current.version if current is not None else 0) != expected:
            return False
        self.register(record)
        return True

    def claims_of(self, doc_id: str) -> str:
        got = self.attempts.get(ids=[f"claim-{doc_id}"], include=["metadatas"])
        return str(got["metadatas"][0]["attempt"]) if got["ids"] else ""

    # ---- chunks ------------------------------------------------------------------------------

    def add_chunks(self, ids: list[str], embeddings: np.ndarray, texts: list[str],
                   metadatas: list[dict[str, Any]]) -> None:
        metadatas = [_with_scope_keys(m) for m in metadatas]
        step = self._batch_size()
        for start in range(0, len(ids), step):
            end = start + step
            self.chunks.add(ids=ids[start:end], embeddings=embeddings[start:end], documents=texts[start:end],
                            metadatas=metadatas[start:end])

    def _batch_size(self) -> int:
        return max(1, min(PAGE_SIZE, self._client.get_max_batch_size()))

    def chunk_ids(self, doc_id: str) -> list[str]:
        return self._chunk_ids_where({"doc_id": doc_id})

    def _chunk_ids_where(self, where: dict) -> list[str]:
        return self.chunks.get(where=where, include=[])["ids"]

    def _delete_where(self, where: dict) -> int:
        ids = self._chunk_ids_where(where)
        self.delete_chunk_ids(ids)
        return len(ids)

    def delete_attempt(self, doc_id: str, attempt: str) -> int:
        """The chunks one ingest attempt wrote (never another attempt's, at any version)."""
        return self._delete_where({"$and": [{"doc_id": doc_id}, {"attempt": attempt}]})

    def delete_older_versions(self, doc_id: str, keep: int) -> int:
        """The chunks of the versions of a document before `keep` (the superseded ones)."""
        return self._delete_where({"$and": [{"doc_id": doc_id}, {"version": {"$lt": keep}}]})

    def chunk_attempts(self, doc_id: str) -> list[tuple[str, int, str]]:
        """(chunk id, version, attempt id or "" for chunks from before attempts) of a document's chunks."""
        got = self.chunks.get(where={"doc_id": doc_id}, include=["metadatas"])
        return [(cid, int(m.get("version", 0)), str(m.get("attempt", "")))
                for cid, m in zip(got["ids"], got["metadatas"])]

    def delete_document_chunks(self, doc_id: str) -> int:
        return self._delete_where({"doc_id": doc_id})

    def delete_chunk_ids(self, ids: list[str]) -> None:
        step = self._batch_size()
        for start in range(0, len(ids), step):
            self.chunks.delete(ids=ids[start:start + step])

    def search(self, vector: np.ndarray, scope: Scope, n: int) -> list[Hit]:
        """The `n` nearest chunks in a scope, best first: each part's nearest, merged (a chunk of
        the conversation's own public channel is in two parts)."""
        found: dict[str, Hit] = {}
        for key, value in scope.parts(chunks=True):
            for hit in self._nearest(vector, {key: value}, n):
                found.setdefault(hit.id, hit)
        return sorted(found.values(), key=lambda h: h.cosine, reverse=True)[:n]

    def _nearest(self, vector: np.ndarray, where: dict, n: int) -> list[Hit]:
        """The `n` nearest chunks matching the one-key filter `where`, best first.

        First without the filter, for UNFILTERED_FACTOR * n results: when the scope holds much of
        the store, n of them are in it, and they are its n nearest. Chroma pays for a filter by
        the chunks it lets through: at 10,000 chunks, ~40 ms when all pass, ~9 ms for one channel
        of 20, ~4 ms for the unfiltered query. So a broad scope (a workspace, or the one channel
        of a small team) takes ~5 ms instead of ~40, and a narrow one ~4 ms more than it would.
        """
        [(key, value)] = where.items()
        hits = [h for h in self._query(vector, None, n * UNFILTERED_FACTOR) if h.meta.get(key) == value]
        if len(hits) >= n:
            return hits[:n]
        return self._query(vector, where, n)

    def _query(self, vector: np.ndarray, where: dict | None, n: int) -> list[Hit]:
        got = self.chunks.query(query_embeddings=[vector], n_results=n, where=where,
                                include=["documents", "metadatas", "distances"])
        return [Hit(i, t, m, 1.0 - float(d)) for i, t, m, d in
                zip(got["ids"][0], got["documents"][0], got["metadatas"][0], got["distances"][0])]

    def get_chunks(self, ids: list[str]) -> ChunkPage:
        """These chunks with texts and embeddings, in the order asked (missing ones left out)."""
        got = self.chunks.get(ids=ids, include=["documents", "metadatas", "embeddings"])
        at = {cid: i for i, cid in enumerate(got["ids"])}
        order = [at[cid] for cid in ids if cid in at]
        embeddings = got["embeddings"] if got["embeddings"] is not None else []
        return ChunkPage(ids=[got["ids"][i] for i in order], metadatas=[got["metadatas"][i] for i in order],
                         texts=[got["documents"][i] for i in order], embeddings=[embeddings[i] for i in order])

    def chunk_texts(self, versions: dict[str, int]) -> dict[str, tuple[list[str], list[str]]]:
        """doc_id -> (ids, indexed texts: heading, then text) of these document versions' chunks,
        in chunk order."""
        found: dict[str, list[tuple[int, str, str]]] = {d: [] for d in versions}
        # A filter of many ids costs Chroma more than reading everything (7 s against ~1 s at
        # 10,000 chunks): a few documents by id, many by one pass over the collection.
        where = {"doc_id": next(iter(versions))} if len(versions) == 1 else \
            {"doc_id": {"$in": list(versions)}} if len(versions) <= 8 else None
        for got in self._pages(["documents", "metadatas"], where=where):
            for cid, text, meta in zip(got["ids"], got["documents"], got["metadatas"]):
                if versions.get(meta["doc_id"]) != int(meta["version"]):
                    continue  # another document, or a superseded or unfinished version
                heading = meta.get("heading") or ""
                found[meta["doc_id"]].append((int(meta["chunk"]), cid, f"{heading}\n{text}" if heading else text))
        out = {}
        for doc_id, rows in found.items():
            rows.sort()
            out[doc_id] = ([r[1] for r in rows], [r[2] for r in rows])
        return out

    # ---- backup, restore, integrity check ----------------------------------------------------

    def iter_chunks(self, *, texts: bool = False, embeddings: bool = False) -> Iterator[ChunkPage]:
        include = ["metadatas", *(["documents"] if texts else []), *(["embeddings"] if embeddings else [])]
        for got in self._pages(include):
            yield ChunkPage(ids=got["ids"], metadatas=got["metadatas"], texts=got["documents"] if texts else None,
                            embeddings=got["embeddings"] if embeddings else None)

    def _pages(self, include: list[str], where: dict | None = None, page: int = PAGE_SIZE) -> Iterator[dict]:
        """Pages of get() over the whole collection, so memory stays bounded on big stores."""
        offset = 0
        while True:
            got = self.chunks.get(where=where, include=include, limit=page, offset=offset)
            if not got["ids"]:
                return
            yield got
            offset += len(got["ids"])

    def replace_contents(self, records: list[DocumentRecord], chunks: ChunkPage) -> None:
        """Build fresh collections beside the live ones and swap them in at the end, so a restore
        that fails leaves the store as it was. Works the same embedded and against a server."""
        suffix = f"_restore_{int(time.time())}"
        staged = ChromaStore(self._client, chunks_name=self._chunks_name + suffix,
                             documents_name=self._documents_name + suffix)
        try:
            if chunks.ids:
                staged.add_chunks(chunks.ids, chunks.embeddings, chunks.texts or [], chunks.metadatas)
            for record in records:
                staged.register(record)
        except BaseException:
            self._drop(staged._chunks_name, staged._documents_name)
            raise
        # Swap: the live collections go, the staged ones take their names.
        self._drop(self._chunks_name, self._documents_name)
        staged.chunks.modify(name=self._chunks_name)
        staged.documents.modify(name=self._documents_name)
        self._reopen()

    def _drop(self, *names: str) -> None:
        for name in names:
            try:
                self._client.delete_collection(name)
            except Exception:  # noqa: BLE001 - already gone
                log.debug("collection not dropped", extra={"collection": name}, exc_info=True)

    def counts(self) -> tuple[int, int]:
        return self.documents.count(), self.chunks.count()

    def close(self) -> None:
        close = getattr(self._client, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # noqa: BLE001 - closing a client that a server already dropped
                log.debug("chroma close failed", exc_info=True)


def _with_scope_keys(meta: dict[str, Any]) -> dict[str, Any]:
    visibility = meta.get("visibility") or "unknown"
    return {**meta, "visibility": visibility,
            **scope_keys(meta["platform"], meta["workspace"], meta["channel"], visibility)}
