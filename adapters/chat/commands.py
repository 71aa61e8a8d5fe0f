"""Parley's slash commands, written once: each is a function of (engine, where, who, arguments)
that returns Markdown. Slack, Discord and the console only register them, acknowledge or defer
as their platform wants, and render the Markdown with their markup (`run_command`), in the
platform's Wording (adapters.chat.wording, also importable from here).

Anyone may view; the engine decides who may change things and who sees which figures
(engine/authority.py: it raises FORBIDDEN and audits the refusal), and a failure becomes a short
warning with its code and reference.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from adapters.chat.documents import llm_docs
from adapters.chat.markup import Markup
from adapters.chat.wording import Wording
from engine.errors import ParleyError
from engine.types import Conversation, User

if TYPE_CHECKING:
    from engine.audit import AuditEntry
    from engine.core import Engine
    from engine.feedback import FeedbackComment

log = logging.getLogger(__name__)


Command = Callable[["Engine", Conversation, User, str, Wording], Awaitable[str]]


async def llm_stats(engine: Engine, where: Conversation, user: User, args: str, wording: Wording) -> str:
    """Operators: model, requests, tokens, latency, queue, memory, documents, feedback, this
    channel's settings. A workspace admin: that workspace's figures. Anyone else: a short private
    summary (live model, queue, their own usage and limits)."""
    return (await engine.report(where, user)).render()


async def llm_model(engine: Engine, where: Conversation, user: User, args: str, wording: Wording) -> str:
    """Without a name: the models, the live one marked. With one: switch to it (operators)."""
    name = args.strip()
    if not name:
        return models_text(engine, wording)
    was_live = engine.live_model == name
    info = await engine.switch_model(name, where, user)  # refused unless an operator
    if was_live:
        return f"`{name}` is already the live model."
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
    lines.append(f"Parley's operators switch with `{wording.model_usage}`.")
    return "\n".join(lines)


def usage_as_code(text: str) -> str:
    """Usage blocks are column-aligned: show them as code so every platform keeps the columns."""
    head, found, usage = text.partition("Usage:")
    if not found:
        return text
    return (head.strip() + "\n" if head.strip() else "\n") + "```\nUsage:" + usage.replace("```", "").rstrip() + "\n```"


AUDIT_USAGE = ("Usage:\n"
               "/llm-audit [N]            the newest N acts of admins and operators, and refusals (20)\n"
               "/llm-audit feedback [N]   the newest N comments left with a 👎 (20)\n"
               "Workspace admins see their workspace's; Parley's operators every workspace's.")
AUDIT_MAX = 100


async def llm_audit(engine: Engine, where: Conversation, user: User, args: str, wording: Wording) -> str:
    """`/llm-audit [feedback] [N]`: the audit trail, or the 👎 comments (workspace admins, operators)."""
    words = args.lower().split()
    feedback = bool(words) and words[0] == "feedback"
    rest = words[1:] if feedback else words
    if len(rest) > 1 or (rest and not rest[0].isdigit()):
        return "\n```\n" + AUDIT_USAGE + "\n```"
    limit = min(AUDIT_MAX, max(1, int(rest[0]))) if rest else 20
    if feedback:
        comments = await engine.feedback_comments(where, user, limit)
        return "\n".join(["**Comments left with 👎** (newest first)", *map(comment_line, comments)]
                         if comments else ["No comments left with 👎 yet."])
    entries = await engine.audit_entries(where, user, limit)
    return "\n".join(["**Audit log** (newest first)", *map(audit_line, entries)]
                     if entries else ["Nothing in the audit log yet."])


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))


def audit_line(e: AuditEntry) -> str:
    """"2026-05-01 09:12 UTC · switch_model smollm2-135m-b · refused (ref 3f9a12c4) · Grace (U0GRACE,
    workspace admin) in slack/T0001 #C0GENERAL"."""
    outcome = e.outcome + (f" (ref {e.reference})" if e.reference else "") + (
        f", {e.repeats} times until {_when(e.last_at)}" if e.repeats > 1 else "")
    who = f"{e.user_name or e.user_id} ({e.user_id}, {e.role.replace('_', ' ')})"
    place = f"{e.platform}/{e.workspace}" + (f" #{e.channel}" if e.channel else "")
    return f"{_when(e.at)} · **{e.act}**" + (f" {e.target}" if e.target else "") + f" · {outcome} · {who} in {place}"


def comment_line(c: FeedbackComment) -> str:
    return f"{_when(c.at)} · {c.model} · {c.user_id} in {c.platform}/{c.workspace} #{c.channel}: “{c.comment}”"


COMMANDS: dict[str, Command] = {"llm-stats": llm_stats, "llm-model": llm_model, "llm-config": llm_config,
                                "llm-docs": llm_docs, "llm-audit": llm_audit}


async def run_command(name: str, engine: Engine, where: Conversation | None, user: User, args: str,
                      markup: Markup, wording: Wording = Wording()) -> str:
    """Run command `name` (without its slash) and render its reply; None for `where` means the
    place is not served."""
    if where is None:
        return wording.not_served
    access = await engine.access.admit(where, user, command=True)  # admins always pass (engine/access.py)
    if not access.allowed:
        return markup.render(access.reason)
    try:
        return markup.render(await COMMANDS[name](engine, where, user, args, wording))
    except ParleyError as exc:
        head, found, usage = exc.user_message.partition("Usage:")
        text = f"{head.strip()} ({exc.code.value}, ref {exc.reference})" + (usage_as_code(found + usage) if found else "")
        return markup.warning + markup.render(text)
