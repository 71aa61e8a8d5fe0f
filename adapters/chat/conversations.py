"""A fresh start in a DM, written once: `/llm-new`, or "new" / "reset" alone in a DM.

A DM is one conversation; a fresh start moves it to a new thread id, so the next message starts
a session of its own. The old session is not deleted: it stays in the store until it expires
like any idle thread. Which thread a DM is in now is kept in the adapter's records.
"""
from __future__ import annotations

import dataclasses
import logging
import re
from typing import TYPE_CHECKING

from engine.types import Conversation

if TYPE_CHECKING:
    from adapters.chat.records import Records

log = logging.getLogger(__name__)

FRESH_WORDS = ("new", "reset")
FRESH_TEXT = ("Fresh start: I won't bring up what we said before in this conversation. "
              "What would you like to talk about?")
NOT_IN_A_DM = ("`/llm-new` starts a fresh conversation in a DM with me. In a channel every new mention "
               "starts a new thread, so there is nothing to reset here.")


def asks_for_fresh_start(text: str) -> bool:
    """"new" or "reset" alone (a slash, punctuation and case aside)."""
    return re.sub(r"[^a-z]", "", text.strip().lower()) in FRESH_WORDS and len(text.strip()) <= 12


class DmConversations:
    """The conversation each DM is in now, by the DM's base Conversation (its first thread id)."""

    def __init__(self, records: Records):
        self.records = records

    async def current(self, base: Conversation) -> Conversation:
        """Where a DM message goes: the base conversation, or the one its last fresh start began."""
        thread = await self.records.get(base.session_key)  # read each time: another process may have moved it
        return dataclasses.replace(base, thread=thread) if thread else base

    async def fresh(self, base: Conversation, marker: str) -> Conversation:
        """Start a new conversation in this DM (`marker`: the id of the message or command that asked)."""
        thread = f"{base.thread}~{marker}"
        await self.records.put(base.session_key, thread)
        log.info("dm fresh start", extra={"session": base.session_key, "new_thread": thread})
        return dataclasses.replace(base, thread=thread)
