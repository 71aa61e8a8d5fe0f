"""Channel settings as the engine serves them: a channel's effective settings, and `/llm-config`.

The effective model follows the live one (a `/llm-model` switch changes every channel's
default), so the lookup asks the lineup which model is live.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from engine.authority import Authority
from engine.channels import CONFIG_USAGE, ChannelSettings, ChannelSettingsStore, ConfigCommand, parse_config_command
from engine.types import Conversation, User

log = logging.getLogger(__name__)


class ChannelCommands:
    """Reads and changes the channel settings store; only admins change it (engine/authority.py)."""

    def __init__(self, store: ChannelSettingsStore, authority: Authority, live_model: Callable[[], str | None]):
        self._store = store
        self._authority = authority
        self._live_model = live_model

    async def settings(self, where: Conversation) -> ChannelSettings:
        """The effective settings of `where`'s channel, with where each one comes from."""
        return await asyncio.to_thread(self._store.effective, where, self._live_model())

    async def configure(self, where: Conversation, user: User, text: str) -> str:
        """`/llm-config [workspace] [KEY VALUE | reset [KEY] | help]`: returns the reply to show.

        Everyone may view; workspace admins set (a model other than the live one: operators, since
        it loads that model). New threads pick up changes; running ones keep theirs.
        """
        command = parse_config_command(text)
        if command.action == "help":
            return CONFIG_USAGE
        if command.action != "show":
            await self._change(where, user, command)
            channel = "" if command.level == "workspace" else f"/{where.channel}"
            log.info("channel settings changed", extra={
                "scope": f"{where.platform}/{where.workspace}{channel}",
                "action": command.action, "key": command.key, "by": user.id})
        settings = await self.settings(where)
        head = "Settings for this channel" + (" (new threads use them)" if command.action != "show" else "")
        return "\n".join([head + ":", *settings.render()])

    async def _change(self, where: Conversation, user: User, command: ConfigCommand) -> None:
        """Set or reset, as the asker's role allows; refusals and changes are audited."""
        act = "configure_workspace" if command.level == "workspace" else "configure_channel"
        target = " ".join(w for w in ("workspace" if command.level == "workspace" else "",
                                      "reset" if command.action == "reset" else "", command.key or "",
                                      command.value if command.action == "set" else "") if w)
        await self._authority.require(act, where, user, target=target)
        if command.action == "set":
            value = self._store.validate(command.key, command.value)
            if command.key == "model" and value != self._live_model():  # a channel's model loads on first use
                await self._authority.require("load_model", where, user, target=value)
        async with self._authority.acting(act, where, user, target=target):
            if command.action == "set":
                await asyncio.to_thread(self._store.set, where, command.level, command.key, command.value)
            else:
                await asyncio.to_thread(self._store.reset, where, command.level, command.key)
