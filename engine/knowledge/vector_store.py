"""What Parley needs of a vector store, in Parley's terms: the registry of live documents, the
chunks of their versions, a nearest-neighbour search within a scope, and the primitives that
backup, restore and the integrity check are built from.

The registry entry of a document is the commit point of an ingest: chunks whose (doc_id,
version) is not the registered one are never returned by a search that checks the live
versions (a half-finished ingest, a superseded version not yet deleted). store.ChromaStore is
the implementation; no caller outside it sees a Chroma client or a Chroma filter.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterator, NamedTuple, Protocol, Sequence

import numpy as np

from engine.types import Conversation

_SEP = "\x1f"  # between the ids of a scope key: no platform id contains it


@dataclass(frozen=True)
class Scope:
    """Where a listing or a search looks: a conversation's own channel (every document shared
    there, whatever its visibility), a Discord private thread's parent channel too (its members
    may read it), and, workspace-wide, the documents of its workspace's public channels; never
    wider: a private channel's, a group DM's or a DM's documents serve only there."""

    platform: str
    workspace: str
    channel: str  # the channel whose documents files shared in the conversation become
    workspace_wide: bool = False
    parent: str = ""  # a private thread's channel, when `channel` is the thread
    # The conversation is a public channel: its own documents are public ones (KnowledgeBase
    # settles them before it searches), so a workspace-wide chunk search finds them in one part.
    own_public: bool = False

    @classmethod
    def of(cls, where: Conversation, workspace_wide: bool = False) -> "Scope":
        own = where.documents_at
        return cls(where.platform, where.workspace, own, workspace_wide, where.channel if own != where.channel else "",
                   own_public=where.visibility == "public" and own == where.channel)

    @classmethod
    def own(cls, where: Conversation) -> "Scope":
        """The one channel whose documents files shared in `where` become."""
        return cls(where.platform, where.workspace, where.documents_at)

    @property
    def channel_key(self) -> str:
        """The channel's platform, workspace and channel ids as one string."""
        return _SEP.join((self.platform, self.workspace, self.channel))

    @property
    def workspace_key(self) -> str:
        return _SEP.join((self.platform, self.workspace))

    def keys(self, visibility: str = "unknown") -> dict[str, str]:
        """The keys every stored chunk and document of this channel carries, so that each part of
        a scope is one equality in a filter: `scope` (its channel), `wscope` (its workspace) and
        `pscope` (its workspace, for a public channel's documents only; "" otherwise).

        Chroma answers a filter of one equality in ~8 ms at 10,000 chunks, and the same filter
        written as an $and of platform, workspace and channel in ~27 ms.
        """
        return {"scope": self.channel_key, "wscope": self.workspace_key,
                "pscope": self.workspace_key if visibility == "public" else ""}

    def parts(self, *, chunks: bool = False) -> list[tuple[str, str]]:
        """The scope as one-key equalities whose union it is: (key, value). For `chunks` (a
        nearest-neighbour search, a query per part) a public channel's own part is left out of a
        workspace-wide scope, whose public part holds its documents; the registry reads them all."""
        parts = [] if chunks and self.workspace_wide and self.own_public else [("scope", self.channel_key)]
        if self.parent:
            parts.append(("scope", _SEP.join((self.platform, self.workspace, self.parent))))
        if self.workspace_wide:
            parts.append(("pscope", self.workspace_key))
        return parts


def document_id(scope: Scope, filename: str) -> str:
    """Stable id of a document (all its versions) in its channel: its name is unique there (a
    second document of the same name is numbered, names.numbered_name)."""
    key = "\x00".join((scope.platform, scope.workspace, scope.channel, filename))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]


def chunk_id(doc_id: str, version: int, index: int, attempt: str = "") -> str:
    """A chunk's id: its document, version and index, and the ingest attempt that wrote it (two
    attempts at one version, one of them dead, never write the same ids)."""
    return f"{doc_id}-v{version}-{attempt[:12]}-{index}" if attempt else f"{doc_id}-v{version}-{index}"


@dataclass(frozen=True)
class DocumentRecord:
    """A document's registry entry: its live version and what a listing shows of it."""

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
    # Who can read the channel it was shared in (engine.types.VISIBILITIES); entries from before
    # visibility was recorded are "unknown" until a conversation there says (KnowledgeBase).
    visibility: str = "unknown"
    shared_as: str = ""  # the name it was shared under, when another's document had it
    scanned: int = 0  # pages read by OCR (a scanned PDF's pages without a text layer)

    @property
    def scope(self) -> Scope:
        return Scope(self.platform, self.workspace, self.channel)

    def metadata(self) -> dict[str, Any]:
        """The entry as stored (and as a backup writes it): every field but the id, and the scope keys."""
        fields = {k: v for k, v in self.__dict__.items() if k != "doc_id"}
        return {**fields, **self.scope.keys(self.visibility)}

    @classmethod
    def from_metadata(cls, doc_id: str, meta: dict[str, Any]) -> "DocumentRecord":
        fields = {k: meta[k] for k in cls.__dataclass_fields__ if k != "doc_id" and k in meta}
        return cls(doc_id=doc_id, **fields)  # entries from before a field existed take its default


