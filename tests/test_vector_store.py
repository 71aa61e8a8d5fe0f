"""ChromaStore is the VectorStore: every member the protocol names, with the same parameters, so
the knowledge base, the ingestor and backup (typed against the protocol) can rely on it."""
from __future__ import annotations

import inspect

from engine.knowledge.store import ChromaStore
from engine.knowledge.vector_store import VectorStore


def protocol_members() -> list[str]:
    return [name for name, value in vars(VectorStore).items() if inspect.isfunction(value) and not name.startswith("_")]


def test_chroma_store_implements_every_member_of_the_protocol():
    members = protocol_members()
    assert {"search", "register", "iter_chunks", "replace_contents"} <= set(members)
    for name in members:
        assert hasattr(ChromaStore, name), f"ChromaStore lacks {name}"
        wanted = inspect.signature(getattr(VectorStore, name)).parameters
        got = inspect.signature(getattr(ChromaStore, name)).parameters
        assert [(p.name, p.kind, p.default) for p in got.values()] == \
            [(p.name, p.kind, p.default) for p in wanted.values()], name
