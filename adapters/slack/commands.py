"""Parley's slash commands in Slack: /llm-stats, /llm-model [NAME], /llm-config [...].

The commands themselves are adapters.chat.commands; here each is acknowledged at once (Slack
gives an app 3 seconds) and answered through the command's response_url as an ephemeral
message, seen only by whoever ran it.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from slack_bolt.app.async_app import AsyncApp

from adapters.chat.commands import COMMANDS, Wording, run_command
from adapters.chat.tasks import TaskSet
from adapters.slack.events import SlackUsers
from adapters.slack.markup import SLACK
from engine.types import Conversation, User

if TYPE_CHECKING:
    from engine.core import Engine

WORDING = Wording(admins="workspace admins", model_usage="/llm-model NAME",
                  not_served="Parley is not enabled for this workspace.")


def register_commands(app: AsyncApp, engine: Engine, tasks: TaskSet, users: SlackUsers,
                      scope: Callable[[dict], Conversation | None]) -> None:
    """Register every chat command; `scope` says where a command's body was sent (None: not served)."""
    for name in COMMANDS:
        app.command(f"/{name}")(_listener(name, engine, tasks, users, scope))


def _listener(name: str, engine: Engine, tasks: TaskSet, users: SlackUsers,
              scope: Callable[[dict], Conversation | None]):
    async def run(body: dict, respond) -> None:
        where = scope(body)
        user = await users.get(body.get("user_id", "")) if where is not None else User("")
        text = await run_command(name, engine, where, user, body.get("text") or "", SLACK, WORDING)
        await respond(text=text, response_type="ephemeral")

    async def on_command(ack, body: dict, respond) -> None:  # Bolt passes arguments by these names
        await ack()  # within Slack's 3 s; the answer follows through response_url
        tasks.spawn(run(body, respond), name=f"slack-{name}")

    return on_command