class Hit(NamedTuple):
    """One chunk a nearest-neighbour search found."""

    id: str
    text: str
    meta: dict[str, Any]
    cosine: float  # cosine similarity to the query vector


@dataclass(frozen=True)
class ChunkPage:
    """Stored chunks, in the same order in every list; texts and embeddings only where asked for."""

    ids: list[str]
    metadatas: list[dict[str, Any]]
    texts: list[str] | None = None
    embeddings: Sequence | np.ndarray | None = None  # one row of floats per chunk


class VectorStore(Protocol):
    """The store of documents' chunks and of the registry naming each document's live version."""

    # ---- registry ----
    def get_document(self, doc_id: str) -> DocumentRecord | None: ...

    def find_documents(self) -> list[DocumentRecord]:
        """Every registered document, of every scope."""
        ...

    def documents_in(self, scope: Scope) -> list[DocumentRecord]: ...

    def find_by_sha(self, scope: Scope, sha256: str) -> DocumentRecord | None:
        """A registered document of this channel with exactly this content, if any."""
        ...

    def register(self, record: DocumentRecord) -> None:
        """Name `record.version` the document's live version: the commit point of an ingest."""
        ...

    def unregister(self, doc_id: str) -> None: ...

    def set_visibility(self, record: DocumentRecord, visibility: str) -> DocumentRecord:
        """Record who can read the document's channel, on its entry and its chunks; the entry as now."""
        ...

    # ---- chunks ----
    def add_chunks(self, ids: list[str], embeddings: np.ndarray, texts: list[str],
                   metadatas: list[dict[str, Any]]) -> None: ...

    def delete_attempt(self, doc_id: str, attempt: str) -> int:
        """Delete the chunks one ingest attempt wrote; returns how many there were."""
        ...

    def delete_older_versions(self, doc_id: str, keep: int) -> int: ...

    def chunk_attempts(self, doc_id: str) -> list[tuple[str, int, str]]:
        """(chunk id, version, attempt id) of a document's stored chunks."""
        ...

    # ---- ingest attempts (attempts.py) ----
    def beat(self, attempt: str, doc_id: str) -> None: ...

    def end_attempt(self, attempt: str) -> None: ...

    def attempt_beats(self) -> dict[str, float]: ...

    def claim(self, doc_id: str, attempt: str) -> str:
        """Claim the document for `attempt` unless another holds it (atomic); returns the holder."""
        ...

    def release(self, doc_id: str, attempt: str) -> None: ...

    def claims(self) -> dict[str, str]: ...

    def register_claimed(self, record: DocumentRecord, attempt: str, expected: int) -> bool:
        """Register `record` if `attempt` holds its claim and its live version is still `expected`."""
        ...

    def delete_document_chunks(self, doc_id: str) -> int: ...

    def delete_chunk_ids(self, ids: list[str]) -> None: ...

    def chunk_ids(self, doc_id: str) -> list[str]:
        """The ids of a document's stored chunks, of every version."""
        ...

    def search(self, vector: np.ndarray, scope: Scope, n: int) -> list[Hit]:
        """The `n` nearest chunks in the scope, best first (of any version: the caller checks)."""
        ...

    def get_chunks(self, ids: list[str]) -> ChunkPage:
        """These chunks with texts and embeddings, in the order asked (missing ones left out)."""
        ...

    def chunk_texts(self, versions: dict[str, int]) -> dict[str, tuple[list[str], list[str]]]:
        """doc_id -> (ids, indexed texts) of these document versions' chunks, in chunk order."""
        ...

    # ---- backup, restore, integrity check ----
    def iter_chunks(self, *, texts: bool = False, embeddings: bool = False) -> Iterator[ChunkPage]:
        """Every stored chunk with its metadata, page by page, so memory stays bounded."""
        ...

    def replace_contents(self, records: list[DocumentRecord], chunks: ChunkPage) -> None:
        """Make these documents and chunks the store's whole contents, all or nothing."""
        ...

    def counts(self) -> tuple[int, int]:
        """(registered documents, stored chunks)."""
        ...

    def close(self) -> None: ...
