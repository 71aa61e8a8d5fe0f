"""Who a request speaks for: its API key's identity (engine/api_keys.py) as the Engine's User,
and the conversations and document scopes that identity reaches.

A key's requests live on platform `api`, in the key's workspace: its usage counts against that
workspace's rate limits, its documents are that workspace's. A scope is named as
`channel:NAME` or `workspace`; one the key may not read is refused (403), one of
another workspace cannot be named at all. Without a scope, a request lives in the key's own
channel (`~NAME`), which holds no documents.
"""
from __future__ import annotations

from dataclasses import dataclass

from adapters.http_api.errors import bad_request, forbidden
from engine.api_keys import ApiIdentity
from engine.authority import API, API_OPERATOR, Role
from engine.types import Conversation, User


@dataclass(frozen=True)
class Caller:
    identity: ApiIdentity

    @property
    def user(self) -> User:
        ident = self.identity
        return User(id=f"key:{ident.name}", name=ident.name, platform_admin=ident.rank >= Role.WORKSPACE_ADMIN,
                    roles=(API_OPERATOR,) if ident.rank >= Role.OPERATOR else ())

    @property
    def own_channel(self) -> str:
        return f"~{self.identity.name}"

    def conversation(self, channel: str, thread: str = "") -> Conversation:
        """A conversation of this key's workspace; documents shared there reach its workspace scope."""
        return Conversation(platform=API, workspace=self.identity.workspace, channel=channel, thread=thread,
                            visibility="public")

    def readable(self, scope: object, param: str = "parley.scope") -> tuple[str, bool]:
        """(channel, workspace_wide) of a scope this key may read; 400 malformed, 403 not allowed."""
        if not isinstance(scope, str) or not (scope == "workspace" or scope.startswith("channel:")):
            raise bad_request("A scope is `channel:NAME` or `workspace`.", param)
        channel = scope.removeprefix("channel:") if scope != "workspace" else self.own_channel
        if not channel or "/" in channel or channel.startswith("~") or channel == "*":
            raise bad_request("A scope is `channel:NAME` or `workspace`.", param)
        if not self.identity.may_read(scope):
            raise forbidden(f"This key may not read the documents of {scope}.", param)
        return channel, scope == "workspace"

    def default_channel(self) -> str:
        """Where an upload without a scope goes: the key's first channel scope."""
        for scope in self.identity.scopes:
            if scope.startswith("channel:") and scope != "channel:*":
                return scope.removeprefix("channel:")
        raise bad_request("This key has no channel scope of its own: name one (`scope`).", "scope")
