"""Who may use Parley where: config.yaml's access lists (`access:`), DMs on or off per workspace,
and a channel switched off (`/llm-config reply off`), decided in one place for every entry point.

Every platform asks here before it starts work for someone: a message (adapters/chat/routing.py
turns the decision into routing facts), a slash command (adapters/chat/commands.py), a shortcut
or message menu, a feedback button or form, the Home tab, the assistant panel. The console is the
operator at the machine: always allowed. The engine holds the one AccessPolicy (`Engine.access`);
it reads the config and two collaborators (who is an admin, a channel's settings), never a platform.

The rule, in words:
- the entry of a workspace's id and the entry "*" both apply: their lists are joined; `dms` is
  the workspace's own when it says, else "*"'s, else on;
- a channel switched off (`reply off`) or denied (in `deny_channels`, or missing from a non-empty
  `allow_channels`) is ignored: nothing said there is answered or indexed, and nobody is told;
- a DM where `dms` is off is refused with a short note (a DM is not a channel: the channel lists
  do not apply to it);
- a person is refused when they are in `deny_users` or hold a role of `deny_roles` (deny wins),
  or when `allow_users` / `allow_roles` is set and they are in neither;
- an act by hand (a slash command, a shortcut or menu, a button, the Home tab) from a workspace
  admin or an operator always passes: whoever governs Parley can undo a mistake in the lists or
  switch a channel back on without a restart. Their messages follow the rule like anyone's.
"""
from __future__ import annotations

import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ClassVar, Union

from engine.channels import ChannelSettings
from engine.config import AccessRules
from engine.types import Conversation, User

log = logging.getLogger(__name__)

ANY_WORKSPACE = "*"
NOTICE_COOLDOWN_S = 600.0  # a person turned away hears why once in this long, however often they ask
MAX_NOTICES = 10_000  # cool-downs kept in this process before the ended ones are dropped

# access[platform][workspace] = the rules of that workspace ("*": of every workspace)
AccessLists = dict[str, dict[str, AccessRules]]


class Barrier(enum.Enum):
    """Why Parley does not serve someone here."""

    SWITCHED_OFF = "switched off"  # the channel's `reply` setting is off
    CHANNEL = "channel"  # the channel is denied in config.access
    DMS = "dms"  # DMs are off in this workspace
    PERSON = "person"  # this person is denied, or not allowed


NOTES = {
    Barrier.SWITCHED_OFF: "Parley is switched off in this channel.",
    Barrier.CHANNEL: "Parley is not available in this channel.",
    Barrier.DMS: "Direct messages with Parley are turned off here.",
    Barrier.PERSON: "Parley is not available to you here. Ask a workspace admin if you think this is a mistake.",
}


@dataclass(frozen=True)
class Allowed:
    allowed: ClassVar[bool] = True


@dataclass(frozen=True)
class Refused:
    barrier: Barrier
    allowed: ClassVar[bool] = False

    @property
    def reason(self) -> str:
        """The short note the person is shown (privately)."""
        return NOTES[self.barrier]

    @property
    def quiet(self) -> bool:
        """The channel is off: a message said there is ignored without a word."""
        return self.barrier in (Barrier.SWITCHED_OFF, Barrier.CHANNEL)


Decision = Union[Allowed, Refused]
ALLOWED = Allowed()
Admit = Callable[[Conversation, User], Awaitable[Decision]]  # AccessPolicy.admit, for a listener


@dataclass(frozen=True)
class Rules:
    """One workspace's rules, its own entry and "*" joined."""

    allow_users: frozenset[str] = frozenset()
    deny_users: frozenset[str] = frozenset()
    allow_roles: frozenset[str] = frozenset()
    deny_roles: frozenset[str] = frozenset()
    allow_channels: frozenset[str] = frozenset()
    deny_channels: frozenset[str] = frozenset()
    dms: bool = True

    @classmethod
    def joined(cls, *entries: AccessRules | None) -> Rules:
        present = [e for e in entries if e is not None]

        def union(name: str) -> frozenset[str]:
            return frozenset(str(v) for e in present for v in getattr(e, name))

        dms = next((e.dms for e in present if e.dms is not None), True)  # the workspace's own first
        return cls(allow_users=union("allow_users"), deny_users=union("deny_users"),
                   allow_roles=union("allow_roles"), deny_roles=union("deny_roles"),
                   allow_channels=union("allow_channels"), deny_channels=union("deny_channels"), dms=dms)

    def channel_denied(self, channel: str) -> bool:
        return channel in self.deny_channels or bool(self.allow_channels) and channel not in self.allow_channels

    def person_denied(self, user: User) -> bool:
        roles = set(user.roles)
        if user.id in self.deny_users or roles & self.deny_roles:
            return True  # deny wins
        if not (self.allow_users or self.allow_roles):
            return False
        return user.id not in self.allow_users and not roles & self.allow_roles


