"""Parley's slash commands, written once: each is a function of (engine, where, who, arguments)
that returns Markdown. Slack, Discord and the console only register them, acknowledge or defer
as their platform wants, and render the Markdown with their markup (`run_command`), in the
platform's Wording (adapters.chat.wording, also importable from here).

Anyone may view; the engine decides who may change things (it raises FORBIDDEN), and a failure
becomes a short warning with its code and reference.
"""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from adapters.chat.documents import llm_docs
from adapters.chat.markup import Markup
from adapters.chat.wording import Wording
from engine.errors import ParleyError
from engine.types import Conversation, User

if TYPE_CHECKING:
    from engine.core import Engine

log = logging.getLogger(__name__)


Command = Callable[["Engine", Conversation, User, str, Wording], Awaitable[str]]


async def llm_stats(engine: Engine, where: Conversation, user: User, args: str, wording: Wording) -> str:
    """Admins: model, requests, tokens, latency, queue, memory, documents, feedback, this channel's
    settings. Anyone else: a short private summary (live model, queue, their own usage and limits)."""
    if not engine.is_admin(where, user):
        return (await engine.summary(where, user)).render()
    return (await engine.stats(where)).render()


async def llm_model(engine: Engine, where: Conversation, user: User, args: str, wording: Wording) -> str:
    """Without a name: the models, the live one marked. With one: switch to it (admins)."""
    name = args.strip()
    if not name:
        return models_text(engine, wording)
    if not engine.is_admin(where, user):
        log.info("model switch refused", extra={"user": user.id, "model": name})
        return (f"Sorry, only {wording.admins} and the admins listed in Parley's config can switch the model. "
                "`/llm-model` without a name shows which one is live.")
    if engine.live_model == name:
        return f"`{name}` is already the live model."
    info = await engine.switch_model(name, where, user)
    details = ", ".join(x for x in (info.device, info.dtype) if x)
    return (f"Now answering with **{info.name}**" + (f" ({details})." if details else ".")
            + "\n*Answers that were in progress finished on the previous model.*")


async def llm_config(engine: Engine, where: Conversation, user: User, args: str, wording: Wording) -> str:
    """This channel's settings; admins change them (`/llm-config help`)."""
    return usage_as_code(await engine.configure(where, user, args))


def models_text(engine: Engine, wording: Wording) -> str:
    lines = ["**Models** (● live)"]
    for m in engine.list_models():
        facts = ", ".join(str(x) for x in (m.source, m.device, m.dtype,
                                           f"{m.context_window} tokens" if m.context_window else "") if x)
        line = f"{'●' if m.live else '○'} `{m.name}`" + (" **live**" if m.live else "") + f" — {facts}"
        if m.description:
            line += f" — {m.description}"
        lines.append(line)
    lines.append(f"Admins switch with `{wording.model_usage}`.")
    return "\n".join(lines)


def usage_as_code(text: str) -> str:
    """Usage blocks are column-aligned: show them as code so every platform keeps the columns."""
    head, found, usage = text.partition("Usage:")
    if not found:
        return text
    return (head.strip() + "\n" if head.strip() else "\n") + "```\nUsage:" + usage.replace("```", "").rstrip() + "\n```"


COMMANDS: dict[str, Command] = {"llm-stats": llm_stats, "llm-model": llm_model, "llm-config": llm_config,
                                "llm-docs": llm_docs}


async def run_command(name: str, engine: Engine, where: Conversation | None, user: User, args: str,
                      markup: Markup, wording: Wording = Wording()) -> str:
    """Run command `name` (without its slash) and render its reply; None for `where` means the
    place is not served."""
    if where is None:
        return wording.not_served
    try:
        return markup.render(await COMMANDS[name](engine, where, user, args, wording))
    except ParleyError as exc:
        head, found, usage = exc.user_message.partition("Usage:")
        text = f"{head.strip()} ({exc.code.value}, ref {exc.reference})" + (usage_as_code(found + usage) if found else "")
        return markup.warning + markup.render(text)
