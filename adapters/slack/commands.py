"""Parley's slash commands in Slack: /llm-stats, /llm-model [NAME], /llm-config [...],
/llm-docs [forget|cancel NAME], /llm-audit [feedback] [N], and /llm-new (a fresh start in a DM); /llm-summarize is in
adapters/slack/summaries.py.

The commands themselves are adapters.chat.commands; here each is acknowledged at once (Slack
gives an app 3 seconds) and answered through the command's response_url as an ephemeral
message, seen only by whoever ran it.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from slack_bolt.app.async_app import AsyncApp

from adapters.chat.commands import COMMANDS, Wording, run_command
from adapters.chat.conversations import FRESH_TEXT, NOT_IN_A_DM, DmConversations
from adapters.chat.tasks import BUSY_TEXT, Busy, TaskSet
from adapters.slack.events import SlackUsers
from adapters.slack.markup import SLACK
from engine.types import Conversation, User

if TYPE_CHECKING:
    from engine.access import Admit
    from engine.core import Engine

WORDING = Wording(admins="workspace admins", model_usage="/llm-model NAME",
                  not_served="Parley is not enabled for this workspace.")


def register_commands(app: AsyncApp, engine: Engine, tasks: TaskSet, users: SlackUsers,
                      scope: Callable[[dict], Conversation | None]) -> None:
    """Register every chat command; `scope` says where a command's body was sent (None: not served)."""
    for name in COMMANDS:
        app.command(f"/{name}")(_listener(name, engine, tasks, users, scope))


def register_fresh_start(app: AsyncApp, tasks: TaskSet, dms: DmConversations,
                         scope: Callable[[dict], Conversation | None], admit: Admit) -> None:
    """`/llm-new`: in a DM, a new conversation (the old one stays in the store until it expires);
    `admit`: whether Parley serves that person there (engine/access.py: DMs may be off)."""

    async def run(body: dict, respond) -> None:
        where = scope(body)
        if where is None:
            text = WORDING.not_served
        elif not is_dm(body):
            text = NOT_IN_A_DM
        elif not (decision := await admit(where, User(body.get("user_id", "")))).allowed:
            text = decision.reason
        else:
            await dms.fresh(dataclasses.replace(where, thread="dm"), f"{time.time():.6f}")
            text = FRESH_TEXT
        await respond(text=text, response_type="ephemeral")

    async def on_command(ack, body: dict, respond) -> None:
        await ack()
        tasks.spawn(run(body, respond), name="slack-llm-new", busy=busy_note(body, respond))

    app.command("/llm-new")(on_command)


def busy_note(body: dict, respond) -> Busy:
    """What the asker hears when the adapter holds all the work it may (limits.tasks_in_flight)."""
    return Busy(body.get("user_id", ""), lambda: respond(text=BUSY_TEXT, response_type="ephemeral"))


def is_dm(body: dict) -> bool:
    return body.get("channel_name") == "directmessage" or str(body.get("channel_id", "")).startswith("D")


def _listener(name: str, engine: Engine, tasks: TaskSet, users: SlackUsers,
              scope: Callable[[dict], Conversation | None]):
    async def name_of(user_id: str) -> str:
        return (await users.get(user_id)).name

    wording = dataclasses.replace(WORDING, people=name_of)

    async def run(body: dict, respond) -> None:
        where = scope(body)
        user = await users.get(body.get("user_id", ""), where.workspace) if where is not None else User("")
        text = await run_command(name, engine, where, user, body.get("text") or "", SLACK, wording)
        await respond(text=SLACK.guard(text), response_type="ephemeral")

    async def on_command(ack, body: dict, respond) -> None:  # Bolt passes arguments by these names
        await ack()  # within Slack's 3 s; the answer follows through response_url
        tasks.spawn(run(body, respond), name=f"slack-{name}", busy=busy_note(body, respond))

    return on_command
