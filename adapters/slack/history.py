"""Slack's hook for thread context (adapters.chat.context): a thread's earlier messages read with
conversations.replies, page by page (the client waits out Slack's rate limits, Tier 3); and for
summaries, a whole thread, or a channel's recent messages (conversations.history) with its threads,
each page of either taken from the summary's PageBudget (summaries.max_history_pages): what the
pages did not reach is left out, and said."""
from __future__ import annotations

from slack_sdk.web.async_client import AsyncWebClient

from adapters.chat.context import ReadThread, ThreadPost
from adapters.chat.summaries import PageBudget, ReadPosts
from adapters.slack.events import SlackUsers
from adapters.slack.files import shared_name
from adapters.slack.markup import slack_to_plain

PAGE_SIZE = 200  # Slack's advised page size for conversations.replies
MAX_PAGES = 10  # a thread longer than 2,000 messages is read from its start this far
MAX_THREADS = 20  # a channel summary reads the replies of this many of its newest threads
LATEST = "9999999999.999999"  # "up to now" for conversations.replies
CONVERSATION_SUBTYPES = {None, "file_share", "thread_broadcast", "bot_message", "me_message"}


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

    def whole_thread(self, channel: str, thread_ts: str, before_ts: str, bot_user_id: str,
                     budget: PageBudget) -> ReadPosts:
        """Every message of a thread before `before_ts` (LATEST: all of it) that `budget` reaches,
        from its start, oldest first: what a thread summary reads."""

        async def read() -> list[ThreadPost]:
            raw = await self._replies(channel, thread_ts, before_ts, budget, "first")
            return [await self._post(m, bot_user_id) for m in raw if m.get("subtype") in CONVERSATION_SUBTYPES]

        return read

    def channel_since(self, channel: str, oldest: float, limit: int, bot_user_id: str,
                      budget: PageBudget) -> ReadPosts:
        """A channel's messages after `oldest` (epoch seconds), its threads' replies included,
        the newest `limit`, oldest first, as far as `budget` reaches (newest first, then the
        newest threads' replies): what a channel summary reads."""

        async def read() -> list[ThreadPost]:
            top = await self._history(channel, oldest, limit, budget)
            replies: list[dict] = []
            threads = [m["ts"] for m in top if int(m.get("reply_count") or 0) > 0][:MAX_THREADS]
            for thread_ts in threads:  # past the budget each is one more left short, no request
                replies += [m for m in await self._replies(channel, thread_ts, LATEST, budget, "threads")
                            if m.get("ts") != thread_ts and float(m.get("ts") or 0) >= oldest]
            seen: dict[str, dict] = {m["ts"]: m for m in top + replies if m.get("ts")}
            said = sorted((m for m in seen.values() if m.get("subtype") in CONVERSATION_SUBTYPES),
                          key=lambda m: float(m["ts"]))[-limit:]
            return [await self._post(m, bot_user_id) for m in said]

        return read

    async def _history(self, channel: str, oldest: float, limit: int, budget: PageBudget) -> list[dict]:
        """conversations.history after `oldest`, newest first, paged, at most `limit` messages."""
        messages: list[dict] = []
        cursor = ""
        while len(messages) < limit and budget.take("newest"):
            resp = await self.client.conversations_history(channel=channel, oldest=f"{oldest:.6f}",
                                                           limit=min(PAGE_SIZE, limit - len(messages)),
                                                           **({"cursor": cursor} if cursor else {}))
            messages += resp.get("messages") or []
            cursor = (resp.get("response_metadata") or {}).get("next_cursor") or ""
            if not cursor:
                break
        return messages[:limit]

    async def _replies(self, channel: str, thread_ts: str, before_ts: str, budget: PageBudget | None = None,
                       keeping: str = "first") -> list[dict]:
        """A thread's messages before `before_ts`, oldest first, page by page: at most MAX_PAGES,
        and each one `budget` allows (a summary's; None: thread context)."""
        messages: list[dict] = []
        cursor = ""
        for _ in range(MAX_PAGES):
            if budget is not None and not budget.take(keeping):
                break
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
