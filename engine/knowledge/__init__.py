"""Knowledge: files shared into a channel become passages its questions retrieve (Chroma RAG).

Importing this package is cheap; torch, sentence-transformers and chromadb load when a
KnowledgeBase is built.
"""
from engine.knowledge.knowledge_base import KnowledgeBase
from engine.knowledge.prompting import build_context, excerpt, sources_footer, to_sources
from engine.knowledge.records import Passage

__all__ = ["KnowledgeBase", "Passage", "build_context", "excerpt", "sources_footer", "to_sources"]
