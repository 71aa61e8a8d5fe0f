"""/llm-docs and forgetting deleted files, through the real Slack adapter (slack-bolt in HTTP mode,
the fake Slack on loopback) and the real discord.py client (the fake Discord's gateway): what
the engine holds afterwards is asserted, never the tiny model's wording."""
from __future__ import annotations

import docgen
import pytest

from engine.types import Conversation
from test_discord import discord_factory  # noqa: F401 - the fixture is used by name
from test_slack import ADA, CHANNEL, GRACE, slack_factory  # noqa: F401 - the fixture is used by name

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

BEN = "U0BEN"  # a member who shared nothing and is no admin
OTHER = "C0OTHER"


async def share(h, name: str, lines: list[str], user: str, channel: str = CHANNEL) -> dict:
    """`user` shares a PDF in `channel` (the message with the file); returns the file."""
    ts = h.fake.next_ts()
    file = h.fake.add_file(name, docgen.lines_pdf(lines), "application/pdf", channel=channel, ts=ts, user=user)
    assert await h.send(h.fake.message("", user=user, channel=channel, ts=ts, subtype="file_share",
                                       files=[file])) == 200
    await h.settle()
    return file


async def names(h, channel: str = CHANNEL) -> list[str]:
    docs = await h.engine.list_documents(Conversation("slack", h.fake.team_id, channel, ""), workspace_wide=False)
    return [d.filename for d in docs]


async def test_slack_llm_docs_lists_forgets_and_deleted_files_are_forgotten(slack_factory):
    h = await slack_factory(knowledge=True)
    h.fake.add_user(BEN, "Ben")
    report = await share(h, "report.pdf", ["Zorblax project report.", "The Zorblax budget is 4.2 million euros."], ADA)
    notes = await share(h, "notes.pdf", ["Quarterly notes: the offsite is in Lisbon."], BEN)
    await share(h, "handbook.pdf", ["The handbook of another channel."], GRACE, channel=OTHER)
    assert await names(h) == ["notes.pdf", "report.pdf"]

    [listing] = await h.command("/llm-docs", "", user=BEN)
    lines = listing.splitlines()
    assert len([line for line in lines if line.startswith("•")]) == 2, listing
    [report_line] = [line for line in lines if "`report.pdf`" in line]
    assert "v1" in report_line and "1 page" in report_line and "shared by Ada" in report_line
    assert "shared by Ben" in next(line for line in lines if "`notes.pdf`" in line)
    assert "handbook.pdf" not in listing, "another channel's documents are not this channel's"

    # With the channel's scope set to the workspace, the other channel's document is listed, marked.
    assert "scope" in (await h.command("/llm-config", "scope workspace", user=GRACE))[0]
    [wide] = await h.command("/llm-docs", "list", user=BEN)
    handbook = next(line for line in wide.splitlines() if "`handbook.pdf`" in line)
    assert "workspace-wide" in handbook and "workspace-wide" not in next(
        line for line in wide.splitlines() if "`report.pdf`" in line)
    await h.command("/llm-config", "reset scope", user=GRACE)

    # Forget: refused for somebody else's document (politely, nothing removed), done by its sharer.
    [refused] = await h.command("/llm-docs", "forget report.pdf", user=BEN)
    assert refused.startswith("Sorry") and await names(h) == ["notes.pdf", "report.pdf"]
    [done] = await h.command("/llm-docs", "forget report.pdf", user=ADA)
    assert "report.pdf" in done and await names(h) == ["notes.pdf"]
    _, ts = await h.mention("What is the Zorblax budget?", user=ADA)
    answer = h.fake.bot_messages(CHANNEL, ts)[-1].text
    assert "report.pdf" not in answer, "nothing of a forgotten document is cited"

    # The file deleted in Slack: its document goes too, without a word.
    posted = len(h.fake.calls_of("chat.postMessage"))
    assert await h.send(h.fake.event_body({"type": "file_deleted", "file_id": notes["id"],
                                           "event_ts": h.fake.next_ts()})) == 200
    await h.settle()
    assert await names(h) == [] and len(h.fake.calls_of("chat.postMessage")) == posted

    # The message that carried a file deleted: its document goes.
    memo = await share(h, "memo.pdf", ["A memo about parking."], BEN)
    assert await names(h) == ["memo.pdf"]
    share_ts = memo["shares"]["public"][CHANNEL][0]["ts"]
    deleted = h.fake.message("", user=None, subtype="message_deleted", hidden=True, deleted_ts=share_ts,
                             previous_message={"type": "message", "user": BEN, "ts": share_ts, "text": "",
                                               "files": [{"id": memo["id"], "name": "memo.pdf"}]})
    assert await h.send(deleted) == 200
    await h.settle()
    assert await names(h) == []

    # A message with replies is not removed but turned into a tombstone: its document goes too.
    plan = await share(h, "plan.pdf", ["The plan is to move in May."], BEN)
    plan_ts = plan["shares"]["public"][CHANNEL][0]["ts"]
    tombstone = h.fake.message("", user=None, subtype="message_changed", hidden=True,
                               message={"type": "message", "subtype": "tombstone", "ts": plan_ts,
                                        "text": "This message was deleted.", "thread_ts": plan_ts},
                               previous_message={"type": "message", "user": BEN, "ts": plan_ts, "text": "",
                                                 "files": [{"id": plan["id"], "name": "plan.pdf"}]})
    assert await names(h) == ["plan.pdf"]
    assert await h.send(tombstone) == 200
    await h.settle()
    assert await names(h) == []
    assert report  # shared first: its record is gone with the document, nothing left to forget


