"""Parley's application commands on Discord: /llm-stats, /llm-model [model], /llm-config [args].

Every reply is ephemeral (only whoever ran the command sees it). Discord wants an answer to an
interaction within 3 seconds: a command that is not done after DEFER_AFTER_S is deferred (the
user sees "Parley is thinking…") and answered with a follow-up. Anyone may view; the engine
decides who may change things (Manage Server, a role in discord.admin_roles, or the admins in
config), and switching the model is for admins only.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING

import discord
from discord import app_commands

from adapters.streaming import split_message
from engine.errors import ErrorCode, ParleyError
from engine.types import Conversation

if TYPE_CHECKING:
    from adapters.discord import DiscordAdapter

log = logging.getLogger(__name__)

DEFER_AFTER_S = 1.5
MESSAGE_LIMIT = 2000
NOT_SERVED = "Parley is not enabled for this server."
WARN = "⚠️"


class ParleyCommands:
    def __init__(self, adapter: DiscordAdapter):
        self.adapter = adapter

    @property
    def engine(self):
        return self.adapter.engine

    def install(self, tree: app_commands.CommandTree) -> None:
        commands = self

        @tree.command(name="llm-stats", description="Parley's health: model, memory, queue, speed, errors, documents")
        @app_commands.guild_only()
        async def llm_stats(interaction: discord.Interaction) -> None:
            await commands.stats(interaction)

        @tree.command(name="llm-model", description="List Parley's models, or switch the live one (admins)")
        @app_commands.guild_only()
        @app_commands.describe(model="the model to switch to; leave empty to list them")
        async def llm_model(interaction: discord.Interaction, model: str | None = None) -> None:
            await commands.model(interaction, model)

        @llm_model.autocomplete("model")
        async def model_names(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
            return commands.model_choices(current)

        @tree.command(name="llm-config", description="Show this channel's Parley settings, or change them (admins)")
        @app_commands.guild_only()
        @app_commands.describe(args="e.g. `length short`, `workspace model NAME`, `reset`, `help`; empty shows them")
        async def llm_config(interaction: discord.Interaction, args: str | None = None) -> None:
            await commands.configure(interaction, args or "")

        @tree.error
        async def on_command_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
            failure = ParleyError(ErrorCode.INTERNAL)
            log.error("discord command failed", extra={"ref": failure.reference,
                                                       "command": getattr(interaction.command, "name", None)},
                      exc_info=error)
            await commands.send(interaction, f"{WARN} {failure.render()}")

    # ---- the commands ------------------------------------------------------------------------

    def where(self, interaction: discord.Interaction) -> Conversation | None:
        """The command's scope: guild and channel (a thread's parent channel); None if not served."""
        if not self.adapter.guild_allowed(interaction.guild_id):
            return None
        channel = interaction.channel
        parent = channel.parent_id if isinstance(channel, discord.Thread) else None
        record = self.adapter.threads.get(interaction.channel_id) if interaction.channel_id else None
        channel_id = parent or (record.parent if record else interaction.channel_id)
        return Conversation("discord", str(interaction.guild_id), str(channel_id or ""), "")

    async def stats(self, interaction: discord.Interaction) -> None:
        where = self.where(interaction)
        if where is None:
            await self.send(interaction, NOT_SERVED)
            return

        async def report() -> str:
            return (await self.engine.stats(where)).render()

        await self.reply(interaction, report())

    async def model(self, interaction: discord.Interaction, name: str | None) -> None:
        where = self.where(interaction)
        if where is None:
            await self.send(interaction, NOT_SERVED)
            return
        name = (name or "").strip()
        if not name:
            await self.send(interaction, self.models_text())
            return
        user = self.adapter.user_of(interaction.user, interaction.permissions)
        if not self.engine.is_admin(where, user):
            log.info("model switch refused", extra={"user": user.id, "model": name})
            await self.send(interaction, "Sorry, only server admins (Manage Server) and the admins listed in "
                                         "Parley's config can switch the model. `/llm-model` without a name shows "
                                         "which one is live.")
            return
        if self.engine.live_model == name:
            await self.send(interaction, f"`{name}` is already the live model.")
            return

        async def switch() -> str:
            info = await self.engine.switch_model(name, where, user)
            details = ", ".join(x for x in (info.device, info.dtype) if x)
            return f"Now answering with **{info.name}**" + (f" ({details})." if details else ".") + \
                "\n-# Answers that were in progress finished on the previous model."

        await self.reply(interaction, switch(), defer_now=True)

    async def configure(self, interaction: discord.Interaction, args: str) -> None:
        where = self.where(interaction)
        if where is None:
            await self.send(interaction, NOT_SERVED)
            return
        user = self.adapter.user_of(interaction.user, interaction.permissions)
        await self.reply(interaction, self.engine.configure(where, user, args))

    def model_choices(self, current: str) -> list[app_commands.Choice[str]]:
        current = current.strip().lower()
        choices = []
        for m in self.engine.list_models():
            if current and current not in m.name.lower():
                continue
            label = m.name + (" (live)" if m.live else "") + (f" — {m.description}" if m.description else "")
            choices.append(app_commands.Choice(name=label[:100], value=m.name))
        return choices[:25]  # Discord shows at most 25

    def models_text(self) -> str:
        lines = ["**Models** (● live)"]
        for m in self.engine.list_models():
            facts = ", ".join(str(x) for x in (m.source, m.device, m.dtype,
                                               f"{m.context_window} tokens" if m.context_window else "") if x)
            line = f"{'●' if m.live else '○'} `{m.name}`" + (" **live**" if m.live else "") + f" — {facts}"
            if m.description:
                line += f" — {m.description}"
            lines.append(line)
        lines.append("Admins switch with `/llm-model model:NAME`.")
        return "\n".join(lines)

    # ---- replying ----------------------------------------------------------------------------

    async def reply(self, interaction: discord.Interaction, work: Awaitable[str], *, defer_now: bool = False) -> None:
        """Answer with `work`'s text; defer first when it is slow (or known to be)."""
        task = asyncio.ensure_future(work)
        if not defer_now:
            await asyncio.wait({task}, timeout=DEFER_AFTER_S)
        if not task.done():
            await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            text = await task
        except ParleyError as exc:
            text = f"{WARN} {exc.render()}"
        await self.send(interaction, text)

    async def send(self, interaction: discord.Interaction, text: str) -> None:
        """An ephemeral reply, over several messages when long; a follow-up once answered."""
        for part in split_message(text, MESSAGE_LIMIT):
            if interaction.response.is_done():
                await interaction.followup.send(part, ephemeral=True)
            else:
                await interaction.response.send_message(part, ephemeral=True)
