"""What differs in the commands' words between platforms: kept apart so the command modules
(adapters.chat.commands, adapters.chat.documents) share it without importing each other."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Wording:
    """What differs in the commands' words between platforms."""

    admins: str = "workspace admins"  # who may switch the model, besides Parley's config
    model_usage: str = "/llm-model NAME"  # how to name a model when switching
    not_served: str = "Parley is not enabled for this workspace."
    people: Callable[[str], Awaitable[str]] | None = None  # a user id's display name (/llm-docs)
