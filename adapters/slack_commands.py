"""Parley's slash commands in Slack: /llm-stats, /llm-model [NAME], /llm-config [...].

Each is acknowledged at once (Slack gives an app 3 seconds) and answered through the command's
response_url as an ephemeral message, seen only by whoever ran it. The engine decides who is an
admin; switching the model is for admins only.
"""
from __future__ import annotations

import logging

from adapters.mrkdwn import escape, markdown_to_mrkdwn
from engine.errors import ParleyError
from engine.types import Conversation

log = logging.getLogger(__name__)

NOT_SERVED = "Parley is not enabled for this workspace."


class SlackCommands:
    """Mixed into SlackAdapter, which provides engine, _spawn, _user, _team and _allowed."""

    async def _on_stats_command(self, ack, body: dict, respond) -> None:
        await ack()  # within Slack's 3 s; the answer follows through response_url
        self._spawn(self._stats_command(body, respond), name="slack-llm-stats")

    async def _on_model_command(self, ack, body: dict, respond) -> None:
        await ack()
        self._spawn(self._model_command(body, respond), name="slack-llm-model")

    async def _on_config_command(self, ack, body: dict, respond) -> None:
        await ack()
        self._spawn(self._config_command(body, respond), name="slack-llm-config")

    async def _config_command(self, body: dict, respond) -> None:
        """/llm-config: channel settings; anyone may view, admins may change (the engine decides)."""
        where = self._command_where(body)
        if where is None:
            await respond(text=NOT_SERVED, response_type="ephemeral")
            return
        try:
            user = await self._user(body.get("user_id", ""))
            reply = await self.engine.configure(where, user, body.get("text") or "")
            await respond(text=_as_code_if_usage(reply), response_type="ephemeral")
        except ParleyError as exc:
            await respond(text=f":warning: {_as_code_if_usage(exc.render())}", response_type="ephemeral")

    def _command_where(self, body: dict) -> Conversation | None:
        team, enterprise = self._team(body)
        if not self._allowed(team, enterprise):
            return None
        return Conversation("slack", team, body.get("channel_id", ""), "")

    async def _stats_command(self, body: dict, respond) -> None:
        where = self._command_where(body)
        if where is None:
            await respond(text=NOT_SERVED, response_type="ephemeral")
            return
        try:
            report = await self.engine.stats(where)
            await respond(text=markdown_to_mrkdwn(report.render()), response_type="ephemeral")
        except ParleyError as exc:
            await respond(text=f":warning: {exc.render()}", response_type="ephemeral")

    async def _model_command(self, body: dict, respond) -> None:
        where = self._command_where(body)
        if where is None:
            await respond(text=NOT_SERVED, response_type="ephemeral")
            return
        name = (body.get("text") or "").strip()
        if not name:
            await respond(text=self._models_text(), response_type="ephemeral")
            return
        user = await self._user(body.get("user_id", ""))
        if not self.engine.is_admin(where, user):
            log.info("model switch refused", extra={"user": user.id, "model": name})
            await respond(text="Sorry, only workspace admins and the admins listed in Parley's config can switch "
                               "the model. `/llm-model` without a name shows which one is live.",
                          response_type="ephemeral")
            return
        if self.engine.live_model == name:
            await respond(text=f"`{name}` is already the live model.", response_type="ephemeral")
            return
        await respond(text=f"_Loading `{name}`… answers in progress finish on the current model._",
                      response_type="ephemeral")
        try:
            info = await self.engine.switch_model(name, where, user)
        except ParleyError as exc:
            await respond(text=f":warning: {exc.render()}", response_type="ephemeral")
            return
        details = ", ".join(x for x in (info.device, info.dtype) if x)
        await respond(text=f"Now answering with *{info.name}*" + (f" ({details})." if details else "."),
                      response_type="ephemeral")

    def _models_text(self) -> str:
        lines = ["*Models* (● live)"]
        for m in self.engine.list_models():
            facts = ", ".join(str(x) for x in (m.source, m.device, m.dtype,
                                               f"{m.context_window} tokens" if m.context_window else "") if x)
            line = f"{'●' if m.live else '○'} `{m.name}`" + (" *live*" if m.live else "") + f" — {facts}"
            if m.description:
                line += f" — {markdown_to_mrkdwn(m.description)}"
            lines.append(line)
        lines.append("Admins switch with `/llm-model NAME`.")
        return "\n".join(lines)


def _as_code_if_usage(text: str) -> str:
    """Usage blocks are column-aligned plain text: show them as code so Slack keeps the columns."""
    if "Usage:" not in text:
        return markdown_to_mrkdwn(text)
    head, _, usage = text.partition("Usage:")
    return (markdown_to_mrkdwn(head.strip()) + "\n" if head.strip() else "") + "```Usage:" + escape(usage.replace("```", "")) + "```"
