"""Retrieval policy: from a question to the passages its prompt carries, or to "nothing found".

The question is searched without its references to documents (questions.topic_of); the
passages that fit the prompt budget become a block tagged [1], [2]… (citations.build_context).
When nothing relevant is found and the question is plainly about the documents here, the
answer is a "not found" reply instead of a model's guess.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine.knowledge.citations import build_context
from engine.knowledge.questions import is_document_question, topic_of
from engine.knowledge.records import Passage
from engine.types import Conversation

if TYPE_CHECKING:
    from engine.knowledge.knowledge_base import KnowledgeBase

__all__ = ["Retrieval", "retrieve", "topic_of"]


@dataclass(frozen=True)
class Retrieval:
    block: str = ""  # the prompt block of the passages used
    passages: list[Passage] = field(default_factory=list)
    not_found: str = ""  # a reply to give instead of an answer


async def retrieve(knowledge: KnowledgeBase, where: Conversation, question: str, *,
                   count_tokens: Callable[[str], int], budget_tokens: int, workspace_wide: bool) -> Retrieval:
    passages = await knowledge.search(where, topic_of(question), workspace_wide=workspace_wide)
    if passages:
        block, used = await asyncio.to_thread(build_context, passages, budget_tokens, count_tokens)
        return Retrieval(block, used)
    docs = await knowledge.list_documents(where, workspace_wide=workspace_wide)
    if not is_document_question(question, [d.filename for d in docs]):
        return Retrieval()  # nothing relevant: the model answers plainly
    place = "this workspace" if workspace_wide else "this channel"
    if not docs:
        return Retrieval(not_found=f"There are no documents in {place} yet, so I can't answer from them. "
                                   "Share the file here and ask again.")
    names = ", ".join(d.filename for d in docs[:5]) + (f" and {len(docs) - 5} more" if len(docs) > 5 else "")
    return Retrieval(not_found=f"I couldn't find anything about that in {place}'s documents ({names}). "
                               "Try other words, or share the document that covers it.")
