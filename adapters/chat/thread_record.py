"""What thread memory keeps of one of Parley's threads: shared by ThreadMemory
(adapters.chat.memory) and the stores that keep it (adapters.chat.memory_stores), which
memory picks from, so neither imports the other for it."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ThreadRecord:
    workspace: str
    parent: str  # the channel the thread hangs off, where a platform's thread id does not say it
    at: float  # last activity (epoch seconds)
