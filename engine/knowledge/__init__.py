"""Knowledge: files shared into a channel become passages its questions retrieve (Chroma RAG).

Importing this package is cheap (its names load on first use): torch, sentence-transformers
and chromadb load when a KnowledgeBase is built, and an adapter may read `formats` alone.
"""
from __future__ import annotations

import importlib

_NAMES = {"KnowledgeBase": "knowledge_base", "Passage": "records", "build_context": "citations",
          "excerpt": "citations", "to_sources": "citations", "retrieve": "retrieval", "Retrieval": "retrieval"}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
