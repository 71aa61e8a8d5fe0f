"""Parley's application commands on Discord: /llm-stats, /llm-model [model], /llm-config [args],
/llm-docs [action] [name], /llm-audit [args], and /llm-new (a fresh start in a DM; the one command allowed in
DMs); /llm-summarize and the "Summarize" message menu are in adapters/discord/summaries.py.

The commands themselves are adapters.chat.commands; here they are registered on discord.py's
command tree and answered ephemerally (only whoever ran the command sees it). Discord wants an
answer to an interaction within 3 seconds: a command not done after DEFER_AFTER_S is deferred
(the user sees "Parley is thinking…") and answered with a follow-up.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import discord
from discord import app_commands

from adapters.chat.commands import Wording, run_command
from adapters.chat.conversations import FRESH_TEXT, NOT_IN_A_DM, DmConversations
from adapters.chat.streaming import split_message
from adapters.discord.documents import display_name
from adapters.discord.text import DISCORD, NO_MENTIONS, escape_mentions
from engine.errors import ErrorCode, ParleyError
from engine.types import Conversation, User

if TYPE_CHECKING:
    from engine.access import Admit
    from engine.core import Engine

log = logging.getLogger(__name__)

DEFER_AFTER_S = 1.5
MESSAGE_LIMIT = 2000
WORDING = Wording(admins="server admins (Manage Server)", model_usage="/llm-model model:NAME",
                  not_served="Parley is not enabled for this server.")

Scope = Callable[[discord.Interaction], Awaitable[Conversation | None]]
UserOf = Callable[[discord.Interaction], User]


def register_commands(tree: app_commands.CommandTree, engine: Engine, scope: Scope, user_of: UserOf) -> None:
    """Put the chat commands on `tree`; `scope` says where an interaction was (None: not served)."""

    async def run(interaction: discord.Interaction, name: str, args: str) -> None:
        async def name_of(user_id: str) -> str:
            return await display_name(interaction.client, interaction.guild, user_id)

        async def work() -> str:
            return await run_command(name, engine, await scope(interaction), user_of(interaction), args,
                                     DISCORD, dataclasses.replace(WORDING, people=name_of))

        await reply(interaction, work())

    @tree.command(name="llm-stats", description="Parley's health: model, memory, queue, speed, errors, documents")
    @app_commands.guild_only()
    async def llm_stats(interaction: discord.Interaction) -> None:
        await run(interaction, "llm-stats", "")

    @tree.command(name="llm-model", description="List Parley's models, or switch the live one (operators)")
    @app_commands.guild_only()
    @app_commands.describe(model="the model to switch to; leave empty to list them")
    async def llm_model(interaction: discord.Interaction, model: str | None = None) -> None:
        await run(interaction, "llm-model", model or "")

    @llm_model.autocomplete("model")
    async def model_names(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return model_choices(engine, current)

    @tree.command(name="llm-config", description="Show this channel's Parley settings, or change them (admins)")
    @app_commands.guild_only()
    @app_commands.describe(args="e.g. `length short`, `workspace model NAME`, `reset`, `help`; empty shows them")
    async def llm_config(interaction: discord.Interaction, args: str | None = None) -> None:
        await run(interaction, "llm-config", args or "")

    @tree.command(name="llm-docs", description="The documents this channel can use; forget or cancel one")
    @app_commands.guild_only()
    @app_commands.describe(action="list (default), forget a document, or cancel its indexing",
                           name="the document's file name, for forget and cancel")
    @app_commands.choices(action=[app_commands.Choice(name=a, value=a) for a in ("list", "forget", "cancel")])
    async def llm_docs(interaction: discord.Interaction, action: str | None = None,
                       name: str | None = None) -> None:
        await run(interaction, "llm-docs", f"{action or 'list'} {name or ''}".strip())

    @tree.command(name="llm-audit", description="What admins and operators did here, and refusals; or 👎 comments")
    @app_commands.guild_only()
    @app_commands.describe(args="empty: the newest 20; a number: that many; `feedback [N]`: the 👎 comments")
    async def llm_audit(interaction: discord.Interaction, args: str | None = None) -> None:
        await run(interaction, "llm-audit", args or "")

    @llm_docs.autocomplete("name")
    async def document_names(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await document_choices(engine, await scope(interaction), user_of(interaction), current)

    @tree.error
    async def on_command_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        failure = ParleyError(ErrorCode.INTERNAL)
        log.error("discord command failed", extra={"ref": failure.reference,
                                                   "command": getattr(interaction.command, "name", None)},
                  exc_info=error)
        await send(interaction, f"{DISCORD.warning}{failure.render()}")


async def document_choices(engine: Engine, where: Conversation | None, user: User, current: str
                           ) -> list[app_commands.Choice[str]]:
    """The channel's documents whose names contain `current` (Discord shows at most 25); none for
    someone Parley does not serve here (engine/access.py)."""
    if where is None or not (await engine.access.admit(where, user, command=True)).allowed:
        return []
    try:
        docs = await engine.list_documents(where, workspace_wide=False)
    except ParleyError:
        return []
    names = [d.filename for d in docs if current.lower() in d.filename.lower()]
    return [app_commands.Choice(name=n[:100], value=n[:100]) for n in names[:25]]


def register_fresh_start(tree: app_commands.CommandTree, dms: DmConversations,
                         allowed: Callable[[int], Awaitable[bool]], admit: Admit) -> None:
    """`/llm-new`: in a DM, a new conversation (the old one stays in the store until it expires);
    `admit`: whether Parley serves that person there (engine/access.py: DMs may be off)."""

    @tree.command(name="llm-new", description="Start a fresh conversation with Parley in this DM")
    @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
    async def llm_new(interaction: discord.Interaction) -> None:
        if interaction.guild_id is not None:
            text = NOT_IN_A_DM
        elif not await allowed(interaction.user.id):
            text = WORDING.not_served
        elif not (decision := await admit(Conversation("discord", "dm", str(interaction.channel_id), ""),
                                          User(str(interaction.user.id)))).allowed:
            text = decision.reason
        else:
            cid = str(interaction.channel_id)
            await dms.fresh(Conversation("discord", "dm", cid, cid), str(interaction.id))
            text = FRESH_TEXT
        await send(interaction, text)


def model_choices(engine: Engine, current: str) -> list[app_commands.Choice[str]]:
    current = current.strip().lower()
    choices = []
    for m in engine.list_models():
        if current and current not in m.name.lower():
            continue
        label = m.name + (" (live)" if m.live else "") + (f" — {m.description}" if m.description else "")
        choices.append(app_commands.Choice(name=label[:100], value=m.name))
    return choices[:25]  # Discord shows at most 25


async def reply(interaction: discord.Interaction, work: Awaitable[str]) -> None:
    """Answer with `work`'s text; defer first when it is slow."""
    task = asyncio.ensure_future(work)
    await asyncio.wait({task}, timeout=DEFER_AFTER_S)
    if not task.done():
        await interaction.response.defer(ephemeral=True, thinking=True)
    await send(interaction, await task)


async def send(interaction: discord.Interaction, text: str) -> None:
    """An ephemeral reply, over several messages when long; a follow-up once answered."""
    for part in split_message(text, MESSAGE_LIMIT):
        if interaction.response.is_done():
            await interaction.followup.send(escape_mentions(part), ephemeral=True, allowed_mentions=NO_MENTIONS)
        else:
            await interaction.response.send_message(escape_mentions(part), ephemeral=True, allowed_mentions=NO_MENTIONS)
