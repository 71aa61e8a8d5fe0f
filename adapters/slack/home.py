"""Parley's Home tab: published (views.publish) each time a user opens it.

What Parley is and how to reach it, the live model, the user's own usage today (questions,
tokens, rate-limit headroom), the documents in the workspace, and for admins the figures of
/llm-stats. Document names are shown where they are meant to be seen workspace-wide (the
workspace is in knowledge.workspace_scope) or to admins; anyone else sees how many there are,
since a private channel's file names are not theirs to read. Someone the access lists turn away
(engine/access.py) sees only that Parley is not available to them.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from slack_bolt.app.async_app import AsyncApp
from slack_sdk.errors import SlackApiError

from adapters.chat.tasks import TaskSet
from adapters.slack.events import SlackUsers, team_of
from adapters.slack.markup import SLACK, escape
from engine.errors import ParleyError
from engine.types import Conversation, DocumentInfo, User

if TYPE_CHECKING:
    from engine.core import Engine

log = logging.getLogger(__name__)

ABOUT = ("I'm *Parley*, an assistant that runs on your team's own machine: the model, the documents and "
         "the conversations stay there. Mention @Parley in a channel and continue in the thread, send me a "
         "direct message, or open me in the side panel. Share a PDF or another document in a channel I'm in "
         "and ask about it: answers show the passages they rely on.")
MAX_NAMES = 20


def _section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}


def _documents_text(docs: list[DocumentInfo], names: bool) -> str:
    if not docs:
        return "*Documents* none yet: share one in a channel I'm in."
    channels = len({d.channel for d in docs})
    head = f"*Documents* {len(docs)} in {channels} channel{'s' if channels != 1 else ''}"
    if not names:
        return head + ". Ask in a channel to use its documents."
    listed = ", ".join(f"`{escape(d.filename)}`" for d in docs[:MAX_NAMES])
    return head + ": " + listed + (f" and {len(docs) - MAX_NAMES} more" if len(docs) > MAX_NAMES else "")


async def home_view(engine: Engine, where: Conversation, user: User) -> dict:
    """The Home tab's view for `user` in `where`'s workspace."""
    admin = engine.is_admin(where, user)
    summary = await engine.summary(where, user)
    usage = next(line for line in summary.lines if line.startswith("*You today*"))
    blocks = [{"type": "header", "text": {"type": "plain_text", "text": "Parley"}}, _section(ABOUT),
              {"type": "divider"}, _section(f"*Live model* `{escape(engine.live_model or 'none loaded')}`"),
              _section(SLACK.render(usage))]
    if engine.knowledge is not None:  # documents are on
        try:
            docs = await engine.workspace_documents(where)  # public channels' only: never a private one's
            shared = where.workspace in engine.config.knowledge.workspace_scope
            blocks.append(_section(_documents_text(docs, names=admin or shared)))
        except ParleyError:
            blocks.append(_section("*Documents* unavailable right now."))
    if admin:
        report = await engine.report(where, user)  # an operator's every figure, else the workspace's
        blocks += [{"type": "divider"}, _section("*For admins* (as in /llm-stats)"),
                   _section(SLACK.render(report.render()))]
    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": "Updated " + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}]})
    return {"type": "home", "blocks": blocks}


def register_home(app: AsyncApp, engine: Engine, users: SlackUsers, tasks: TaskSet,
                  allowed: Callable[[str, str], bool]) -> None:
    async def on_home_opened(body: dict, event: dict, client) -> None:
        team, enterprise = team_of(body, event)
        if event.get("tab", "home") != "home" or not event.get("user") or not allowed(team, enterprise):
            return
        tasks.spawn(_publish(engine, users, client, team, event["user"]), name="slack-home", bounded=True)

    app.event("app_home_opened")(on_home_opened)


def refused_view(reason: str) -> dict:
    """The Home tab of someone the access lists turn away (engine/access.py): only that."""
    return {"type": "home", "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "Parley"}},
                                       _section(reason)]}


async def _publish(engine: Engine, users: SlackUsers, client, team: str, user_id: str) -> None:
    user = await users.get(user_id, team)
    where = Conversation("slack", team, "", "")
    decision = await engine.access.admit(where, user, command=True)
    view = await home_view(engine, where, user) if decision.allowed else refused_view(decision.reason)
    try:
        await client.views_publish(user_id=user_id, view=view)
    except SlackApiError as exc:
        log.warning("home tab not published", extra={"user": user_id, "error": exc.response.get("error")})
