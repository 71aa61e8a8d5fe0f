"""A fake of Slack's side, on loopback: the Web API methods Parley calls, file downloads,
response_url webhooks, and helpers that sign Events API / slash-command requests the way Slack
does (v0 HMAC-SHA256 over "v0:{timestamp}:{body}") and post them to the app's HTTP endpoint.

It keeps the state a user would see: each message's current text (and every text it showed),
the threads, the ephemeral messages and the slash-command responses.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from aiohttp import web


# Shared by every fake, so timestamps and event ids never repeat within a test run (the adapter
# remembers them across restarts, as it must).
_TS = itertools.count(int(time.time()) % 100000 * 1000)
_EVENT_IDS = itertools.count(1)


def sign(secret: str, timestamp: str, body: str) -> str:
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256).hexdigest()
    return f"v0={digest}"


@dataclass
class Call:
    method: str
    params: dict
    authorized: bool
    at: float = field(default_factory=time.monotonic)


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    user: str
    thread_ts: str | None = None
    bot_id: str | None = None
    history: list[str] = field(default_factory=list)  # every text it showed, first to last
    deleted: bool = False
    files: list[dict] = field(default_factory=list)
    username: str | None = None  # another bot's name
    blocks: list = field(default_factory=list)  # the latest blocks (feedback buttons, sections)
    streaming: bool = False  # started with chat.startStream and not stopped yet
    streamed: bool = False  # written with chat.startStream / appendStream / stopStream

    def payload(self) -> dict:
        """The message as conversations.replies returns it."""
        data = {"type": "message", "ts": self.ts, "text": self.text, "user": self.user}
        data.update({k: v for k, v in (("thread_ts", self.thread_ts), ("bot_id", self.bot_id),
                                       ("username", self.username)) if v})
        if self.files:
            data.update(files=self.files, subtype="file_share")
        if self.bot_id and self.user is None:
            data["subtype"] = "bot_message"
        return data


class FakeSlack:
    def __init__(self, *, team_id: str = "T0001", bot_user_id: str = "U0BOT", bot_id: str = "B0BOT",
                 bot_token: str = "xoxb-0000-fake-bot-token", signing_secret: str = "fake-signing-secret",
                 app_token: str = "xapp-1-A0PARLEY-fake-app-token"):
        self.team_id, self.bot_user_id, self.bot_id = team_id, bot_user_id, bot_id
        self.bot_token, self.signing_secret, self.app_token = bot_token, signing_secret, app_token
        self.sockets: list[web.WebSocketResponse] = []  # Socket Mode connections from the app
        self.socket_acks: dict[str, dict] = {}  # envelope id -> the app's ack
        self.users: dict[str, dict] = {}
        self.files: dict[str, dict] = {}
        self.file_data: dict[str, bytes] = {}
        self.calls: list[Call] = []
        self.messages: dict[tuple[str, str], Message] = {}
        self.ephemerals: list[dict] = []
        self.responses: list[dict] = []  # posts to response_url, in order
        self.downloads: list[dict] = []
        self.rate_limits: dict[str, list[int]] = {}  # method -> Retry-After seconds for its next calls
        self.unsupported: set[str] = set()  # methods this workspace answers with unknown_method
        self.statuses: list[dict] = []  # assistant.threads.setStatus calls, in order
        self.titles: list[dict] = []  # assistant.threads.setTitle
        self.prompts: list[dict] = []  # assistant.threads.setSuggestedPrompts
        self.views: dict[str, dict] = {}  # user -> the Home tab view published for them
        self.opened_views: list[dict] = []  # views.open (modals)
        self.channel_kinds: dict[str, str] = {}  # channel -> "public" | "private" | "mpim" | "im" (add_channel)
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ---- server ------------------------------------------------------------------------------

    async def start(self) -> "FakeSlack":
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/files-pri/{team_file}/{name}", self._download)
        app.router.add_post("/respond/{key}", self._respond)
        app.router.add_get("/link", self._socket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        for ws in list(self.sockets):
            await ws.close()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    def next_ts(self) -> str:
        n = next(_TS)
        return f"{1700000000 + n}.{n % 1000000:06d}"

    # ---- state set-up ------------------------------------------------------------------------

    def add_user(self, user_id: str, name: str, *, admin: bool = False, owner: bool = False,
                 team: str | None = None) -> None:
        """A person; `team`: their home workspace when another one's (a Slack Connect guest, whose
        is_admin / is_owner speak of that workspace)."""
        self.users[user_id] = {"id": user_id, "team_id": team or self.team_id, "name": name.lower(),
                               "is_admin": admin,
                               "is_owner": owner, "is_primary_owner": False, "is_bot": False,
                               "profile": {"display_name": name, "real_name": name}}

    def add_file(self, name: str, data: bytes, mimetype: str, *, channel: str, ts: str, user: str,
                 thread_ts: str | None = None, file_id: str | None = None) -> dict:
        file_id = file_id or f"F{len(self.files) + 1:04d}"
        share = {"ts": ts, **({"thread_ts": thread_ts} if thread_ts else {})}
        url = f"{self.base_url}/files-pri/{self.team_id}-{file_id}/{quote(name, safe='')}"  # any name
        self.files[file_id] = {
            "id": file_id, "name": name, "title": name, "mimetype": mimetype, "filetype": name.rsplit(".", 1)[-1],
            "size": len(data), "user": user, "mode": "hosted", "is_external": False,
            "url_private": url, "url_private_download": url + "?download=1",
            "shares": {"public" if channel.startswith("C") else "private": {channel: [share]}},
        }
        self.file_data[file_id] = data
        return self.files[file_id]

    def add_message(self, text: str, *, user: str | None, channel: str = "C0GENERAL", thread_ts: str | None = None,
                    files: list[dict] | None = None, bot_id: str | None = None, username: str | None = None,
                    at: float | None = None) -> Message:
        """A message already in the channel (said before Parley was asked; no event is sent), at
        epoch seconds `at` (the ts sequence by default, which lies in 2023)."""
        ts = self.next_ts() if at is None else f"{at:.6f}"
        msg = Message(channel, ts, text, user, thread_ts, bot_id, [text], files=list(files or []), username=username)
        self.messages[(channel, ts)] = msg
        return msg

    def add_channel(self, channel: str, kind: str = "public") -> None:
        """What conversations.info says of `channel`: "public", "private", "mpim" or "im". Unnamed
        channels are told by their id: D… a DM, G… a private channel, else a public one."""
        self.channel_kinds[channel] = kind

    def rate_limit(self, method: str, retry_after: int = 1, times: int = 1) -> None:
        """The next `times` calls of `method` get HTTP 429 with Retry-After."""
        self.rate_limits.setdefault(method, []).extend([retry_after] * times)

    # ---- queries -----------------------------------------------------------------------------

    def calls_of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def bot_messages(self, channel: str, thread_ts: str | None = None) -> list[Message]:
        """The bot's live messages in a thread (or at the top level when thread_ts is None), in order."""
        found = [m for m in self.messages.values() if m.channel == channel and m.user == self.bot_user_id
                 and not m.deleted and m.thread_ts == thread_ts]
        return sorted(found, key=lambda m: float(m.ts))

    def thread_text(self, channel: str, thread_ts: str | None) -> str:
        return "\n".join(m.text for m in self.bot_messages(channel, thread_ts))

    # ---- Slack's requests to the app ---------------------------------------------------------

    def event_body(self, event: dict, *, event_id: str | None = None) -> dict:
        event.setdefault("event_ts", event.get("ts", self.next_ts()))
        return {"token": "legacy-verification-token", "team_id": self.team_id, "api_app_id": "A0PARLEY",
                "event": event, "type": "event_callback", "event_id": event_id or f"Ev{next(_EVENT_IDS):08d}",
                "event_time": int(time.time()),
                "authorizations": [{"enterprise_id": None, "team_id": self.team_id, "user_id": self.bot_user_id,
                                    "is_bot": True, "is_enterprise_install": False}]}

    def mention(self, text: str, *, user: str, channel: str = "C0GENERAL", thread_ts: str | None = None,
                files: list[dict] | None = None) -> dict:
        ts = self.next_ts()
        event = {"type": "app_mention", "user": user, "text": f"<@{self.bot_user_id}> {text}", "ts": ts,
                 "channel": channel, "team": self.team_id}
        if thread_ts:
            event["thread_ts"] = thread_ts
        if files:
            event["files"] = files
        return self.event_body(event)

    def message(self, text: str, *, user: str | None, channel: str = "C0GENERAL", thread_ts: str | None = None,
                channel_type: str = "channel", ts: str | None = None, **extra: Any) -> dict:
        event = {"type": "message", "text": text, "ts": ts or self.next_ts(), "channel": channel,
                 "channel_type": channel_type, "team": self.team_id, **extra}
        if user:
            event["user"] = user
        if thread_ts:
            event["thread_ts"] = thread_ts
        return self.event_body(event)

    def command(self, command: str, text: str, *, user: str, channel: str = "C0GENERAL") -> tuple[str, str]:
        """A slash-command payload (form-encoded, as Slack sends it) and its response_url key."""
        key = f"r{next(_EVENT_IDS)}"
        body = urlencode({"token": "legacy", "team_id": self.team_id, "team_domain": "fake",
                          "channel_id": channel, "channel_name": "general", "user_id": user, "user_name": user,
                          "command": command, "text": text, "api_app_id": "A0PARLEY", "is_enterprise_install": "false",
                          "response_url": f"{self.base_url}/respond/{key}", "trigger_id": "1.2.3"})
        return body, key

    def shortcut(self, callback_id: str, message: Message, *, user: str) -> tuple[str, str]:
        """A message shortcut's request (form-encoded `payload`, as Slack sends interactivity) on
        `message`, and its response_url key."""
        key = f"r{next(_EVENT_IDS)}"
        payload = {"type": "message_action", "callback_id": callback_id, "trigger_id": "1.2.3",
                   "action_ts": self.next_ts(), "team": {"id": self.team_id, "domain": "fake"},
                   "channel": {"id": message.channel, "name": "general"},
                   "user": {"id": user, "name": user, "team_id": self.team_id},
                   "message": message.payload(), "message_ts": message.ts,
                   "response_url": f"{self.base_url}/respond/{key}", "api_app_id": "A0PARLEY",
                   "token": "legacy", "is_enterprise_install": False}
        return urlencode({"payload": json.dumps(payload)}), key

    def assistant_thread_started(self, *, user: str, channel: str = "D0PANEL", viewing: str = "C0GENERAL") -> dict:
        """The user opened Parley's side panel while looking at channel `viewing`."""
        thread_ts = self.next_ts()
        thread = {"user_id": user, "channel_id": channel, "thread_ts": thread_ts,
                  "context": {"channel_id": viewing, "team_id": self.team_id, "enterprise_id": ""}}
        return self.event_body({"type": "assistant_thread_started", "assistant_thread": thread,
                                "event_ts": self.next_ts()})

    def assistant_context_changed(self, *, user: str, channel: str, thread_ts: str, viewing: str) -> dict:
        thread = {"user_id": user, "channel_id": channel, "thread_ts": thread_ts,
                  "context": {"channel_id": viewing, "team_id": self.team_id, "enterprise_id": ""}}
        return self.event_body({"type": "assistant_thread_context_changed", "assistant_thread": thread,
                                "event_ts": self.next_ts()})

    def block_action(self, message: Message, value: str, *, user: str, action_id: str = "parley_feedback",
                     action_ts: str | None = None) -> str:
        """A press on a button of `message` (form-encoded `payload`, as Slack sends interactivity)."""
        payload = {"type": "block_actions", "trigger_id": f"tr-{next(_EVENT_IDS)}", "api_app_id": "A0PARLEY",
                   "team": {"id": self.team_id, "domain": "fake"}, "token": "legacy", "is_enterprise_install": False,
                   "user": {"id": user, "name": user, "team_id": self.team_id},
                   "container": {"type": "message", "message_ts": message.ts, "channel_id": message.channel,
                                 "thread_ts": message.thread_ts, "is_ephemeral": False},
                   "channel": {"id": message.channel, "name": "general"},
                   "message": {**message.payload(), "blocks": message.blocks},
                   "actions": [{"type": "feedback_buttons", "action_id": action_id, "block_id": "b",
                                "value": value, "action_ts": action_ts or self.next_ts()}]}
        return urlencode({"payload": json.dumps(payload)})

    def home_opened(self, *, user: str) -> dict:
        return self.event_body({"type": "app_home_opened", "user": user, "channel": "D0HOME", "tab": "home",
                                "event_ts": self.next_ts()})

    def responses_for(self, key: str) -> list[dict]:
        return [r for r in self.responses if r["key"] == key]

    async def post_to_app(self, url: str, body: dict | str, *, secret: str | None = None, retry_num: int | None = None,
                          timestamp: int | None = None, signature: str | None = None) -> int:
        """POST an Events API (dict -> JSON) or slash-command (str, form) request, signed like Slack."""
        raw = json.dumps(body) if isinstance(body, dict) else body
        ts = str(int(time.time()) if timestamp is None else timestamp)
        headers = {"Content-Type": "application/json" if isinstance(body, dict) else "application/x-www-form-urlencoded",
                   "X-Slack-Request-Timestamp": ts,
                   "X-Slack-Signature": signature or sign(secret or self.signing_secret, ts, raw)}
        if retry_num is not None:
            headers.update({"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"})
        async with aiohttp.ClientSession() as session:
            async with session.post(url, data=raw.encode(), headers=headers) as resp:
                await resp.read()
                return resp.status

    # ---- Web API -----------------------------------------------------------------------------

    async def _params(self, request: web.Request) -> dict:
        params: dict = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                params.update(await request.json())
            else:
                params.update(dict(await request.post()))
        return params

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await self._params(request)
        auth = request.headers.get("Authorization", "")
        token = self.app_token if method == "apps.connections.open" else self.bot_token
        authorized = auth == f"Bearer {token}" or params.get("token") == token
        self.calls.append(Call(method, params, authorized))
        if self.rate_limits.get(method):
            retry_after = self.rate_limits[method].pop(0)
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429,
                                     headers={"Retry-After": str(retry_after)})
        if not authorized:
            return web.json_response({"ok": False, "error": "not_authed" if not auth else "invalid_auth"})
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None or method in self.unsupported:
            return web.json_response({"ok": False, "error": "unknown_method"})
        try:
            return web.json_response({"ok": True, **handler(params)})
        except KeyError as exc:
            return web.json_response({"ok": False, "error": exc.args[0]})

    def _m_auth_test(self, p: dict) -> dict:
        return {"url": "https://fake.slack.test/", "team": "Fake Team", "user": "parley", "team_id": self.team_id,
                "user_id": self.bot_user_id, "bot_id": self.bot_id, "is_enterprise_install": False}

    def _m_apps_connections_open(self, p: dict) -> dict:
        return {"url": f"ws://127.0.0.1:{self.port}/link"}

    def _m_chat_postMessage(self, p: dict) -> dict:
        if not p.get("channel"):
            raise KeyError("channel_not_found")
        text = p.get("text") or ""
        if not text.strip():
            raise KeyError("no_text")
        if len(text) > 40000:
            raise KeyError("msg_too_long")
        ts = self.next_ts()
        msg = Message(p["channel"], ts, text, self.bot_user_id, p.get("thread_ts") or None, self.bot_id, [text],
                      blocks=_blocks(p.get("blocks")))
        self.messages[(msg.channel, ts)] = msg
        return {"channel": msg.channel, "ts": ts, "message": {"type": "message", "text": text, "ts": ts,
                                                              "user": self.bot_user_id, "bot_id": self.bot_id}}

    def _m_chat_update(self, p: dict) -> dict:
        msg = self.messages.get((p.get("channel"), p.get("ts")))
        if msg is None or msg.deleted:
            raise KeyError("message_not_found")
        if msg.user != self.bot_user_id:
            raise KeyError("cant_update_message")
        text = p.get("text") or ""
        if len(text) > 40000:
            raise KeyError("msg_too_long")
        msg.text = text
        msg.history.append(text)
        if "blocks" in p:
            msg.blocks = _blocks(p.get("blocks"))
        return {"channel": msg.channel, "ts": msg.ts, "text": text}

    def _m_chat_delete(self, p: dict) -> dict:
        msg = self.messages.get((p.get("channel"), p.get("ts")))
        if msg is None or msg.deleted:
            raise KeyError("message_not_found")
        msg.deleted = True
        return {"channel": msg.channel, "ts": msg.ts}

    def _m_chat_postEphemeral(self, p: dict) -> dict:
        if p.get("user") not in self.users:
            raise KeyError("user_not_in_channel")
        self.ephemerals.append({"channel": p.get("channel"), "user": p.get("user"), "text": p.get("text", ""),
                                "thread_ts": p.get("thread_ts")})
        return {"message_ts": self.next_ts()}

    def _m_conversations_replies(self, p: dict) -> dict:
        """A thread, oldest first, the parent included; `latest` (exclusive unless `inclusive`) and
        cursor paging as Slack does them."""
        thread, latest = p.get("ts"), float(p.get("latest") or "inf")
        inclusive = str(p.get("inclusive", "")).lower() in ("1", "true")
        found = sorted((m for m in self.messages.values() if m.channel == p.get("channel") and not m.deleted
                        and (m.ts == thread or m.thread_ts == thread)
                        and (float(m.ts) < latest or (inclusive and float(m.ts) == latest))), key=lambda m: float(m.ts))
        if not found:
            raise KeyError("thread_not_found")
        start, limit = int(p.get("cursor") or 0), int(p.get("limit") or 1000)
        page = found[start:start + limit]
        more = start + limit < len(found)
        return {"messages": [m.payload() for m in page], "has_more": more,
                "response_metadata": {"next_cursor": str(start + limit) if more else ""}}

    def _m_conversations_history(self, p: dict) -> dict:
        """A channel's top-level messages (thread parents with their reply_count), newest first,
        after `oldest`, with cursor paging as Slack does it."""
        channel, oldest = p.get("channel"), float(p.get("oldest") or 0)
        if not str(channel or "").startswith(("C", "G", "D")):
            raise KeyError("channel_not_found")
        live = [m for m in self.messages.values() if m.channel == channel and not m.deleted]
        top = sorted((m for m in live if (m.thread_ts in (None, m.ts)) and float(m.ts) > oldest),
                     key=lambda m: float(m.ts), reverse=True)
        start, limit = int(p.get("cursor") or 0), int(p.get("limit") or 100)
        page = top[start:start + limit]
        more = start + limit < len(top)
        out = []
        for m in page:
            data = m.payload()
            replies = sum(1 for r in live if r.thread_ts == m.ts and r.ts != m.ts)
            if replies:
                data.update(thread_ts=m.ts, reply_count=replies)
            out.append(data)
        return {"messages": out, "has_more": more, "response_metadata": {"next_cursor": str(start + limit) if more else ""}}

    # ---- native streaming, the assistant panel, views ----------------------------------------

    def _m_chat_startStream(self, p: dict) -> dict:
        channel, thread_ts = p.get("channel") or "", p.get("thread_ts") or ""
        if not channel:
            raise KeyError("channel_not_found")
        if not thread_ts:
            raise KeyError("invalid_thread_ts")
        if not channel.startswith("D") and not (p.get("recipient_user_id") and p.get("recipient_team_id")):
            raise KeyError("missing_recipient_user_id")  # required when streaming to channels
        ts, text = self.next_ts(), p.get("markdown_text") or ""
        msg = Message(channel, ts, text, self.bot_user_id, thread_ts, self.bot_id, [text], streaming=True,
                      streamed=True)
        self.messages[(channel, ts)] = msg
        return {"channel": channel, "ts": ts}

    def _streaming(self, p: dict) -> Message:
        msg = self.messages.get((p.get("channel"), p.get("ts")))
        if msg is None or msg.deleted:
            raise KeyError("message_not_found")
        if not msg.streaming:
            raise KeyError("message_not_in_streaming_state")
        return msg

    def _m_chat_appendStream(self, p: dict) -> dict:
        msg = self._streaming(p)
        if not p.get("markdown_text"):
            raise KeyError("no_text")
        msg.text += p["markdown_text"]
        msg.history.append(msg.text)
        return {"channel": msg.channel, "ts": msg.ts}

    def _m_chat_stopStream(self, p: dict) -> dict:
        msg = self._streaming(p)
        if p.get("markdown_text"):
            msg.text += p["markdown_text"]
            msg.history.append(msg.text)
        msg.streaming = False
        msg.blocks = _blocks(p.get("blocks"))
        return {"channel": msg.channel, "ts": msg.ts, "message": {"text": msg.text, "ts": msg.ts}}

    def _m_assistant_threads_setStatus(self, p: dict) -> dict:
        self.statuses.append({"channel": p.get("channel_id"), "thread_ts": p.get("thread_ts"),
                              "status": p.get("status", ""), "at": time.monotonic()})
        return {}

    def _m_assistant_threads_setTitle(self, p: dict) -> dict:
        self.titles.append({"channel": p.get("channel_id"), "thread_ts": p.get("thread_ts"), "title": p.get("title")})
        return {}

    def _m_assistant_threads_setSuggestedPrompts(self, p: dict) -> dict:
        self.prompts.append({"channel": p.get("channel_id"), "thread_ts": p.get("thread_ts"),
                             "title": p.get("title"), "prompts": _blocks(p.get("prompts"))})
        return {}

    def _m_views_publish(self, p: dict) -> dict:
        view = p.get("view")
        self.views[p.get("user_id")] = json.loads(view) if isinstance(view, str) else view
        return {"view": {"id": "V0HOME"}}

    def _m_views_open(self, p: dict) -> dict:
        if not p.get("trigger_id"):
            raise KeyError("invalid_trigger_id")
        view = p.get("view")
        self.opened_views.append(json.loads(view) if isinstance(view, str) else view)
        return {"view": {"id": "V0MODAL"}}

    def _m_users_info(self, p: dict) -> dict:
        return {"user": self.users[p.get("user")] if p.get("user") in self.users else _missing("user_not_found")}

    def _m_conversations_info(self, p: dict) -> dict:
        channel = p.get("channel") or _missing("channel_not_found")
        kind = self.channel_kinds.get(channel) or {"D": "im", "G": "private"}.get(channel[:1], "public")
        return {"channel": {"id": channel, "is_channel": kind in ("public", "private"), "is_group": False,
                            "is_im": kind == "im", "is_mpim": kind == "mpim", "is_private": kind != "public",
                            "is_archived": False, "is_ext_shared": False}}

    def _m_files_info(self, p: dict) -> dict:
        return {"file": self.files[p.get("file")] if p.get("file") in self.files else _missing("file_not_found")}

    # ---- files and response_url --------------------------------------------------------------

    async def _download(self, request: web.Request) -> web.Response:
        file_id = request.match_info["team_file"].split("-", 1)[1]
        authorized = request.headers.get("Authorization") == f"Bearer {self.bot_token}"
        self.downloads.append({"file": file_id, "authorized": authorized})
        if not authorized:  # what Slack does: the sign-in page, not an error status
            return web.Response(text="<html><body>Sign in to Slack</body></html>", content_type="text/html")
        if file_id not in self.file_data:
            return web.Response(status=404)
        return web.Response(body=self.file_data[file_id], content_type=self.files[file_id]["mimetype"])

    async def _respond(self, request: web.Request) -> web.Response:
        payload = await request.json()
        self.responses.append({"key": request.match_info["key"], **payload})
        return web.Response(text="ok")

    # ---- Socket Mode -------------------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": 1, "debug_info": {"host": "fake"},
                            "connection_info": {"app_id": "A0PARLEY"}})
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                data = json.loads(msg.data)
                if data.get("envelope_id"):
                    self.socket_acks[data["envelope_id"]] = data
        self.sockets.remove(ws)
        return ws

    async def push(self, payload: dict, *, kind: str = "events_api", retry_attempt: int = 0) -> str:
        """Send an envelope over the app's Socket Mode connection; returns its envelope id."""
        await self.wait_for(lambda: bool(self.sockets), 10, "the app's Socket Mode connection")
        envelope_id = f"env-{next(_EVENT_IDS)}"
        await self.sockets[-1].send_json({"envelope_id": envelope_id, "type": kind, "payload": payload,
                                          "accepts_response_payload": kind != "events_api",
                                          "retry_attempt": retry_attempt,
                                          "retry_reason": "timeout" if retry_attempt else ""})
        return envelope_id

    def command_payload(self, command: str, text: str, *, user: str, channel: str = "C0GENERAL") -> tuple[dict, str]:
        body, key = self.command(command, text, user=user, channel=channel)
        from urllib.parse import parse_qsl

        return dict(parse_qsl(body)), key

    # ---- waiting -----------------------------------------------------------------------------

    async def wait_for(self, predicate, timeout: float = 30.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.02)


def _blocks(value) -> list:
    """Blocks (or prompts) as a request carries them: a list, or JSON text in a form body."""
    if isinstance(value, str):
        return json.loads(value) if value else []
    return list(value or [])


def _missing(error: str):
    raise KeyError(error)
