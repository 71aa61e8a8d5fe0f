"""Slack: its events, message targets, mrkdwn, command registration and credentials.

app.py is the adapter (Bolt, Socket Mode or HTTP); events.py says where a message came from and
who sent it; markup.py converts to and from mrkdwn; files.py downloads shared files;
commands.py registers the chat layer's commands.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from adapters.slack.app import SLACK_API_URL, SlackAdapter, SlackStartError
from engine.config import Config

if TYPE_CHECKING:
    from engine.core import Engine

__all__ = ["SLACK_API_URL", "SlackAdapter", "SlackStartError", "configured", "run", "run_slack",
           "slack_configured"]

log = logging.getLogger(__name__)


def slack_configured(env: Mapping[str, str], config: Config) -> bool:
    """Whether the environment holds the credentials the configured mode needs."""
    if not env.get("SLACK_BOT_TOKEN"):
        return False
    needed = "SLACK_SIGNING_SECRET" if config.slack.mode == "http" else "SLACK_APP_TOKEN"
    if not env.get(needed):
        log.warning("SLACK_BOT_TOKEN is set but %s is missing: Slack stays off", needed,
                    extra={"mode": config.slack.mode})
        return False
    return True


async def run_slack(engine: Engine, config: Config, env: Mapping[str, str], stop: asyncio.Event) -> None:
    """Serve Slack until `stop` is set, then stop taking events and let answers in hand finish."""
    adapter = SlackAdapter(
        engine, config, bot_token=env["SLACK_BOT_TOKEN"], app_token=env.get("SLACK_APP_TOKEN", ""),
        signing_secret=env.get("SLACK_SIGNING_SECRET", ""), api_url=env.get("SLACK_API_URL") or SLACK_API_URL)
    await adapter.start()
    try:
        await stop.wait()
    finally:
        await adapter.close()


configured = slack_configured  # what bot.py calls (PLATFORMS)
run = run_slack