def is_direct(where: Conversation) -> bool:
    """A one-to-one conversation with Parley: as the platform said (visibility "dm"), or by the
    platforms' conventions (engine.types): Discord's DMs are in workspace "dm", Slack's DM channel
    ids start with D."""
    return (where.visibility == "dm" or where.workspace == "dm"
            or (where.platform == "slack" and where.channel.startswith("D")))


class AccessPolicy:
    """`decide` (pure, given the channel's reply mode) or `admit` (reads the mode first)."""

    def __init__(self, lists: AccessLists, *, is_admin: Callable[[Conversation, User], bool],
                 settings: Callable[[Conversation], Awaitable[ChannelSettings]] | None = None):
        self._lists = lists
        self._is_admin = is_admin  # workspace admins and operators
        self._settings = settings
        self._rules: dict[tuple[str, str], Rules] = {}
        self._notices: dict[str, float] = {}  # who -> monotonic time their cool-down ends

    def rules(self, platform: str, workspace: str) -> Rules:
        key = (platform, workspace)
        if key not in self._rules:  # the config does not change while Parley runs
            entries = self._lists.get(platform, {})
            self._rules[key] = Rules.joined(entries.get(workspace), entries.get(ANY_WORKSPACE))
        return self._rules[key]

    def decide(self, where: Conversation, user: User, *, reply: str = "", command: bool = False) -> Decision:
        """Whether `user` may have Parley work for them in `where`, whose channel's reply mode is
        `reply` ("" when unknown or a DM). `command`: an act by hand, which admins always may."""
        if where.platform == "console":
            return ALLOWED  # the operator at the machine
        if command and self._is_admin(where, user):
            return ALLOWED
        rules = self.rules(where.platform, where.workspace)
        if is_direct(where):
            if not rules.dms:
                return Refused(Barrier.DMS)
        elif reply == "off":
            return Refused(Barrier.SWITCHED_OFF)
        elif where.channel and rules.channel_denied(where.channel):
            return Refused(Barrier.CHANNEL)
        return Refused(Barrier.PERSON) if rules.person_denied(user) else ALLOWED

    async def reply_mode(self, where: Conversation) -> str:
        """The channel's `reply` setting ("" for a DM, no channel, or settings unavailable)."""
        if self._settings is None or not where.channel or is_direct(where):
            return ""
        try:
            return (await self._settings(where)).reply
        except Exception:  # noqa: BLE001 - the engine cannot answer without its settings either
            log.warning("channel settings unavailable", extra={"channel": where.channel}, exc_info=True)
            return ""

    async def admit(self, where: Conversation, user: User, *, command: bool = False) -> Decision:
        """`decide` after reading the channel's reply mode (admins' acts by hand need no read)."""
        if command and (where.platform == "console" or self._is_admin(where, user)):
            return ALLOWED
        decision = self.decide(where, user, reply=await self.reply_mode(where), command=False)
        if not decision.allowed:
            log.info("access refused", extra={"session": f"{where.platform}/{where.workspace}/{where.channel}",
                                              "user": user.id, "barrier": decision.barrier.value})
        return decision

    def first_notice(self, where: Conversation, user_id: str) -> bool:
        """True when `user_id` was not told in this workspace within NOTICE_COOLDOWN_S (and start
        a cool-down): a flood of mentions from someone turned away gets one note, not a note each."""
        now = time.monotonic()
        key = f"{where.platform}/{where.workspace}/{user_id}"
        if self._notices.get(key, 0.0) > now:
            return False
        if len(self._notices) > MAX_NOTICES:
            self._notices = {k: until for k, until in self._notices.items() if until > now}
        self._notices[key] = now + NOTICE_COOLDOWN_S
        return True
