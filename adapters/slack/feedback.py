"""👍 / 👎 on Slack answers: Slack's feedback buttons block, the presses, the "what was wrong?" form.

Every finished answer's last message carries a context_actions block with a feedback_buttons
element whose values name the answer ("up:<id>" / "down:<id>"). A press (a signed block_actions
request, acked at once) is counted through adapters.chat.feedback, once per person and answer,
and the presser alone is thanked (chat.postEphemeral); after a 👎 the thank-you offers a button
that opens a short modal (views.open), whose text is kept with the vote.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from slack_bolt.app.async_app import AsyncApp
from slack_sdk.errors import SlackApiError

from adapters.chat.feedback import (COMMENT_THANKS, FeedbackTag, answer_id_of, record_comment, record_press)
from adapters.chat.streaming import split_message
from adapters.chat.tasks import TaskSet
from adapters.slack.events import SlackThread, SlackUsers, team_of
from adapters.slack.markup import guard
from engine.types import Conversation, User

if TYPE_CHECKING:
    from engine.core import Engine

log = logging.getLogger(__name__)

FEEDBACK_ACTION = "parley_feedback"
COMMENT_ACTION = "parley_feedback_comment"
COMMENT_VIEW = "parley_feedback_form"
SECTION_LIMIT = 3000  # a section block's text


def feedback_blocks(answer_id: str) -> list[dict]:
    """Slack's feedback buttons for one answer (a context_actions block)."""
    def button(emoji: str, label: str, value: str) -> dict:
        return {"text": {"type": "plain_text", "text": emoji}, "accessibility_label": label, "value": value}

    return [{"type": "context_actions", "block_id": f"parley_fb_{answer_id}",
             "elements": [{"type": "feedback_buttons", "action_id": FEEDBACK_ACTION,
                           "positive_button": button("👍", "This answer helped", f"up:{answer_id}"),
                           "negative_button": button("👎", "This answer missed", f"down:{answer_id}")}]}]


def message_blocks(text: str, answer_id: str) -> list[dict]:
    """A chat.update / chat.postMessage answer with its buttons: the text in mrkdwn sections."""
    sections = [{"type": "section", "text": {"type": "mrkdwn", "text": part}}
                for part in split_message(text, SECTION_LIMIT) if part.strip()]
    return sections + feedback_blocks(answer_id)


class FeedbackThread(SlackThread):
    """SlackThread for StreamingReply, whose last message can carry the feedback buttons."""

    async def post(self, text: str, feedback: FeedbackTag | None = None) -> str:
        if feedback is None:
            return await super().post(text)
        text = guard(text)  # as SlackThread.post does: nothing posted can mention anyone
        resp = await self.client.chat_postMessage(channel=self.channel, thread_ts=self.thread_ts, text=text,
                                                  blocks=message_blocks(text, feedback.answer_id),
                                                  unfurl_links=False, unfurl_media=False)
        return resp["ts"]

    async def edit(self, handle: str, text: str, feedback: FeedbackTag | None = None) -> None:
        if feedback is None:
            await super().edit(handle, text)
        else:
            text = guard(text)
            await self.client.chat_update(channel=self.channel, ts=handle, text=text,
                                          blocks=message_blocks(text, feedback.answer_id))


def _comment_offer(text: str, answer_id: str) -> list[dict]:
    return [{"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "actions", "elements": [{"type": "button", "action_id": COMMENT_ACTION, "value": answer_id,
                                              "text": {"type": "plain_text", "text": "Tell us what was wrong"}}]}]


def _comment_form(answer_id: str) -> dict:
    return {"type": "modal", "callback_id": COMMENT_VIEW, "private_metadata": answer_id,
            "title": {"type": "plain_text", "text": "What was wrong?"},
            "submit": {"type": "plain_text", "text": "Send"}, "close": {"type": "plain_text", "text": "Cancel"},
            "blocks": [{"type": "input", "block_id": "comment", "label": {"type": "plain_text", "text": "Tell us"},
                        "element": {"type": "plain_text_input", "action_id": "text", "multiline": True,
                                    "max_length": 1000,
                                    "placeholder": {"type": "plain_text",
                                                    "text": "Wrong facts, missed the question, too long…"}}}]}


def register_feedback(app: AsyncApp, engine: Engine, users: SlackUsers, tasks: TaskSet,
                      allowed: Callable[[str, str], bool]) -> None:
    """The listeners of the buttons and the form; each acks within Slack's 3 seconds."""

    async def on_press(ack, body: dict, client) -> None:
        await ack()
        team, enterprise = team_of(body)
        if allowed(team, enterprise):
            tasks.spawn(_pressed(engine, users, client, body), name="slack-feedback", bounded=True)

    async def on_offer(ack, body: dict, client) -> None:
        await ack()
        answer_id = answer_id_of((body.get("actions") or [{}])[0].get("value", ""))
        if answer_id and body.get("trigger_id"):
            await client.views_open(trigger_id=body["trigger_id"], view=_comment_form(answer_id))

    async def on_form(ack, body: dict, view: dict) -> None:
        text = (((view.get("state") or {}).get("values") or {}).get("comment") or {}).get("text", {}).get("value")
        user_id = (body.get("user") or {}).get("id", "")
        decision = await engine.access.admit(Conversation("slack", team_of(body)[0], "", ""), User(user_id),
                                             command=True)
        if decision.allowed:  # a sqlite write: well within Slack's 3 s
            kept = await record_comment(engine, answer_id_of(view.get("private_metadata", "")), User(user_id),
                                        text or "")
            log.info("feedback comment", extra={"user": user_id, "kept": kept})
        await ack(response_action="update", view={
            "type": "modal", "title": {"type": "plain_text", "text": "Thank you" if decision.allowed else "Parley"},
            "close": {"type": "plain_text", "text": "Close"},
            "blocks": [{"type": "section", "text": {"type": "mrkdwn",
                                                    "text": COMMENT_THANKS if decision.allowed else decision.reason}}]})

    app.action(FEEDBACK_ACTION)(on_press)
    app.action(COMMENT_ACTION)(on_offer)
    app.view(COMMENT_VIEW)(on_form)


async def _pressed(engine: Engine, users: SlackUsers, client: Any, body: dict) -> None:
    action = (body.get("actions") or [{}])[0]
    value = action.get("value", "")
    user = await users.get((body.get("user") or {}).get("id", ""), team_of(body)[0])
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
    thread_ts = (body.get("message") or {}).get("thread_ts") or (body.get("container") or {}).get("thread_ts")
    if not channel:
        return
    decision = await engine.access.admit(Conversation("slack", team_of(body)[0], channel, ""), user, command=True)
    if decision.allowed:
        outcome = await record_press(engine, answer_id_of(value), user, positive=value.startswith("up:"))
        text = outcome.text
        blocks = _comment_offer(outcome.text, answer_id_of(value) or "") if outcome.offer_comment else None
    else:  # not counted; the presser alone is told why
        text = decision.reason
        blocks = None
    try:
        await client.chat_postEphemeral(channel=channel, user=user.id, text=text, thread_ts=thread_ts,
                                        blocks=blocks)
    except SlackApiError as exc:
        log.warning("feedback thank-you not delivered", extra={"error": exc.response.get("error")})
