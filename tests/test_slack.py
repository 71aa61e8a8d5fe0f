"""The Slack adapter end to end: real slack-bolt (HTTP mode, signature checks on), the real Engine
on the packaged model, and a fake of Slack's side on loopback (tests/fake_slack.py) that receives
the Web API calls and serves files. Events are posted to the app signed as Slack signs them.
"""
from __future__ import annotations

import asyncio
import logging
import time

import docgen
import pytest

from adapters.slack import app as slack_module
from adapters.slack import SlackAdapter, slack_configured
from conftest import make_config
from fake_slack import FakeSlack

pytestmark = pytest.mark.timeout(240)

CHANNEL = "C0GENERAL"
ADA, GRACE, LIN = "U0ADA", "U0GRACE", "U0LIN"  # a member, a workspace admin, an admin by config
CURSOR = "▍"


class Harness:
    def __init__(self, fake: FakeSlack, adapter: SlackAdapter, engine):
        self.fake, self.adapter, self.engine = fake, adapter, engine
        self.url = f"http://127.0.0.1:{adapter.http_port}/slack/events"

    async def send(self, body, **kwargs) -> int:
        return await self.fake.post_to_app(self.url, body, **kwargs)

    async def settle(self, quiet_s: float = 0.3) -> None:
        """Let Bolt hand the request to the adapter, then wait for everything it took on."""
        await asyncio.sleep(quiet_s)
        await self.adapter.idle()

    async def mention(self, text: str, **kwargs) -> tuple[dict, str]:
        body = self.fake.mention(text, **kwargs)
        assert await self.send(body) == 200
        await self.settle()
        return body, body["event"]["ts"]

    async def command(self, command: str, text: str, user: str) -> list[dict]:
        body, key = self.fake.command(command, text, user=user)
        started = time.monotonic()
        assert await self.send(body) == 200
        assert time.monotonic() - started < 3, "slash commands must be acked within 3 s"
        await self.settle()
        return [r["text"] for r in self.fake.responses_for(key)]

    def turns(self, thread_ts: str, channel: str = CHANNEL) -> int:
        session = self.engine.sessions.get(f"slack/{self.fake.team_id}/{channel}/{thread_ts}")
        return len(session.turns) if session else 0


@pytest.fixture
async def slack_factory(tmp_path, engine_factory):
    """Start a fake Slack, an Engine and the adapter in HTTP mode; everything closes at the end."""
    started: list[tuple[FakeSlack, SlackAdapter]] = []

    async def build(*, knowledge: bool = False, engine=None, data_dir=None, slack: dict | None = None,
                    max_new_tokens: int = 20, **overrides):
        fake = await FakeSlack().start()
        fake.add_user(ADA, "Ada")
        fake.add_user(GRACE, "Grace", admin=True)
        fake.add_user(LIN, "Lin")
        config = make_config(data_dir or tmp_path / "data",
                             # chat.update streaming here; native streaming: test_slack_streaming.py
                             slack={"mode": "http", "stream_interval_s": 0.2, "native_streaming": False,
                                    **(slack or {})},
                             knowledge={"enabled": knowledge}, admins={"slack": {fake.team_id: [LIN]}}, **overrides)
        for model in config.models:  # short answers keep the suite quick; the Slack side is the same
            model.generation.max_new_tokens = max_new_tokens
        engine = engine or await engine_factory(config)
        adapter = SlackAdapter(engine, config, bot_token=fake.bot_token, signing_secret=fake.signing_secret,
                               api_url=fake.api_url)
        await adapter.start("127.0.0.1", 0)
        started.append((fake, adapter))
        return Harness(fake, adapter, engine)

    yield build
    for fake, adapter in started:
        if not adapter.tasks.closing:
            await adapter.close(grace_s=1)
        await fake.close()


