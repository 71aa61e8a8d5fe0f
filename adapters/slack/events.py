"""Slack's side of a conversation: where a message or a file share was said and where its reply
goes, who said it, and the thread a reply is posted into."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Generic, TypeVar

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.markup import guard
from engine.types import Conversation, User

log = logging.getLogger(__name__)

USER_CACHE_S = 600.0
# How long a channel's visibility from conversations.info is trusted: a channel made private is
# seen as such at most this long after (a message event's channel_type says it at once).
CHANNEL_CACHE_S = 120.0
# A message event's channel_type, as Conversation.visibility (engine/types.py)
CHANNEL_TYPES = {"channel": "public", "group": "private", "im": "dm", "mpim": "group_dm"}
ANSWERED_SUBTYPES = {None, "file_share", "thread_broadcast"}  # the rest are edits, joins, bot posts…


@dataclass(frozen=True)
class Origin:
    """Where a message came from and where the reply goes."""

    where: Conversation
    channel: str
    reply_thread_ts: str | None  # None: reply at the top level (a DM)
    user_id: str
    ts: str
    is_dm: bool = False
    in_thread: bool = False  # said in a thread (which may be Parley's)


def team_of(body: dict, event: dict | None = None) -> tuple[str, str]:
    """The installing workspace (stable for one thread even in shared channels), and its org:
    `team_id` of an Events API body or a slash command, `team.id` of a shortcut, a button press
    or a form (interactivity payloads), else the event's `team`."""
    team = body.get("team_id") or ""
    if not team and isinstance(body.get("team"), dict):
        team = body["team"].get("id") or ""
    team = team or (event or {}).get("team") or ""
    enterprise = body.get("enterprise_id") or ""
    if isinstance(body.get("enterprise"), dict):
        enterprise = enterprise or body["enterprise"].get("id", "")
    return team or enterprise, enterprise


def message_origin(event: dict, team: str) -> Origin | None:
    """A DM is one conversation (a thread inside it is one of its own); in a channel, the thread
    of the message, or the thread it was posted in."""
    channel = event.get("channel", "")
    ts = event.get("ts", "")
    user_id = event.get("user", "")
    if not (channel and ts and user_id):
        return None
    is_dm = event.get("channel_type") == "im" or (not event.get("channel_type") and channel.startswith("D"))
    thread_ts = event.get("thread_ts")
    # app_mention events carry no channel_type: SlackChannels asks when it matters (an ingest)
    visibility = "dm" if is_dm else CHANNEL_TYPES.get(event.get("channel_type") or "", "unknown")
    if is_dm:
        return Origin(Conversation("slack", team, channel, thread_ts or "dm", visibility=visibility), channel,
                      thread_ts, user_id, ts, is_dm=True, in_thread=thread_ts is not None)
    return Origin(Conversation("slack", team, channel, thread_ts or ts, visibility=visibility), channel,
                  thread_ts or ts, user_id, ts, in_thread=thread_ts is not None)


def share_origin(team: str, channel: str, file: dict, file_id: str, user_id: str) -> Origin:
    """Where a file shared in `channel` was posted (files.info's shares), and so where its notes go."""
    shares = file.get("shares") or {}
    share = next(iter((shares.get("public") or {}).get(channel) or (shares.get("private") or {}).get(channel)
                      or [{}]))
    ts = share.get("ts") or ""
    if channel.startswith("D"):
        return Origin(Conversation("slack", team, channel, share.get("thread_ts") or "dm", visibility="dm"), channel,
                      share.get("thread_ts"), user_id, ts, is_dm=True)
    thread_ts = share.get("thread_ts") or ts or None
    return Origin(Conversation("slack", team, channel, thread_ts or file_id), channel, thread_ts, user_id, ts)


class SlackThread:
    """A MessageTarget posting into one channel (and thread) with the bot token; what it sends
    passes the mrkdwn guard (adapters/slack/markup.py), whoever wrote it."""

    def __init__(self, client: AsyncWebClient, channel: str, thread_ts: str | None):
        self.client = client
        self.channel = channel
        self.thread_ts = thread_ts

    async def post(self, text: str) -> str:
        resp = await self.client.chat_postMessage(channel=self.channel, thread_ts=self.thread_ts, text=guard(text),
                                                  unfurl_links=False, unfurl_media=False)
        return resp["ts"]

    async def edit(self, handle: str, text: str) -> None:
        await self.client.chat_update(channel=self.channel, ts=handle, text=guard(text))

    async def delete(self, handle: str) -> None:
        await self.client.chat_delete(channel=self.channel, ts=handle)


async def tell_privately(client: AsyncWebClient, origin: Origin, text: str) -> None:
    """Tell only the one who wrote `origin`'s message (ephemeral); where Slack refuses (e.g. Parley
    is not in the channel), say it in the thread."""
    try:
        await client.chat_postEphemeral(channel=origin.channel, user=origin.user_id, text=guard(text),
                                        thread_ts=origin.reply_thread_ts)
    except SlackApiError:
        await SlackThread(client, origin.channel, origin.reply_thread_ts).post(text)


