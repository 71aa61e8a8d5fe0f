"""A loopback fake of Discord's side: the REST API (v10), the gateway websocket and the CDN.

discord.py runs unmodified against it: it logs in over REST, asks /gateway/bot where the gateway
is, connects, identifies, and then receives READY, GUILD_CREATE and whatever events a test
dispatches, shaped as Discord sends them. What the bot does comes back as REST calls, recorded in
`calls`, and as state a test can read: messages (with every edit), threads, interaction replies.
Like Discord, the fake echoes the bot's own messages back over the gateway (MESSAGE_CREATE) and
announces threads the bot opens (THREAD_CREATE).
"""
from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from aiohttp import WSMsgType, web

API = "/api/v10"
DISCORD_EPOCH_MS = 1420070400000
EPHEMERAL = 1 << 6


BODY = web.RequestKey("json_body", object)


def _json(data: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    """JSON exactly as Discord labels it: discord.py parses only `application/json` bodies."""
    return web.Response(body=json.dumps(data).encode(), status=status,
                        headers={"Content-Type": "application/json", **(headers or {})})


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


@dataclass
class Call:
    method: str
    path: str
    json: Any
    query: dict
    at: float
    authorized: bool


@dataclass
class FakeMessage:
    id: int
    channel_id: int
    author_id: int
    history: list[str]  # the content, then each edit
    deleted: bool = False
    reference: int | None = None
    flags: int = 0
    components: list = field(default_factory=list)  # the latest action rows (e.g. feedback buttons)

    @property
    def text(self) -> str:
        return self.history[-1]


@dataclass
class FakeInteraction:
    id: int
    token: str
    replies: list[dict] = field(default_factory=list)  # {"kind", "type", "content", "ephemeral"}

    @property
    def texts(self) -> list[str]:
        return [r["content"] for r in self.replies if r.get("content")]


class FakeDiscord:
    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.token = "MTA-fake." + secrets.token_urlsafe(18)  # shaped like nothing real; must never leak
        self.bot_id = self.snowflake()
        self.app_id = self.bot_id
        self.bot_user = self.user_payload(self.bot_id, "Parley", bot=True)
        self.users: dict[int, dict] = {self.bot_id: self.bot_user}
        self.guilds: dict[int, dict] = {}
        self.channels: dict[int, dict] = {}
        self.members: dict[tuple[int, int], dict] = {}
        self.messages: dict[int, FakeMessage] = {}
        self.interactions: dict[str, FakeInteraction] = {}
        self.files: dict[str, bytes] = {}
        self.commands: list[dict] = []
        self.calls: list[Call] = []
        self.identify: dict | None = None
        self.people: dict[str, int] = {}  # names a test gave its users
        self.fail_thread_creation = False
        self.rate_limit_next_edits = 0  # answer this many message edits with a 429 first
        self.refused_edits: list[str | None] = []  # the content of edits answered with a 429
        self._ws: web.WebSocketResponse | None = None
        self._sessions: list[tuple[web.WebSocketResponse, tuple[int, int]]] = []  # sharded sessions
        self.ready_shards: list[tuple[int, int]] = []  # (shard id, count) of each session made ready
        self._seq = 0
        self._runner: web.AppRunner | None = None
        self._site_port = 0
        self.connected = asyncio.Event()

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> FakeDiscord:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/cdn/attachments/{path:.*}", self._cdn)
        app.router.add_route("*", API + "/{path:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._site_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()
        for ws, _ in self._sessions:
            if not ws.closed:
                await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._site_port}"

    @property
    def api_url(self) -> str:
        return self.base_url + "/api"  # the adapter adds the version, as it does for Discord's own

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self._site_port}/gateway"

    # ---- the world ---------------------------------------------------------------------------

    def snowflake(self) -> int:
        return ((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22) + next(self._ids)

    @staticmethod
    def user_payload(uid: int, name: str, bot: bool = False) -> dict:
        return {"id": str(uid), "username": name.lower(), "global_name": name, "discriminator": "0",
                "avatar": None, "bot": bot, "public_flags": 0, "flags": 0, "verified": True, "mfa_enabled": False}

    def add_guild(self, name: str = "Team", owner: str = "Owner") -> int:
        """A guild with an owner, a #general channel, @everyone (default permissions) and Parley's
        own managed role; Parley is a member. Returns the guild id."""
        gid = self.snowflake()
        owner_id = self.add_user(owner)
        everyone = {"id": str(gid), "name": "@everyone", "permissions": str(1024 | 2048 | 65536 | (1 << 38) | (1 << 35)),
                    "position": 0, "color": 0, "hoist": False, "managed": False, "mentionable": False, "flags": 0}
        bot_role = {"id": str(self.snowflake()), "name": "Parley", "permissions": "309237713920", "position": 1,
                    "color": 0, "hoist": False, "managed": True, "mentionable": False, "flags": 0,
                    "tags": {"bot_id": str(self.bot_id)}}
        self.guilds[gid] = {
            "id": str(gid), "name": name, "icon": None, "owner_id": str(owner_id), "roles": [everyone, bot_role],
            "emojis": [], "stickers": [], "features": [], "member_count": 2, "large": False, "unavailable": False,
            "joined_at": _now_iso(), "verification_level": 0, "default_message_notifications": 0,
            "explicit_content_filter": 0, "mfa_level": 0, "system_channel_id": None, "system_channel_flags": 0,
            "premium_tier": 0, "preferred_locale": "en-US", "nsfw_level": 0, "afk_timeout": 300,
            "voice_states": [], "presences": [], "stage_instances": [], "guild_scheduled_events": [],
            "soundboard_sounds": [], "channels": [], "threads": [], "members": [],
        }
        self.add_member(gid, owner_id)
        self.add_member(gid, self.bot_id, roles=[int(bot_role["id"])])
        self.add_channel(gid, "general")
        return gid

    def add_user(self, name: str, bot: bool = False) -> int:
        uid = self.snowflake()
        self.users[uid] = self.user_payload(uid, name, bot=bot)
        return uid

    def add_member(self, gid: int, uid: int, roles: list[int] = ()) -> dict:
        member = {"user": self.users[uid], "nick": None, "avatar": None, "roles": [str(r) for r in roles],
                  "joined_at": _now_iso(), "deaf": False, "mute": False, "flags": 0, "pending": False,
                  "communication_disabled_until": None}
        self.members[(gid, uid)] = member
        self.guilds[gid]["members"] = [m for (g, _), m in self.members.items() if g == gid]
        return member

    def add_role(self, gid: int, name: str, permissions: int = 0) -> int:
        rid = self.snowflake()
        self.guilds[gid]["roles"].append({"id": str(rid), "name": name, "permissions": str(permissions),
                                          "position": len(self.guilds[gid]["roles"]), "color": 0, "hoist": False,
                                          "managed": False, "mentionable": True, "flags": 0})
        return rid

    def add_channel(self, gid: int, name: str) -> int:
        cid = self.snowflake()
        channel = {"id": str(cid), "type": 0, "guild_id": str(gid), "name": name, "position": len(self.channels),
                   "permission_overwrites": [], "parent_id": None, "topic": None, "nsfw": False,
                   "last_message_id": None, "rate_limit_per_user": 0, "default_auto_archive_duration": 1440,
                   "flags": 0}
        self.channels[cid] = channel
        self.guilds[gid]["channels"].append(channel)
        return cid

    async def add_private_channel(self, gid: int, name: str, members: list[int] = ()) -> int:
        """A channel @everyone cannot view (its permission overwrites deny View Channel to the guild's
        @everyone role and allow it to Parley and `members`); announced to a connected bot."""
        view = str(1 << 10)
        cid = self.add_channel(gid, name)
        self.channels[cid]["permission_overwrites"] = [
            {"id": str(gid), "type": 0, "allow": "0", "deny": view},
            *({"id": str(uid), "type": 1, "allow": view, "deny": "0"} for uid in (self.bot_id, *members))]
        if self.connected.is_set():
            await self.dispatch("CHANNEL_CREATE", self.channels[cid])
        return cid

    async def set_private(self, cid: int, private: bool) -> None:
        """A channel made private (View Channel denied to @everyone) or public again (no overwrites),
        as a moderator edits its permissions: CHANNEL_UPDATE to a connected bot."""
        channel = self.channels[cid]
        view = str(1 << 10)
        channel["permission_overwrites"] = [{"id": channel["guild_id"], "type": 0, "allow": "0", "deny": view},
                                            {"id": str(self.bot_id), "type": 1, "allow": view, "deny": "0"}
                                            ] if private else []
        await self.dispatch("CHANNEL_UPDATE", channel)

    async def add_thread(self, parent: int, name: str, owner: int, *, private: bool = True) -> int:
        """A thread a person opened in `parent` (not on a message): private (type 12, only those
        added can read it) or public (type 11); announced to a connected bot, which was added."""
        tid = self.snowflake()
        gid = self.channels[parent]["guild_id"]
        thread = {
            "id": str(tid), "type": 12 if private else 11, "guild_id": gid, "parent_id": str(parent),
            "owner_id": str(owner), "name": name, "last_message_id": None, "message_count": 0,
            "member_count": 2, "rate_limit_per_user": 0, "flags": 0, "total_message_sent": 0, "applied_tags": [],
            "thread_metadata": {"archived": False, "auto_archive_duration": 1440, "archive_timestamp": _now_iso(),
                                "locked": False, "invitable": False, "create_timestamp": _now_iso()},
        }
        self.channels[tid] = thread
        self.guilds[int(gid)]["threads"].append(thread)
        if self.connected.is_set():
            member = {"id": str(tid), "user_id": str(self.bot_id), "join_timestamp": _now_iso(), "flags": 1}
            await self.dispatch("THREAD_CREATE", {**thread, "newly_created": True, "member": member})
        return tid

    def add_history(self, channel_id: int, user_id: int, texts: list[str]) -> list[FakeMessage]:
        """Messages already in a channel, oldest first (said before Parley was asked; no event is sent)."""
        made = [FakeMessage(self.snowflake(), channel_id, user_id, [text]) for text in texts]
        self.messages.update((m.id, m) for m in made)
        return made

    def channel_named(self, gid: int, name: str) -> int:
        return next(int(c["id"]) for c in self.guilds[gid]["channels"] if c["name"] == name)

    def add_dm(self, uid: int) -> int:
        cid = self.snowflake()
        self.channels[cid] = {"id": str(cid), "type": 1, "recipients": [self.users[uid]], "last_message_id": None,
                              "flags": 0}
        return cid

    def add_file(self, channel_id: int, filename: str, data: bytes, content_type: str) -> dict:
        """An attachment object whose url serves `data` from the fake CDN."""
        aid = self.snowflake()
        path = f"{channel_id}/{aid}/{filename}"
        self.files[path] = data
        url = f"{self.base_url}/cdn/attachments/{channel_id}/{aid}/{quote(filename, safe='')}?ex=0&is=0&hm=0"
        return {"id": str(aid), "filename": filename, "size": len(data), "url": url, "proxy_url": url,
                "content_type": content_type, "flags": 0}

    # ---- what the bot did --------------------------------------------------------------------

    def bot_messages(self, channel_id: int, include_deleted: bool = False) -> list[FakeMessage]:
        return [m for m in self.messages.values() if m.channel_id == channel_id and m.author_id == self.bot_id
                and (include_deleted or not m.deleted)]

    def threads_of(self, channel_id: int) -> list[dict]:
        return [c for c in self.channels.values() if c.get("parent_id") == str(channel_id) and c["type"] == 11]

    def calls_of(self, method: str, pattern: str) -> list[Call]:
        rx = re.compile(pattern)
        return [c for c in self.calls if c.method == method and rx.fullmatch(c.path)]

    # ---- gateway -----------------------------------------------------------------------------

    async def dispatch(self, event: str, data: dict) -> int:
        """Send one DISPATCH to the bot; returns its sequence number. With shards connected, as
        Discord routes it: a guild's events to every session of shard (guild_id >> 22) % count,
        the rest (DMs) to shard 0's."""
        self._seq += 1
        frame = json.dumps({"op": 0, "t": event, "s": self._seq, "d": data})
        sessions = [ws for ws, shard in self._sessions
                    if not ws.closed and shard == self._shard_of(event, data, shard)]
        if not self._sessions:
            assert self._ws is not None and not self._ws.closed, "the bot is not connected"
            sessions = [self._ws]
        for ws in sessions:
            await ws.send_str(frame)
        return self._seq

    @staticmethod
    def _shard_of(event: str, data: dict, shard: tuple[int, int]) -> tuple[int, int]:
        """The shard of the session (`shard`'s count) that Discord sends this event to."""
        gid = data.get("id") if event == "GUILD_CREATE" else data.get("guild_id")
        return ((int(gid) >> 22) % shard[1] if gid else 0, shard[1])

    @staticmethod
    def shard_of_guild(gid: int, count: int) -> int:
        return (gid >> 22) % count

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._ws = ws
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}}))
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            payload = json.loads(msg.data)
            op = payload.get("op")
            if op == 1:  # heartbeat
                await ws.send_str(json.dumps({"op": 11}))
            elif op == 2:  # identify
                self.identify = payload["d"]
                if payload["d"].get("token") != self.token:
                    await ws.close(code=4004, message=b"Authentication failed.")
                    break
                shard = payload["d"].get("shard")
                if shard:  # a sharded client: this session gets its shard's events only
                    self._sessions.append((ws, (int(shard[0]), int(shard[1]))))
                    await self._ready_shard(ws, (int(shard[0]), int(shard[1])))
                else:
                    await self._ready()
            elif op == 6:  # resume: to the session resuming
                if any(session is ws for session, _ in self._sessions):
                    self._seq += 1
                    await ws.send_str(json.dumps({"op": 0, "t": "RESUMED", "s": self._seq, "d": {}}))
                else:
                    await self.dispatch("RESUMED", {})
        return ws

    async def _ready(self) -> None:
        await self.dispatch("READY", self._ready_payload(list(self.guilds)))
        for guild in self.guilds.values():
            await self.dispatch("GUILD_CREATE", guild)
        self.connected.set()

    def _ready_payload(self, guilds: list[int], shard: tuple[int, int] | None = None) -> dict:
        return {"v": 10, "user": self.bot_user, "guilds": [{"id": str(g), "unavailable": True} for g in guilds],
                "session_id": secrets.token_hex(16), "resume_gateway_url": self.gateway_url, "private_channels": [],
                "relationships": [], "presences": [], "application": {"id": str(self.app_id), "flags": 1 << 19},
                "session_type": "normal", "geo_ordered_rtc_regions": [], "_trace": ["fake-gateway"],
                **({"shard": list(shard)} if shard else {})}

    async def _ready_shard(self, ws: web.WebSocketResponse, shard: tuple[int, int]) -> None:
        """READY and GUILD_CREATE on one shard's session: the guilds of that shard."""
        guilds = [g for g in self.guilds if self.shard_of_guild(g, shard[1]) == shard[0]]
        frames = [("READY", self._ready_payload(guilds, shard)), *(("GUILD_CREATE", self.guilds[g]) for g in guilds)]
        for event, data in frames:
            self._seq += 1
            await ws.send_str(json.dumps({"op": 0, "t": event, "s": self._seq, "d": data}))
        self.ready_shards.append(shard)
        self.connected.set()

    def message_payload(self, msg: FakeMessage, *, guild_id: int | None, content: str | None = None,
                        mentions: list[int] = (), mention_roles: list[int] = (), attachments: list[dict] = (),
                        type_: int = 0) -> dict:
        author = self.users[msg.author_id]
        data = {
            "id": str(msg.id), "channel_id": str(msg.channel_id), "author": author,
            "content": msg.text if content is None else content, "timestamp": _now_iso(), "edited_timestamp": None,
            "tts": False, "mention_everyone": False, "mention_roles": [str(r) for r in mention_roles],
            "mentions": [], "attachments": list(attachments), "embeds": [], "pinned": False, "type": type_,
            "flags": msg.flags, "components": msg.components,
        }
        if guild_id is not None:
            data["guild_id"] = str(guild_id)
            member = self.members.get((guild_id, msg.author_id))
            if member is not None:
                data["member"] = {k: v for k, v in member.items() if k != "user"}
        for uid in mentions:
            user = dict(self.users[uid])
            member = self.members.get((guild_id, uid)) if guild_id is not None else None
            if member is not None:
                user["member"] = {k: v for k, v in member.items() if k != "user"}
            data["mentions"].append(user)
        if msg.reference:
            data["message_reference"] = {"message_id": str(msg.reference), "channel_id": str(msg.channel_id),
                                         "type": 0}
        return data

    def _guild_of(self, channel_id: int) -> int | None:
        gid = self.channels.get(channel_id, {}).get("guild_id")
        return int(gid) if gid else None

    async def delete(self, message_id: int) -> None:
        """Somebody deletes a message: Discord tells the bot MESSAGE_DELETE (ids only)."""
        msg = self.messages[message_id]
        msg.deleted = True
        data = {"id": str(message_id), "channel_id": str(msg.channel_id)}
        gid = self._guild_of(msg.channel_id)
        if gid is not None:
            data["guild_id"] = str(gid)
        await self.dispatch("MESSAGE_DELETE", data)

    async def say(self, channel_id: int, user_id: int, text: str, *, mention: bool = False,
                  mention_role: bool = False, attachments: list[dict] = (), reply_to: int | None = None) -> dict:
        """A person posts a message (mentioning Parley when asked); returns the MESSAGE_CREATE payload."""
        gid = self._guild_of(channel_id)
        mentions = []
        roles = []
        if mention:
            text = f"<@{self.bot_id}> {text}"
            mentions.append(self.bot_id)
        if mention_role:
            role = next(r for r in self.guilds[gid]["roles"] if r.get("tags", {}).get("bot_id") == str(self.bot_id))
            text = f"<@&{role['id']}> {text}"
            roles.append(int(role["id"]))
        msg = FakeMessage(self.snowflake(), channel_id, user_id, [text], reference=reply_to)
        self.messages[msg.id] = msg
        payload = self.message_payload(msg, guild_id=gid, mentions=mentions, mention_roles=roles,
                                       attachments=attachments, type_=19 if reply_to else 0)
        if reply_to:  # Discord sends the message replied to along (one level; older links by id)
            replied = self.messages[reply_to]
            payload["referenced_message"] = self.message_payload(replied, guild_id=gid,
                                                                 type_=19 if replied.reference else 0)
        await self.dispatch("MESSAGE_CREATE", payload)
        return payload

    async def slash(self, gid: int, channel_id: int, user_id: int, command: str, options: dict | None = None, *,
                    permissions: int = 0, focused: str | None = None) -> FakeInteraction:
        """A person runs an application command (or, with `focused`, types into an option that
        autocompletes); returns the interaction, whose replies fill in as the bot answers."""
        cmd = next(c for c in self.commands if c["name"] == command)
        opts = []
        for name, value in (options or {}).items():
            option = {"name": name, "type": 3, "value": value}
            if name == focused:
                option["focused"] = True
            opts.append(option)
        interaction = FakeInteraction(self.snowflake(), "itok-" + secrets.token_hex(12))
        self.interactions[interaction.token] = interaction
        member = dict(self.members[(gid, user_id)])
        member["permissions"] = str(permissions)
        await self.dispatch("INTERACTION_CREATE", {
            "id": str(interaction.id), "application_id": str(self.app_id), "type": 4 if focused else 2,
            "data": {"id": cmd["id"], "name": command, "type": 1, "options": opts},
            "guild_id": str(gid), "channel_id": str(channel_id), "channel": self.channels[channel_id],
            "member": member, "token": interaction.token, "version": 1,
            "app_permissions": "309237713920", "locale": "en-US", "guild_locale": "en-US", "entitlements": [],
            "authorizing_integration_owners": {"0": str(gid)}, "context": 0, "attachment_size_limit": 10485760,
        })
        return interaction

    def _interaction(self, gid: int | None, channel_id: int, user_id: int, data: dict,
                     permissions: int = 0, type_: int = 2) -> tuple[FakeInteraction, dict]:
        interaction = FakeInteraction(self.snowflake(), "itok-" + secrets.token_hex(12))
        self.interactions[interaction.token] = interaction
        payload = {"id": str(interaction.id), "application_id": str(self.app_id), "type": type_, "data": data,
                   "channel_id": str(channel_id), "channel": self.channels[channel_id], "token": interaction.token,
                   "version": 1, "app_permissions": "309237713920", "locale": "en-US", "entitlements": [],
                   "attachment_size_limit": 10485760}
        if gid is None:  # in a DM: the user, no member or guild
            payload.update(user=self.users[user_id], context=1,
                           authorizing_integration_owners={"0": str(user_id)})
        else:
            member = dict(self.members[(gid, user_id)])
            member["permissions"] = str(permissions)
            payload.update(guild_id=str(gid), member=member, guild_locale="en-US", context=0,
                           authorizing_integration_owners={"0": str(gid)})
        return interaction, payload

    async def press(self, gid: int, user_id: int, message_id: int, custom_id: str) -> FakeInteraction:
        """A person presses the button `custom_id` on a message (a component interaction)."""
        msg = self.messages[message_id]
        interaction, payload = self._interaction(gid, msg.channel_id, user_id,
                                                 {"custom_id": custom_id, "component_type": 2}, type_=3)
        payload["message"] = self.message_payload(msg, guild_id=gid)
        await self.dispatch("INTERACTION_CREATE", payload)
        return interaction

    async def slash_dm(self, channel_id: int, user_id: int, command: str) -> FakeInteraction:
        """A person runs an application command (without options) in their DM with the bot."""
        cmd = next(c for c in self.commands if c["name"] == command)
        interaction, payload = self._interaction(None, channel_id, user_id,
                                                 {"id": cmd["id"], "name": command, "type": 1, "options": []})
        await self.dispatch("INTERACTION_CREATE", payload)
        return interaction

    async def message_menu(self, gid: int, channel_id: int, user_id: int, name: str, message_id: int, *,
                           permissions: int = 0) -> FakeInteraction:
        """A person picks Apps → `name` on a message (a message context menu command)."""
        cmd = next(c for c in self.commands if c["name"] == name and c.get("type") == 3)
        target = self.messages[message_id]
        resolved = self.message_payload(target, guild_id=self._guild_of(target.channel_id))
        interaction, payload = self._interaction(gid, channel_id, user_id, {
            "id": cmd["id"], "name": name, "type": 3, "target_id": str(message_id),
            "resolved": {"messages": {str(message_id): resolved}}}, permissions)
        await self.dispatch("INTERACTION_CREATE", payload)
        return interaction

    # ---- REST --------------------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler):
        if request.path.startswith(API):
            body = None
            if request.can_read_body:
                raw = await request.read()
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
            auth = request.headers.get("Authorization") == f"Bot {self.token}"
            self.calls.append(Call(request.method, request.path[len(API):], body, dict(request.query),
                                   time.monotonic(), auth))
            request[BODY] = body
        return await handler(request)

    async def _cdn(self, request: web.Request) -> web.Response:
        data = self.files.get(request.match_info["path"])
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data)

    @staticmethod
    def _error(status: int, message: str, code: int = 0) -> web.Response:
        return _json({"message": message, "code": code}, status=status)

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["path"]
        method = request.method
        body = request.get(BODY)
        webhook = path.startswith(("/webhooks/", "/interactions/"))
        if not webhook and request.headers.get("Authorization") != f"Bot {self.token}":
            return self._error(401, "401: Unauthorized")
        for pattern, verb, handler in self._routes():
            match = re.fullmatch(pattern, path)
            if match and verb == method:
                result = handler(body, *match.groups())
                if asyncio.iscoroutine(result):
                    result = await result
                return result
        return self._error(404, f"404: Not Found ({method} {path})")

    def _routes(self):
        return [
            (r"/users/@me", "GET", lambda b: _json(self.bot_user)),
            (r"/oauth2/applications/@me", "GET", self._application),
            (r"/gateway/bot", "GET", lambda b: _json({
                "url": self.gateway_url, "shards": 1,
                "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}})),
            (r"/applications/(\d+)/commands", "PUT", self._sync_commands),
            (r"/users/@me/channels", "POST", self._open_dm),
            (r"/channels/(\d+)", "GET", self._get_channel),
            (r"/channels/(\d+)/messages", "POST", self._create_message),
            (r"/channels/(\d+)/messages", "GET", self._channel_history),
            (r"/channels/(\d+)/messages/(\d+)", "GET", self._get_message),
            (r"/channels/(\d+)/messages/(\d+)", "PATCH", self._edit_message),
            (r"/channels/(\d+)/messages/(\d+)", "DELETE", self._delete_message),
            (r"/channels/(\d+)/messages/(\d+)/threads", "POST", self._start_thread),
            (r"/guilds/(\d+)/members/(\d+)", "GET", self._get_member),
            (r"/interactions/(\d+)/([\w-]+)/callback", "POST", self._interaction_callback),
            (r"/webhooks/(\d+)/([\w-]+)", "POST", self._followup),
            (r"/webhooks/(\d+)/([\w-]+)/messages/(@original|\d+)", "PATCH", self._edit_followup),
        ]

    def _application(self, body) -> web.Response:
        owner = self.users[int(next(iter(self.guilds.values()))["owner_id"])] if self.guilds else self.bot_user
        return _json({
            "id": str(self.app_id), "name": "Parley", "description": "", "icon": None, "bot_public": False,
            "bot_require_code_grant": False, "owner": owner, "verify_key": "00" * 32, "flags": 1 << 19,
            "team": None, "summary": "", "bot": self.bot_user, "redirect_uris": [], "interactions_endpoint_url": None})

    def _sync_commands(self, body, app_id: str) -> web.Response:
        existing = {c["name"]: c for c in self.commands}
        self.commands = []
        for command in body or []:
            command = dict(command)
            command.setdefault("type", 1)
            command.setdefault("description", "")  # Discord answers "" for a context menu's
            command["id"] = existing.get(command["name"], {}).get("id") or str(self.snowflake())
            command.update(application_id=app_id, version=str(self.snowflake()))
            command.setdefault("default_member_permissions", None)
            self.commands.append(command)
        return _json(self.commands)

    def _open_dm(self, body) -> web.Response:
        """The bot opens (or finds) its DM with a user, to write to them."""
        uid = int((body or {}).get("recipient_id") or 0)
        if uid not in self.users:
            return self._error(400, "Invalid Recipient(s)", 50033)
        found = next((cid for cid, c in self.channels.items()
                      if c["type"] == 1 and c["recipients"][0]["id"] == str(uid)), None)
        return _json(self.channels[found if found is not None else self.add_dm(uid)])

    def _get_channel(self, body, cid: str) -> web.Response:
        channel = self.channels.get(int(cid))
        return _json(channel) if channel else self._error(404, "Unknown Channel", 10003)

    def _get_member(self, body, gid: str, uid: str) -> web.Response:
        member = self.members.get((int(gid), int(uid)))
        return _json(member) if member else self._error(404, "Unknown Member", 10007)

    async def _create_message(self, body, cid: str) -> web.Response:
        channel_id = int(cid)
        if channel_id not in self.channels:
            return self._error(404, "Unknown Channel", 10003)
        content = (body or {}).get("content") or ""
        if len(content) > 2000:
            return self._error(400, "Invalid Form Body (content: Must be 2000 or fewer in length.)", 50035)
        reference = ((body or {}).get("message_reference") or {}).get("message_id")
        msg = FakeMessage(self.snowflake(), channel_id, self.bot_id, [content],
                          reference=int(reference) if reference else None, flags=(body or {}).get("flags") or 0)
        msg.components = list((body or {}).get("components") or [])
        self.messages[msg.id] = msg
        gid = self._guild_of(channel_id)
        payload = self.message_payload(msg, guild_id=gid)
        await self.dispatch("MESSAGE_CREATE", payload)  # Discord echoes the bot's own messages
        return _json(payload)

    def _channel_history(self, body, cid: str, query: dict | None = None) -> web.Response:
        """A channel's messages before `before`, newest first, at most `limit` (as Discord pages them)."""
        if query is None:  # this request's query string, as recorded
            query = next(c.query for c in reversed(self.calls) if c.method == "GET"
                         and c.path == f"/channels/{cid}/messages")
        before, limit = int(query.get("before") or 1 << 63), int(query.get("limit") or 50)
        after = int(query.get("after") or 0)
        found = sorted((m for m in self.messages.values() if m.channel_id == int(cid) and not m.deleted
                        and after < m.id < before), key=lambda m: m.id, reverse=True)
        # With `after`, Discord returns the messages right after it (still newest first).
        found = found[-limit:] if after and "before" not in query else found[:limit]
        return _json([self.message_payload(m, guild_id=self._guild_of(int(cid))) for m in found])

    def _get_message(self, body, cid: str, mid: str) -> web.Response:
        msg = self.messages.get(int(mid))
        if msg is None or msg.deleted or msg.channel_id != int(cid):
            return self._error(404, "Unknown Message", 10008)
        return _json(self.message_payload(msg, guild_id=self._guild_of(msg.channel_id)))

    async def _edit_message(self, body, cid: str, mid: str) -> web.Response:
        msg = self.messages.get(int(mid))
        if msg is None or msg.deleted or msg.channel_id != int(cid):
            return self._error(404, "Unknown Message", 10008)
        if self.rate_limit_next_edits > 0:  # as Discord says it (through Cloudflare, hence Via)
            self.rate_limit_next_edits -= 1
            self.refused_edits.append((body or {}).get("content"))
            headers = {"Retry-After": "1", "Via": "1.1 google", "X-RateLimit-Scope": "user",
                       "X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": "0.3",
                       "X-RateLimit-Bucket": "fake-edit-bucket"}
            return _json({"message": "You are being rate limited.", "retry_after": 0.3, "global": False},
                         status=429, headers=headers)
        content = (body or {}).get("content")
        if content is not None:
            if len(content) > 2000:
                return self._error(400, "Invalid Form Body (content: Must be 2000 or fewer in length.)", 50035)
            msg.history.append(content)
        if (body or {}).get("components") is not None:
            msg.components = list(body["components"])
        payload = self.message_payload(msg, guild_id=self._guild_of(msg.channel_id))
        payload["edited_timestamp"] = _now_iso()
        return _json(payload)

    def _delete_message(self, body, cid: str, mid: str) -> web.Response:
        msg = self.messages.get(int(mid))
        if msg is None or msg.deleted:
            return self._error(404, "Unknown Message", 10008)
        msg.deleted = True
        return web.Response(status=204)

    async def _start_thread(self, body, cid: str, mid: str) -> web.Response:
        parent = self.channels.get(int(cid))
        if parent is None or int(mid) not in self.messages:
            return self._error(404, "Unknown Message", 10008)
        if self.fail_thread_creation:
            return self._error(403, "Missing Permissions", 50013)
        name = (body or {}).get("name") or ""
        if not 1 <= len(name) <= 100:
            return self._error(400, "Invalid Form Body (name: Must be between 1 and 100 in length.)", 50035)
        thread_id = int(mid)  # a thread started from a message has the message's id
        thread = {
            "id": str(thread_id), "type": 11, "guild_id": parent["guild_id"], "parent_id": cid,
            "owner_id": str(self.bot_id), "name": name, "last_message_id": None, "message_count": 0,
            "member_count": 1, "rate_limit_per_user": 0, "flags": 0, "total_message_sent": 0, "applied_tags": [],
            "thread_metadata": {"archived": False, "auto_archive_duration": body.get("auto_archive_duration", 1440),
                                "archive_timestamp": _now_iso(), "locked": False, "create_timestamp": _now_iso()},
        }
        self.channels[thread_id] = thread
        self.guilds[int(parent["guild_id"])]["threads"].append(thread)
        member = {"id": str(thread_id), "user_id": str(self.bot_id), "join_timestamp": _now_iso(), "flags": 1}
        await self.dispatch("THREAD_CREATE", {**thread, "newly_created": True, "member": member})
        return _json(thread, status=201)

    def _interaction_callback(self, body, iid: str, token: str) -> web.Response:
        interaction = self.interactions.get(token)
        if interaction is None or str(interaction.id) != iid:
            return self._error(404, "Unknown interaction", 10062)
        if any(r["kind"] == "callback" for r in interaction.replies):
            return self._error(400, "Interaction has already been acknowledged.", 40060)
        kind = body.get("type")
        data = body.get("data") or {}
        reply = {"kind": "callback", "type": kind, "content": data.get("content"),
                 "ephemeral": bool((data.get("flags") or 0) & EPHEMERAL), "choices": data.get("choices")}
        interaction.replies.append(reply)
        response: dict = {"interaction": {"id": iid, "type": 2, "response_message_loading": kind == 5,
                                          "response_message_ephemeral": reply["ephemeral"]}}
        if kind in (4, 5):
            msg = FakeMessage(self.snowflake(), 0, self.bot_id, [data.get("content") or ""],
                              flags=data.get("flags") or 0)
            response["interaction"]["response_message_id"] = str(msg.id)
            response["resource"] = {"type": kind, "message": self.message_payload(msg, guild_id=None)}
        return _json(response)

    def _followup(self, body, app_id: str, token: str) -> web.Response:
        interaction = self.interactions.get(token)
        if interaction is None:
            return self._error(404, "Unknown Webhook", 10015)
        interaction.replies.append({"kind": "followup", "type": None, "content": (body or {}).get("content"),
                                    "ephemeral": bool(((body or {}).get("flags") or 0) & EPHEMERAL)})
        msg = FakeMessage(self.snowflake(), 0, self.bot_id, [(body or {}).get("content") or ""])
        return _json(self.message_payload(msg, guild_id=None))

    def _edit_followup(self, body, app_id: str, token: str, mid: str) -> web.Response:
        interaction = self.interactions.get(token)
        if interaction is None:
            return self._error(404, "Unknown Webhook", 10015)
        interaction.replies.append({"kind": "edit", "type": None, "content": (body or {}).get("content"),
                                    "ephemeral": True})
        msg = FakeMessage(self.snowflake(), 0, self.bot_id, [(body or {}).get("content") or ""])
        return _json(self.message_payload(msg, guild_id=None))