def test_configured_needs_the_mode_credentials():
    socket = make_config(__import__("pathlib").Path("/tmp/unused"))
    http = make_config(__import__("pathlib").Path("/tmp/unused"), slack={"mode": "http"})
    assert not slack_configured({}, socket)
    assert not slack_configured({"SLACK_BOT_TOKEN": "xoxb-1"}, socket)
    assert slack_configured({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1"}, socket)
    assert not slack_configured({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1"}, http)
    assert slack_configured({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s"}, http)


def paced(monkeypatch, model, seconds_per_step: float) -> None:
    """Each decode step of the model's runtime takes at least `seconds_per_step`, so a test of
    streaming sees the answer streamed however fast the runtime writes it (CPU or GPU)."""
    executor = type(model.executor(1, 1, 1))
    for name in ("decode", "step"):
        real = getattr(executor, name, None)
        if real is None:
            continue

        def slower(self, *args, _real=real, **kwargs):
            time.sleep(seconds_per_step)  # on the scheduler's worker thread
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(executor, name, slower)


async def test_mention_is_answered_in_its_thread_with_streamed_updates(slack_factory, caplog, monkeypatch,
                                                                      loaded_model):
    caplog.set_level(logging.DEBUG)
    paced(monkeypatch, loaded_model, 0.05)  # 20 tokens over a second: several edits at one per 0.2 s
    h = await slack_factory()
    _, ts = await h.mention("Write three sentences about the sea.", user=ADA)

    replies = h.fake.bot_messages(CHANNEL, ts)
    assert len(replies) == 1, "one answer, in the thread of the mention"
    reply = replies[0]
    assert reply.text.strip() and CURSOR not in reply.text
    interim = [t for t in reply.history if t.endswith(CURSOR)]
    assert len(interim) >= 2, f"the answer should be streamed in edits, got {reply.history}"
    for earlier, later in zip(interim, interim[1:]):  # each edit shows more of the same answer
        assert later.rstrip(CURSOR).startswith(earlier.rstrip(CURSOR).rstrip()[:-2])
    updates = [c.at for c in h.fake.calls_of("chat.update") if c.params.get("ts") == reply.ts
               and c.params.get("text", "").endswith(CURSOR)]
    gaps = [b - a for a, b in zip(updates, updates[1:])]
    assert all(g >= 0.18 for g in gaps), f"at most one edit per stream interval, gaps {gaps}"
    assert h.turns(ts) == 2, "the thread is a session holding the question and the answer"
    assert all(c.authorized for c in h.fake.calls)
    logged = "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
    assert h.fake.bot_token not in logged and h.fake.signing_secret not in logged


async def test_thread_reply_without_mention_continues_with_history_even_after_restart(slack_factory, tmp_path):
    h = await slack_factory()
    first, ts = await h.mention("My name is Ada. Please remember it.", user=ADA)
    assert h.turns(ts) == 2

    assert await h.send(h.fake.message("What is my name?", user=ADA, thread_ts=ts)) == 200
    await h.settle()
    assert len(h.fake.bot_messages(CHANNEL, ts)) == 2, "the thread reply is answered in the same thread"
    assert h.turns(ts) == 4, "with the thread's history"

    # Neither a top-level message nor a thread Parley is not part of gets an answer unasked.
    other = h.fake.message("Lunch at noon?", user=ADA)
    assert await h.send(other) == 200
    assert await h.send(h.fake.message("Sure", user=GRACE, thread_ts=other["event"]["ts"])) == 200
    await h.settle(0.5)
    assert not h.fake.bot_messages(CHANNEL, other["event"]["ts"])

    # A restart (new adapter, same data) still knows the thread is Parley's.
    await h.adapter.close(grace_s=1)
    h2 = await slack_factory(engine=h.engine, data_dir=tmp_path / "data")
    assert await h2.send(h2.fake.message("And once more?", user=ADA, thread_ts=ts)) == 200
    await h2.settle()
    assert len(h2.fake.bot_messages(CHANNEL, ts)) == 1
    assert h.turns(ts) == 6
    # Slack redelivering the first mention after the restart does not get it answered again.
    assert await h2.send(first, retry_num=3) == 200
    await h2.settle()
    assert len(h2.fake.bot_messages(CHANNEL, ts)) == 1 and h.turns(ts) == 6


async def test_a_retried_event_is_answered_once(slack_factory):
    h = await slack_factory()
    body = h.fake.mention("What is the capital of France?", user=ADA)
    ts = body["event"]["ts"]
    # Slack retries the same event id with X-Slack-Retry-Num, and the same message also arrives
    # as a `message` event with its own event id: none of them may produce a second answer.
    as_message = h.fake.message(body["event"]["text"], user=ADA, ts=ts)
    statuses = await asyncio.gather(h.send(body), h.send(body, retry_num=1), h.send(as_message))
    assert statuses == [200, 200, 200]
    await h.settle()
    assert await h.send(body, retry_num=2) == 200  # a late retry, after the answer
    await h.settle()
    posts = [c for c in h.fake.calls_of("chat.postMessage") if c.params.get("thread_ts") == ts]
    assert len(posts) == 1 and len(h.fake.bot_messages(CHANNEL, ts)) == 1
    assert h.turns(ts) == 2


async def test_the_bot_ignores_its_own_and_other_bots_messages(slack_factory):
    h = await slack_factory()
    _, ts = await h.mention("Say hello.", user=ADA)
    posts_before = len(h.fake.calls_of("chat.postMessage"))
    own = h.fake.bot_messages(CHANNEL, ts)[0]
    events = [
        h.fake.message(own.text, user=h.fake.bot_user_id, thread_ts=ts, bot_id=h.fake.bot_id),  # itself
        h.fake.message("beep", user=None, thread_ts=ts, subtype="bot_message", bot_id="B0OTHER"),  # another bot
        h.fake.message(f"<@{h.fake.bot_user_id}> beep", user="U0BOTUSER", thread_ts=ts, bot_id="B0OTHER"),
        h.fake.message("", user=None, thread_ts=ts, subtype="message_changed",
                       message={"text": "edited", "user": ADA, "ts": ts}),
    ]
    for event in events:
        assert await h.send(event) == 200
    await h.settle(0.6)
    assert len(h.fake.calls_of("chat.postMessage")) == posts_before
    assert h.turns(ts) == 2


async def test_bad_signatures_are_rejected(slack_factory):
    h = await slack_factory()
    body = h.fake.mention("Hello?", user=ADA)
    assert await h.send(body, secret="not-the-signing-secret") == 401
    assert await h.send(h.fake.mention("Hello?", user=ADA), timestamp=int(time.time()) - 600) == 401  # replayed
    cmd, key = h.fake.command("/llm-model", "smollm2-135m-b", user=GRACE)
    assert await h.send(cmd, signature="v0=" + "0" * 64) == 401
    await h.settle(0.5)
    assert not h.fake.calls_of("chat.postMessage") and not h.fake.responses_for(key)
    assert h.engine.live_model == "smollm2-135m"


async def test_llm_model_refused_for_non_admin_and_works_for_admins(slack_factory):
    # The live model is the operators' (docs/security.md): Grace and Lin are operators here too.
    # A workspace admin who is none is refused: tests/test_authority.py.
    h = await slack_factory(operators={"slack": [GRACE, LIN]})
    listing = await h.command("/llm-model", "", user=ADA)
    assert len(listing) == 1 and "● `smollm2-135m` *live*" in listing[0] and "○ `smollm2-135m-b`" in listing[0]

    refused = await h.command("/llm-model", "smollm2-135m-b", user=ADA)
    assert len(refused) == 1 and "Only Parley's operators" in refused[0]
    assert h.engine.live_model == "smollm2-135m"

    switched = await h.command("/llm-model", "smollm2-135m-b", user=GRACE)  # a Slack workspace admin
    assert switched[-1].startswith("Now answering with *smollm2-135m-b*")
    assert h.engine.live_model == "smollm2-135m-b"
    assert "● `smollm2-135m-b` *live*" in (await h.command("/llm-model", "", user=ADA))[0]

    back = await h.command("/llm-model", "smollm2-135m", user=LIN)  # an admin by Parley's config
    assert back[-1].startswith("Now answering with *smollm2-135m*")
    unknown = await h.command("/llm-model", "gpt-17", user=GRACE)
    assert "MODEL_UNKNOWN" in unknown[-1]
    assert all(r["response_type"] == "ephemeral" for r in h.fake.responses)

    stats = await h.command("/llm-stats", "", user=ADA)
    assert len(stats) == 1 and "smollm2-135m" in stats[0] and "**" not in stats[0]


async def test_long_answers_are_split_and_edits_survive_rate_limits(slack_factory, monkeypatch):
    monkeypatch.setattr(slack_module, "MESSAGE_LIMIT", 48)
    monkeypatch.setattr(slack_module, "MESSAGE_SOFT_LIMIT", 24)
    h = await slack_factory()
    h.fake.rate_limit("chat.update", retry_after=1)  # Slack says "slow down" once
    _, ts = await h.mention("Tell me a long story about a lighthouse keeper.", user=ADA)
    parts = h.fake.bot_messages(CHANNEL, ts)
    assert len(parts) >= 2, [p.text for p in parts]
    assert all(len(p.text) <= 48 and p.text.strip() for p in parts)
    assert not any(CURSOR in p.text for p in parts)
    answer = h.engine.sessions.get(f"slack/{h.fake.team_id}/{CHANNEL}/{ts}").turns[-1].text
    shown = sum(len(p.text) for p in parts)
    assert shown >= 0.8 * len(answer), "no part of the answer is lost in the split"


async def test_a_busy_bot_shows_the_queue_position(slack_factory):
    h = await slack_factory(scheduler={"max_batch": 1})
    bodies = [h.fake.mention(f"Question number {i}: name a colour.", user=ADA) for i in range(3)]
    assert await asyncio.gather(*(h.send(b) for b in bodies)) == [200, 200, 200]
    await h.settle()
    shown = [m.history for b in bodies for m in h.fake.bot_messages(CHANNEL, b["event"]["ts"])]
    assert len(shown) == 3, "every question is answered"
    assert any(t == "_Queued, 1 ahead…_" for history in shown for t in history), shown
    assert not any(t.startswith("_Queued") for history in shown for t in history[-1:]), "queued notes are replaced"


async def test_engine_errors_reach_only_the_asker(slack_factory):
    h = await slack_factory()
    body = h.fake.mention("word " * 4000, user=ADA)  # far beyond the model's context window
    assert await h.send(body) == 200
    await h.settle()
    ts = body["event"]["ts"]
    assert not h.fake.bot_messages(CHANNEL, ts), "nothing posted for everyone"
    [note] = h.fake.ephemerals
    assert note["user"] == ADA and note["thread_ts"] == ts
    assert "CONTEXT_TOO_LONG" in note["text"] and "ref " in note["text"]


async def test_a_flood_of_mentions_gets_one_private_notice(slack_factory):
    h = await slack_factory(limits={"user_per_minute": 2})
    h.fake.add_user("U0BOB", "Bob")
    flood = [h.fake.mention(f"Question {i}?", user=ADA) for i in range(8)]
    statuses = await asyncio.gather(*(h.send(b) for b in flood))
    assert statuses == [200] * 8
    await h.settle()
    answered = [b for b in flood if h.fake.bot_messages(CHANNEL, b["event"]["ts"])]
    assert len(answered) == 2, "the user's bucket lets two through"
    notices = [e for e in h.fake.ephemerals if e["user"] == ADA]
    assert len(notices) == 1 and "RATE_LIMITED" in notices[0]["text"] and "Try again in" in notices[0]["text"]
    assert not h.fake.calls_of("chat.delete"), "refused questions never flash a placeholder"
    _, ts = await h.mention("Am I limited too?", user="U0BOB")  # someone else is still served
    assert len(h.fake.bot_messages(CHANNEL, ts)) == 1


async def test_direct_messages_are_answered_without_a_mention(slack_factory):
    h = await slack_factory()
    dm = "D0ADA"
    assert await h.send(h.fake.message("Hi! What is 2 + 2?", user=ADA, channel=dm, channel_type="im")) == 200
    await h.settle()
    assert len(h.fake.bot_messages(dm, None)) == 1, "answered in the DM itself"
    assert await h.send(h.fake.message("And 3 + 3?", user=ADA, channel=dm, channel_type="im")) == 200
    await h.settle()
    assert len(h.fake.bot_messages(dm, None)) == 2
    assert h.turns("dm", channel=dm) == 4, "a DM is one conversation"


async def test_unlisted_workspaces_are_not_served(slack_factory):
    h = await slack_factory(slack={"workspaces": ["T0ELSEWHERE"]})
    assert await h.send(h.fake.mention("Hello?", user=ADA)) == 200
    await h.settle(0.5)
    assert not h.fake.calls_of("chat.postMessage")
    assert "not enabled" in (await h.command("/llm-stats", "", user=ADA))[0]


def _pdf(lines: list[str]) -> bytes:
    return docgen.lines_pdf(lines)


@pytest.mark.slow
async def test_a_shared_pdf_is_ingested_and_cited(slack_factory):
    h = await slack_factory(knowledge=True)
    data = _pdf(["Zorblax project report.",
                 "The Zorblax project budget is 4.2 million euros.",
                 "The budget was approved by Mira Patel in March."])
    share_ts = h.fake.next_ts()
    file = h.fake.add_file("report.pdf", data, "application/pdf", channel=CHANNEL, ts=share_ts, user=ADA)
    share = h.fake.message("here is the report", user=ADA, ts=share_ts, subtype="file_share", files=[file])
    shared = h.fake.event_body({"type": "file_shared", "file_id": file["id"], "user_id": ADA,
                                "channel_id": CHANNEL, "event_ts": share_ts})
    assert await h.send(share) == 200
    assert await h.send(shared) == 200  # the same share, announced twice: indexed once
    await h.settle()
    assert h.fake.downloads == [{"file": file["id"], "authorized": True}]
    [note] = h.fake.bot_messages(CHANNEL, share_ts)
    assert note.text.startswith("Indexed `report.pdf`: 1 page, ") and note.text.endswith("Ask away.")

    # A question in that thread continues without a mention, and cites the file and page.
    assert await h.send(h.fake.message("What is the budget of the Zorblax project?", user=ADA,
                                       thread_ts=share_ts)) == 200
    await h.settle()
    answer = h.fake.bot_messages(CHANNEL, share_ts)[-1].text
    assert "*Sources*" in answer and "`report.pdf` p.1" in answer and "4.2 million" in answer

    # A file the engine cannot read gets a clear reply in its thread.
    bad_ts = h.fake.next_ts()
    bad = h.fake.add_file("broken.pdf", b"%PDF-1.4 this is not really a pdf", "application/pdf",
                          channel=CHANNEL, ts=bad_ts, user=ADA)
    assert await h.send(h.fake.message("", user=ADA, ts=bad_ts, subtype="file_share", files=[bad])) == 200
    await h.settle()
    [failure] = h.fake.bot_messages(CHANNEL, bad_ts)
    assert failure.text.startswith(":warning: I couldn't index `broken.pdf`") and "ref " in failure.text


PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


async def test_a_screenshot_is_ignored_quietly_unless_shared_with_a_mention(slack_factory):
    h = await slack_factory(knowledge=True, limits={"ingest_per_minute": 1})
    share_ts = h.fake.next_ts()
    shot = h.fake.add_file("screenshot.png", PNG, "image/png", channel=CHANNEL, ts=share_ts, user=ADA)
    assert await h.send(h.fake.message("", user=ADA, ts=share_ts, subtype="file_share", files=[shot])) == 200
    assert await h.send(h.fake.event_body({"type": "file_shared", "file_id": shot["id"], "user_id": ADA,
                                           "channel_id": CHANNEL, "event_ts": share_ts})) == 200
    await h.settle()
    assert not h.fake.downloads and not h.fake.calls_of("chat.postMessage") and not h.fake.ephemerals
    assert await h.adapter.memory.thread(f"slack/{h.fake.team_id}/{CHANNEL}/{share_ts}") is None
    # The thread is not Parley's: a later message in it gets no answer.
    assert await h.send(h.fake.message("nice screenshot", user=GRACE, thread_ts=share_ts)) == 200
    await h.settle()
    assert not h.fake.calls_of("chat.postMessage")

    # An archive sent with a mention: one private explanation to the sharer, nothing public (a
    # picture sent with a mention is read into the question: tests/test_pictures_shared.py).
    archive = h.fake.add_file("logs.zip", b"PK\x05\x06" + bytes(18), "application/zip", channel=CHANNEL,
                              ts=h.fake.next_ts(), user=ADA)
    mention = h.fake.mention("", user=ADA, files=[archive])
    as_message = h.fake.message(mention["event"]["text"], user=ADA, ts=mention["event"]["ts"],
                                subtype="file_share", files=[archive])
    assert await h.send(mention) == 200 and await h.send(as_message) == 200
    await h.settle()
    [note] = h.fake.ephemerals
    assert note["user"] == ADA and "logs.zip" in note["text"] and "UNSUPPORTED_FILE" in note["text"]
    assert not h.fake.downloads and not h.fake.calls_of("chat.postMessage")

    # The sharer's ingest budget (one a minute here) is untouched: a PDF right after is indexed.
    pdf_ts = h.fake.next_ts()
    pdf = h.fake.add_file("notes.pdf", _pdf(["Quarterly notes."]), "application/pdf", channel=CHANNEL,
                          ts=pdf_ts, user=ADA)
    assert await h.send(h.fake.message("", user=ADA, ts=pdf_ts, subtype="file_share", files=[pdf])) == 200
    await h.settle()
    [indexed] = h.fake.bot_messages(CHANNEL, pdf_ts)
    assert indexed.text.startswith("Indexed `notes.pdf`"), indexed.text


def test_the_manifest_declares_what_the_adapter_handles():
    import yaml

    from conftest import ROOT

    for name in ("manifest.yaml", "manifest-http.yaml"):
        manifest = yaml.safe_load((ROOT / "slack" / name).read_text())
        commands = {c["command"] for c in manifest["features"]["slash_commands"]}
        assert commands == {"/llm-stats", "/llm-model", "/llm-config", "/llm-docs", "/llm-audit", "/llm-summarize",
                            "/llm-new"}
        assert [(s["type"], s["callback_id"]) for s in manifest["features"]["shortcuts"]] == \
            [("message", "summarize_thread")] and manifest["settings"]["interactivity"]["is_enabled"]
        scopes = set(manifest["oauth_config"]["scopes"]["bot"])
        assert {"app_mentions:read", "chat:write", "commands", "files:read", "users:read", "im:history",
                "channels:history", "groups:history"} <= scopes
        events = set(manifest["settings"]["event_subscriptions"]["bot_events"])
        assert {"app_mention", "message.channels", "message.groups", "message.im", "file_deleted"} <= events
        assert {"assistant_thread_started", "assistant_thread_context_changed", "app_home_opened"} <= events
        assert "assistant:write" in scopes and manifest["features"]["assistant_view"]["assistant_description"]
        assert manifest["settings"]["interactivity"]["is_enabled"] and manifest["features"]["app_home"]["home_tab_enabled"]
        assert manifest["settings"]["socket_mode_enabled"] is (name == "manifest.yaml")


async def test_socket_mode_through_the_entry_point(tmp_path, engine_factory):
    """The default mode, as bot.py starts it: run_slack() until `stop` is set."""
    from adapters.slack import run_slack

    fake = await FakeSlack().start()
    fake.add_user(ADA, "Ada")
    config = make_config(tmp_path / "data", knowledge={"enabled": False}, slack={"stream_interval_s": 0.2})
    for model in config.models:
        model.generation.max_new_tokens = 20
    engine = await engine_factory(config)
    env = {"SLACK_BOT_TOKEN": fake.bot_token, "SLACK_APP_TOKEN": fake.app_token, "SLACK_API_URL": fake.api_url}
    assert slack_configured(env, config)
    stop = asyncio.Event()
    task = asyncio.create_task(run_slack(engine, config, env, stop))
    try:
        body = fake.mention("Say hello to the team.", user=ADA)
        ts = body["event"]["ts"]
        envelope = await fake.push(body)
        await fake.wait_for(lambda: envelope in fake.socket_acks, 5, "the envelope's ack")
        await fake.wait_for(lambda: any(not m.text.startswith("_") for m in fake.bot_messages(CHANNEL, ts)),
                            60, "the answer")
        await fake.push(body, retry_attempt=1)  # Slack redelivers over the socket too
        payload, key = fake.command_payload("/llm-model", "", user=ADA)
        command = await fake.push(payload, kind="slash_commands")
        await fake.wait_for(lambda: fake.responses_for(key), 10, "the /llm-model reply")
        await fake.wait_for(lambda: command in fake.socket_acks, 5, "the command's ack")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await fake.close()
    assert len(fake.bot_messages(CHANNEL, ts)) == 1
    assert fake.calls_of("apps.connections.open")[0].authorized
    assert "● `smollm2-135m` *live*" in fake.responses_for(key)[0]["text"]


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_a_refused_token_stops_the_start_with_a_clear_reason(tmp_path, mode):
    from adapters.slack import SlackStartError

    fake = await FakeSlack().start()
    config = make_config(tmp_path / "data", slack={"mode": mode})
    good = {"bot_token": fake.bot_token, "app_token": fake.app_token, "signing_secret": fake.signing_secret}
    try:
        for wrong, variable in (("bot_token", "SLACK_BOT_TOKEN"), ("app_token", "SLACK_APP_TOKEN")):
            if wrong == "app_token" and mode == "http":
                continue
            tokens = {**good, wrong: "xoxb-revoked-0000" if wrong == "bot_token" else "xapp-revoked-0000"}
            adapter = SlackAdapter(None, config, api_url=fake.api_url, **tokens)
            with pytest.raises(SlackStartError, match=variable) as raised:
                await adapter.start("127.0.0.1", 0)
            assert "revoked" not in str(raised.value), "the token itself is never shown"
    finally:
        await fake.close()