@dataclass(frozen=True)
class SlackPerson:
    """What users.info says of someone (kept a few minutes)."""

    name: str
    home_team: str  # the workspace the account belongs to: another organisation's, for a Slack Connect guest
    enterprise: str  # its Enterprise Grid org, if any
    admin: bool  # an admin or owner of their home workspace
    org_admin: bool  # an admin or owner of that org


def person_of(info: dict) -> SlackPerson:
    profile = info.get("profile") or {}
    org = info.get("enterprise_user") or {}
    return SlackPerson(name=profile.get("display_name") or profile.get("real_name") or info.get("name", ""),
                       home_team=info.get("team_id") or "", enterprise=org.get("enterprise_id") or "",
                       admin=bool(info.get("is_admin") or info.get("is_owner") or info.get("is_primary_owner")),
                       org_admin=bool(org.get("is_admin") or org.get("is_owner")))


Looked = TypeVar("Looked")


class SlackLookups(Generic[Looked]):
    """Answers of one Slack lookup (users.info, conversations.info), kept `ttl_s` seconds by key. A
    failed call is logged, answered with `fallback` and not kept, so the next event asks again."""

    def __init__(self, ttl_s: float):
        self.ttl_s = ttl_s
        self._kept: dict[str, tuple[float, Looked]] = {}

    async def get(self, key: str, ask: Callable[[], Awaitable[Looked]], fallback: Looked, failed: str) -> Looked:
        now = time.monotonic()
        kept = self._kept.get(key)
        if kept and now - kept[0] < self.ttl_s:
            return kept[1]
        try:
            answer = await ask()
        except (SlackApiError, aiohttp.ClientError, asyncio.TimeoutError, KeyError) as exc:
            log.warning(failed, extra={"key": key, "error": getattr(getattr(exc, "response", None), "data", {})
                                       or type(exc).__name__})
            return fallback
        self._kept[key] = (now, answer)
        return answer

    def put(self, key: str, answer: Looked) -> None:
        """What Slack said of `key` in an event: kept as if just asked."""
        self._kept[key] = (time.monotonic(), answer)


class SlackUsers:
    """Slack users, as Parley's User in one workspace (users.info, cached a few minutes)."""

    def __init__(self, client: AsyncWebClient):
        self.client = client
        self._people: SlackLookups[SlackPerson | None] = SlackLookups(USER_CACHE_S)

    async def get(self, user_id: str, team: str = "") -> User:
        """`user_id` in workspace `team` (team_of's first): platform_admin when an admin or owner
        of that workspace (or, where it is a Grid org, of the org). Slack's admin flags speak of the
        account's own workspace, so a Slack Connect guest who administers their own organisation
        is a member here; and without `team` nobody is an admin."""
        person = await self.person(user_id)
        if person is None:
            return User(id=user_id)
        admin = bool(team) and ((person.admin and team == person.home_team)
                                or (person.org_admin and team == person.enterprise))
        return User(id=user_id, name=person.name, platform_admin=admin)

    async def person(self, user_id: str) -> SlackPerson | None:
        async def ask() -> SlackPerson:
            return person_of((await self.client.users_info(user=user_id))["user"])

        return await self._people.get(user_id, ask, None, "users.info failed; treating the user as a member")


def visibility_of(info: dict) -> str:
    """A conversations.info channel object's visibility (Conversation.visibility)."""
    if info.get("is_im"):
        return "dm"
    if info.get("is_mpim"):
        return "group_dm"
    if info.get("is_private") or info.get("is_group"):
        return "private"
    return "public" if info.get("is_channel") else "unknown"


class SlackChannels:
    """Who can read a Slack conversation: what a message event's channel_type said, else
    conversations.info (needs channels:read, groups:read, im:read, mpim:read), cached a while.
    "unknown" when Slack does not say: a document shared there then serves only that channel."""

    def __init__(self, client: AsyncWebClient):
        self.client = client
        self._visibilities: SlackLookups[str] = SlackLookups(CHANNEL_CACHE_S)

    async def visibility(self, channel: str) -> str:
        async def ask() -> str:
            return visibility_of((await self.client.conversations_info(channel=channel))["channel"])

        return await self._visibilities.get(channel, ask, "unknown",
                                            "conversations.info failed; the channel's visibility is unknown")

    def heard(self, channel: str, visibility: str) -> None:
        """A channel's new visibility, from Slack's event (a channel made private or public)."""
        self._visibilities.put(channel, visibility)

    async def known(self, where: Conversation, channel: str) -> Conversation:
        """`where` with its visibility, asked of Slack when the event did not say it."""
        if where.visibility != "unknown":
            return where
        return dataclasses.replace(where, visibility=await self.visibility(channel))