async def test_discord_llm_docs_and_a_deleted_message_forgets_its_attachment(discord_factory):
    h = await discord_factory(knowledge=True)
    ben = h.fake.add_user("Ben")
    h.fake.add_member(h.guild, ben)
    h.people["ben"] = ben
    where = Conversation("discord", str(h.guild), str(h.general), "")

    async def names() -> list[str]:
        return [d.filename for d in await h.engine.list_documents(where, workspace_wide=False)]

    report = h.fake.add_file(h.general, "report.pdf", docgen.lines_pdf(["The Zorblax budget is 4.2 million."]),
                             "application/pdf")
    await h.mention("Here is the report.", who="ada", attachments=[report])
    notes = h.fake.add_file(h.general, "notes.pdf", docgen.lines_pdf(["The offsite is in Lisbon."]),
                            "application/pdf")
    carried = await h.say(h.general, "ben", "My notes.", mention=True, attachments=[notes])
    assert await names() == ["notes.pdf", "report.pdf"]

    [listing] = await h.slash("ben", "llm-docs")
    assert "shared by Ada" in next(line for line in listing.splitlines() if "`report.pdf`" in line)
    assert "shared by Ben" in next(line for line in listing.splitlines() if "`notes.pdf`" in line)
    [refused] = await h.slash("ben", "llm-docs", {"action": "forget", "name": "report.pdf"})
    assert refused.startswith("Sorry") and await names() == ["notes.pdf", "report.pdf"]
    [done] = await h.slash("ada", "llm-docs", {"action": "forget", "name": "report.pdf"})
    assert "report.pdf" in done and await names() == ["notes.pdf"]

    await h.fake.delete(int(carried["id"]))  # Ben deletes the message that carried notes.pdf
    await h.settle()
    assert await names() == []


async def test_slack_llm_docs_cancel_stops_an_ingest_in_progress(slack_factory):
    import threading

    h = await slack_factory(knowledge=True)
    h.fake.add_user(BEN, "Ben")
    embedder = h.engine.knowledge.embedder
    real, entered, release = embedder.encode, threading.Event(), threading.Event()

    def held(texts, *args, **kwargs):  # the file's chunks wait here (on the ingest's worker thread)
        if len(texts) > 1 or kwargs.get("check") is not None:
            entered.set()
            release.wait(60)
        return real(texts, *args, **kwargs)

    embedder.encode = held

    async def command(text: str, user: str) -> str:  # without waiting for the adapter: the ingest is held
        body, key = h.fake.command("/llm-docs", text, user=user)
        assert await h.send(body) == 200
        await h.fake.wait_for(lambda: h.fake.responses_for(key), 30, "the command's answer")
        return h.fake.responses_for(key)[0]["text"]

    try:
        ts = h.fake.next_ts()
        file = h.fake.add_file("big.pdf", docgen.lines_pdf([f"Line {i} of the big report." for i in range(40)]),
                               "application/pdf", channel=CHANNEL, ts=ts, user=ADA)
        assert await h.send(h.fake.message("", user=ADA, ts=ts, subtype="file_share", files=[file])) == 200
        await h.fake.wait_for(entered.is_set, 60, "the ingest to start embedding")
        assert (await command("cancel big.pdf", BEN)).startswith("Sorry"), "not Ben's to cancel"
        assert (await command("cancel big.pdf", ADA)).startswith("Stopped indexing")
    finally:
        release.set()
    await h.settle()
    assert await names(h) == [], "nothing of a cancelled ingest is kept"
    [note] = h.fake.bot_messages(CHANNEL, ts)
    assert "CANCELLED" in note.text
    assert (await command("cancel big.pdf", ADA)).startswith("Nothing named")
