"""Chroma access: a collection of chunks and a small collection registering live documents.

The registry entry of a document is the commit point of an ingest: chunks whose (doc_id,
version) is not the registered one are never returned, whatever else is in the collection
(a half-finished ingest, a superseded version not yet deleted). Both collections live in the
same Chroma (embedded PersistentClient or a server), so several Parley processes sharing one
Chroma server see the same documents.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from engine.config import KnowledgeConfig
from engine.types import Conversation

log = logging.getLogger(__name__)

CHUNKS = "parley_chunks"
DOCUMENTS = "parley_documents"
_REGISTRY_VECTOR = [1.0]  # registry entries are looked up by id and metadata, never by vector
PAGE_SIZE = 2000
_SEP = "\x1f"  # between the ids of a scope key: no platform id contains it
UNFILTERED_FACTOR = 3  # see ChromaStore.query


def scope_keys(platform: str, workspace: str, channel: str) -> dict[str, str]:
    """The keys every chunk and document carries so a scope is one equality in a filter.

    Chroma answers a filter of one equality in ~8 ms at 10,000 chunks, and the same filter
    written as an $and of platform, workspace and channel in ~27 ms.
    """
    return {"scope": _SEP.join((platform, workspace, channel)), "wscope": _SEP.join((platform, workspace))}


def scope_where(where: Conversation, workspace_wide: bool) -> dict:
    """The Chroma filter for a scope: a channel, or all channels of a workspace; never wider."""
    keys = scope_keys(where.platform, where.workspace, where.channel)
    return {"wscope": keys["wscope"]} if workspace_wide else {"scope": keys["scope"]}


def document_id(where: Conversation, filename: str) -> str:
    """Stable id of a document (all its versions) in its channel."""
    key = "\x00".join((where.platform, where.workspace, where.channel, filename))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]


def chunk_id(doc_id: str, version: int, index: int) -> str:
    return f"{doc_id}-v{version}-{index}"


@dataclass(frozen=True)
class DocumentRecord:
    doc_id: str
    platform: str
    workspace: str
    channel: str
    filename: str
    version: int
    kind: str
    pages: int
    chunks: int
    uploader: str
    uploaded_at: float
    sha256: str
    sections: int = 0  # headings found: what a document without pages is counted in

    def metadata(self) -> dict[str, Any]:
        fields = {k: v for k, v in self.__dict__.items() if k != "doc_id"}
        return {**fields, **scope_keys(self.platform, self.workspace, self.channel)}

    @classmethod
    def from_chroma(cls, doc_id: str, meta: dict[str, Any]) -> "DocumentRecord":
        fields = {k: meta[k] for k in cls.__dataclass_fields__ if k != "doc_id" and k in meta}
        return cls(doc_id=doc_id, **fields)  # entries from before a field existed take its default


def open_client(config: KnowledgeConfig, data_dir: Path):
    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False)
    if config.chroma.mode == "http":
        return chromadb.HttpClient(host=config.chroma.host, port=config.chroma.port, settings=settings)
    path = Path(data_dir) / "chroma"
    path.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(path), settings=settings)


class ChromaStore:
    def __init__(self, client, *, chunks_name: str = CHUNKS, documents_name: str = DOCUMENTS):
        self.client = client
        self.chunks_name, self.documents_name = chunks_name, documents_name
        self.chunks = self._collection(chunks_name, cosine=True)
        self.documents = self._collection(documents_name, cosine=False)
        self._add_scope_keys()

    def _add_scope_keys(self) -> None:
        """Give entries stored before scope keys existed their keys (once, on open)."""
        for collection in (self.documents, self.chunks):
            first = collection.get(limit=1, include=["metadatas"])["metadatas"]
            if not first or "scope" in first[0]:
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
        return self.client.get_or_create_collection(name, configuration=configuration, embedding_function=None)

    def reopen(self) -> None:
        self.chunks = self._collection(self.chunks_name, cosine=True)
        self.documents = self._collection(self.documents_name, cosine=False)

    # ---- registry ----------------------------------------------------------------------------

    def get_document(self, doc_id: str) -> DocumentRecord | None:
        got = self.documents.get(ids=[doc_id], include=["metadatas"])
        return DocumentRecord.from_chroma(got["ids"][0], got["metadatas"][0]) if got["ids"] else None

    def find_documents(self, where: dict | None = None) -> list[DocumentRecord]:
        got = self.documents.get(where=where, include=["metadatas"])
        return [DocumentRecord.from_chroma(i, m) for i, m in zip(got["ids"], got["metadatas"])]

    def live_versions(self, doc_ids: list[str]) -> dict[str, int]:
        if not doc_ids:
            return {}
        got = self.documents.get(ids=list(dict.fromkeys(doc_ids)), include=["metadatas"])
        return {i: int(m["version"]) for i, m in zip(got["ids"], got["metadatas"])}

    def documents_in(self, where: Conversation, workspace_wide: bool) -> list[DocumentRecord]:
        """The live documents of a channel, or of every channel of its workspace."""
        return self.find_documents(scope_where(where, workspace_wide))

    def find_by_sha(self, where: Conversation, sha256: str) -> DocumentRecord | None:
        """A live document of this channel with exactly this content, if any."""
        found = self.find_documents({"$and": [scope_where(where, False), {"sha256": sha256}]})
        return found[0] if found else None

    def register(self, record: DocumentRecord) -> None:
        self.documents.upsert(ids=[record.doc_id], embeddings=[_REGISTRY_VECTOR], metadatas=[record.metadata()],
                              documents=[record.filename])

    def unregister(self, doc_id: str) -> None:
        self.documents.delete(ids=[doc_id])

    # ---- chunks ------------------------------------------------------------------------------

    def add_chunks(self, ids: list[str], embeddings: np.ndarray, texts: list[str], metadatas: list[dict]) -> None:
        metadatas = [_with_scope_keys(m) for m in metadatas]
        step = max(1, min(PAGE_SIZE, self.client.get_max_batch_size()))
        for start in range(0, len(ids), step):
            end = start + step
            self.chunks.add(ids=ids[start:end], embeddings=embeddings[start:end], documents=texts[start:end],
                            metadatas=metadatas[start:end])

    def chunk_ids(self, where: dict) -> list[str]:
        return self.chunks.get(where=where, include=[])["ids"]

    def delete_chunks(self, where: dict) -> int:
        ids = self.chunk_ids(where)
        self.delete_chunk_ids(ids)
        return len(ids)

    def delete_version(self, doc_id: str, version: int) -> int:
        """The chunks of one version of a document (a failed or crashed attempt at it)."""
        return self.delete_chunks({"$and": [{"doc_id": doc_id}, {"version": version}]})

    def delete_other_versions(self, doc_id: str, keep: int) -> int:
        """The chunks of every version of a document but `keep` (the superseded ones)."""
        return self.delete_chunks({"$and": [{"doc_id": doc_id}, {"version": {"$ne": keep}}]})

    def delete_document_chunks(self, doc_id: str) -> int:
        return self.delete_chunks({"doc_id": doc_id})

    def delete_chunk_ids(self, ids: list[str]) -> None:
        step = max(1, min(PAGE_SIZE, self.client.get_max_batch_size()))
        for start in range(0, len(ids), step):
            self.chunks.delete(ids=ids[start:start + step])

    def search(self, vector: np.ndarray, where: Conversation, workspace_wide: bool,
               n: int) -> list[tuple[str, str, dict, float]]:
        """(id, text, metadata, cosine similarity) of the `n` nearest chunks in a channel's scope
        (or its workspace's), best first."""
        return self.query(vector, scope_where(where, workspace_wide), n)

    def query(self, vector: np.ndarray, where: dict, n: int) -> list[tuple[str, str, dict, float]]:
        """(id, text, metadata, cosine similarity) of the `n` nearest chunks matching the one-key
        filter `where`, best first.

        First without the filter, for UNFILTERED_FACTOR * n results: when the scope holds much of
        the store, n of them are in it, and they are its n nearest. Chroma pays for a filter by
        the chunks it lets through: at 10,000 chunks, ~40 ms when all pass, ~9 ms for one channel
        of 20, ~4 ms for the unfiltered query. So a broad scope (a workspace, or the one channel
        of a small team) takes ~5 ms instead of ~40, and a narrow one ~4 ms more than it would.
        """
        [(key, value)] = where.items()
        hits = [h for h in self._query(vector, None, n * UNFILTERED_FACTOR) if h[2].get(key) == value]
        if len(hits) >= n:
            return hits[:n]
        return self._query(vector, where, n)

    def _query(self, vector: np.ndarray, where: dict | None, n: int) -> list[tuple[str, str, dict, float]]:
        got = self.chunks.query(query_embeddings=[vector], n_results=n, where=where,
                                include=["documents", "metadatas", "distances"])
        return [(i, t, m, 1.0 - float(d)) for i, t, m, d in
                zip(got["ids"][0], got["documents"][0], got["metadatas"][0], got["distances"][0])]

    def get_chunks(self, ids: list[str]) -> tuple[list[str], list[str], list[dict], list]:
        """(ids, texts, metadatas, embeddings) of these chunks, in the order asked (missing ones left out)."""
        got = self.chunks.get(ids=ids, include=["documents", "metadatas", "embeddings"])
        at = {cid: i for i, cid in enumerate(got["ids"])}
        order = [at[cid] for cid in ids if cid in at]
        embeddings = got["embeddings"] if got["embeddings"] is not None else []
        return ([got["ids"][i] for i in order], [got["documents"][i] for i in order],
                [got["metadatas"][i] for i in order], [embeddings[i] for i in order])

    def chunk_texts(self, versions: dict[str, int]) -> dict[str, tuple[list[str], list[str]]]:
        """doc_id -> (ids, indexed texts: heading, then text) of these document versions' chunks,
        in chunk order."""
        found: dict[str, list[tuple[int, str, str]]] = {d: [] for d in versions}
        # A filter of many ids costs Chroma more than reading everything (7 s against ~1 s at
        # 10,000 chunks): a few documents by id, many by one pass over the collection.
        where = {"doc_id": next(iter(versions))} if len(versions) == 1 else \
            {"doc_id": {"$in": list(versions)}} if len(versions) <= 8 else None
        for got in self.iter_chunks(["documents", "metadatas"], where=where):
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

    def iter_chunks(self, include: list[str], where: dict | None = None, page: int = PAGE_SIZE) -> Iterator[dict]:
        """Pages of get() over the whole collection, so memory stays bounded on big stores."""
        offset = 0
        while True:
            got = self.chunks.get(where=where, include=include, limit=page, offset=offset)
            if not got["ids"]:
                return
            yield got
            offset += len(got["ids"])

    def counts(self) -> tuple[int, int]:
        return self.documents.count(), self.chunks.count()

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # noqa: BLE001 - closing a client that a server already dropped
                log.debug("chroma close failed", exc_info=True)


def _with_scope_keys(meta: dict[str, Any]) -> dict[str, Any]:
    return {**meta, **scope_keys(meta["platform"], meta["workspace"], meta["channel"])}
