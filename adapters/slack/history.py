"""Slack's hook for thread context (adapters.chat.context): a thread's earlier messages read with
conversations.replies, page by page (the client waits out Slack's rate limits, Tier 3)."""
from __future__ import annotations

from slack_sdk.web.async_client import AsyncWebClient

from adapters.chat.context import ReadThread, ThreadPost
from adapters.slack.events import SlackUsers
from adapters.slack.files import shared_name
from adapters.slack.markup import slack_to_plain

PAGE_SIZE = 200  # Slack's advised page size for conversations.replies
MAX_PAGES = 10  # a thread longer than 2,000 messages is read from its start this far


class SlackHistory:
    """Reads threads with the bot token; who said what comes from users.info (cached)."""

    def __init__(self, client: AsyncWebClient, users: SlackUsers):
        self.client = client
        self.users = users

    def reader(self, channel: str, thread_ts: str, before_ts: str, bot_user_id: str) -> ReadThread:
        """The thread's messages before `before_ts` (the one being answered), oldest first."""

        async def read(limit: int) -> list[ThreadPost]:
            raw = await self._replies(channel, thread_ts, before_ts)
            return [await self._post(m, bot_user_id) for m in raw[-limit:]]

        return read

    async def _replies(self, channel: str, thread_ts: str, before_ts: str) -> list[dict]:
        messages: list[dict] = []
        cursor = ""
        for _ in range(MAX_PAGES):
            resp = await self.client.conversations_replies(channel=channel, ts=thread_ts, latest=before_ts,
                                                           inclusive=False, limit=PAGE_SIZE,
                                                           **({"cursor": cursor} if cursor else {}))
            messages += [m for m in resp.get("messages") or [] if float(m.get("ts") or 0) < float(before_ts)]
            cursor = (resp.get("response_metadata") or {}).get("next_cursor") or ""
            if not cursor:
                break
        return messages

    async def _post(self, message: dict, bot_user_id: str) -> ThreadPost:
        user_id = message.get("user") or ""
        by_parley = bool(bot_user_id) and user_id == bot_user_id
        by_bot = not by_parley and bool(message.get("bot_id") or message.get("subtype") == "bot_message")
        if by_parley:
            name = "Parley"
        elif by_bot:
            name = message.get("username") or (message.get("bot_profile") or {}).get("name") or "a bot"
        else:
            name = (await self.users.get(user_id)).name if user_id else ""
        files = tuple(shared_name(f) for f in message.get("files") or [] if isinstance(f, dict))
        return ThreadPost(message_id=message.get("ts", ""), author_id=user_id, author_name=name,
                          text=slack_to_plain(message.get("text") or "", bot_user_id), files=files,
                          by_parley=by_parley, by_bot=by_bot)
