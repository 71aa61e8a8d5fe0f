"""Documents have owners and reach only the people who could read where they were shared: the
attacks of issue 21 (findings 1, 2, 4 and look-alike names) through the real Slack adapter
(slack-bolt in HTTP mode, the fake Slack on loopback) and the real discord.py client (the fake
Discord's gateway). What the engine holds and what Parley posts are asserted, never the tiny
model's own wording. The knowledge base's side of the same rules: test_knowledge_trust.py."""
from __future__ import annotations

import docgen
import pytest

from engine.types import Conversation, FileUpload, User
from test_discord import discord_factory  # noqa: F401 - the fixture is used by name
from test_slack import ADA, CHANNEL, GRACE, slack_factory  # noqa: F401 - the fixture is used by name

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

BEN = "U0BEN"  # a member, no admin
ZORBLAX = ["Zorblax project report.", "The Zorblax project budget is 4.2 million euros."]
QUIXEL = ["Quixel project report.", "The Quixel project budget is 9 million euros."]
NIGHTJAR = ["Project Nightjar plan.", "Project Nightjar launches on 12 October from Lisbon."]
NIGHTJAR_QUESTION = "When does Project Nightjar launch?"
LIMITS = {"ingest_per_minute": 60, "user_per_minute": 60}  # these tests share more than 3 files a minute


# ---- Slack -----------------------------------------------------------------------------------

async def share(h, name: str, lines: list[str], user: str, channel: str = CHANNEL,
                channel_type: str = "channel") -> dict:
    """`user` shares a PDF in `channel` (the message with the file, as Slack sends it); returns the file."""
    ts = h.fake.next_ts()
    file = h.fake.add_file(name, docgen.lines_pdf(lines), "application/pdf", channel=channel, ts=ts, user=user)
    assert await h.send(h.fake.message("", user=user, channel=channel, ts=ts, subtype="file_share", files=[file],
                                       channel_type=channel_type)) == 200
    await h.settle()
    return file


async def command(h, text: str, user: str, channel: str = CHANNEL, name: str = "/llm-docs") -> list[str]:
    body, key = h.fake.command(name, text, user=user, channel=channel)
    assert await h.send(body) == 200
    await h.settle()
    return [r["text"] for r in h.fake.responses_for(key)]


async def documents(h, channel: str = CHANNEL) -> list[tuple[str, str, int]]:
    docs = await h.engine.list_documents(Conversation("slack", h.fake.team_id, channel, ""), workspace_wide=False)
    return [(d.filename, d.uploader, d.version) for d in docs]


async def asked(h, question: str, user: str = ADA, channel: str = CHANNEL) -> str:
    """The answer to a mention in `channel` (its last message in the thread it opened)."""
    _, ts = await h.mention(question, user=user, channel=channel)
    return h.fake.bot_messages(channel, ts)[-1].text


async def test_slack_a_members_forget_resolves_the_document_once_and_never_removes_anothers(slack_factory):
    h = await slack_factory(knowledge=True, limits=LIMITS)
    h.fake.add_user(BEN, "Ben")
    await share(h, "report.pdf", ZORBLAX, ADA)

    # Names that clean to Ada's report.pdf find Ada's report.pdf, whose owner is not Ben.
    for name in ("x/report.pdf", "../../report.pdf", "re\u200bport.pdf", "\u202areport.pdf\u202c"):
        [reply] = await command(h, f"forget {name}", BEN)
        assert reply.startswith("Sorry, only the person who shared `report.pdf` or an admin"), (name, reply)
        assert await documents(h) == [("report.pdf", ADA, 1)], name
    [missing] = await command(h, "forget budget.pdf", BEN)
    assert missing.startswith("There is no document named `budget.pdf` here"), missing
    [cancel] = await command(h, "cancel x/report.pdf", BEN)
    assert "is being indexed" in cancel and await documents(h) == [("report.pdf", ADA, 1)]

    # Its owner removes it by the name it was found by.
    [done] = await command(h, "forget x/report.pdf", ADA)
    assert done.startswith("Forgot `report.pdf`") and await documents(h) == []


async def test_slack_a_same_named_upload_never_replaces_anothers_document(slack_factory):
    h = await slack_factory(knowledge=True, limits=LIMITS)
    h.fake.add_user(BEN, "Ben")
    await share(h, "report.pdf", ZORBLAX, ADA)
    bens = await share(h, "report.pdf", QUIXEL, BEN)
    [note] = h.fake.bot_messages(CHANNEL, bens["shares"]["public"][CHANNEL][0]["ts"])
    assert note.text.startswith("Indexed `report.pdf` as `report (2).pdf`"), note.text
    assert await documents(h) == [("report (2).pdf", BEN, 1), ("report.pdf", ADA, 1)]

    # A look-alike name is the same name: Ben's second "report.pdf" is his own document's next version.
    revised = await share(h, "ｒｅ\u200bｐｏｒｔ.pdf", QUIXEL + ["Revised in May."], BEN)
    assert await documents(h) == [("report (2).pdf", BEN, 2), ("report.pdf", ADA, 1)]

    # Ada's answers still cite her report, whole.
    answer = await asked(h, "What is the budget of the Zorblax project?")
    assert "`report.pdf` p.1" in answer and "4.2 million" in answer, answer

    # Ben cannot forget Ada's; he is told which one is his.
    [refused] = await command(h, "forget report.pdf", BEN)
    assert refused.startswith("Sorry") and "`report (2).pdf`" in refused, refused
    # His latest file deleted in Slack: his document goes, Ada's stays.
    assert await h.send(h.fake.event_body({"type": "file_deleted", "file_id": revised["id"],
                                           "event_ts": h.fake.next_ts()})) == 200
    await h.settle()
    assert await documents(h) == [("report.pdf", ADA, 1)]


async def test_slack_private_documents_stay_in_their_conversation_under_the_workspace_scope(slack_factory):
    h = await slack_factory(knowledge=True, limits=LIMITS)
    h.fake.add_user(BEN, "Ben")
    secret, vault = "C0SECRET", "C0VAULT"
    h.fake.add_channel(secret, "private")
    h.fake.add_channel(vault, "private")
    [scope] = await command(h, "workspace scope workspace", GRACE, name="/llm-config")
    assert "scope" in scope

    await share(h, "roadmap.pdf", ZORBLAX, ADA)  # a public channel's
    await share(h, "secret.pdf", NIGHTJAR, ADA, channel=secret, channel_type="group")
    # An app_mention carries no channel_type: conversations.info tells the vault is private.
    file = h.fake.add_file("vault.pdf", docgen.lines_pdf(["The vault code is 4711."]), "application/pdf",
                           channel=vault, ts=h.fake.next_ts(), user=ADA)
    assert await h.send(h.fake.mention("keep this", user=ADA, channel=vault, files=[file])) == 200
    await h.settle()
    await share(h, "diary.pdf", ["Ada's diary: Project Nightjar worries me."], ADA, channel="D0ADA",
                channel_type="im")
    assert h.fake.calls_of("conversations.info"), "asked where the event did not say"
    seen = {}
    for channel in (CHANNEL, secret, vault, "D0ADA"):
        for doc in await h.engine.list_documents(Conversation("slack", h.fake.team_id, channel, ""),
                                                 workspace_wide=False):
            seen[doc.filename] = doc.visibility
    assert seen == {"roadmap.pdf": "public", "secret.pdf": "private", "vault.pdf": "private", "diary.pdf": "dm"}

    # From a public channel, a DM and the Home tab: only the public channel's document.
    answer = await asked(h, NIGHTJAR_QUESTION, user=BEN)
    assert "secret.pdf" not in answer and "diary.pdf" not in answer, answer
    [listing] = await command(h, "", BEN)
    assert "`roadmap.pdf`" in listing and not any(n in listing for n in ("secret.pdf", "vault.pdf", "diary.pdf"))
    assert await h.send(h.fake.message(NIGHTJAR_QUESTION, user=BEN, channel="D0BEN", channel_type="im")) == 200
    await h.settle()
    dm_answer = h.fake.bot_messages("D0BEN", None)[-1].text
    assert "secret.pdf" not in dm_answer and "diary.pdf" not in dm_answer, dm_answer
    for user in (GRACE, BEN):  # an admin sees names, a member a count: of public documents only
        assert await h.send(h.fake.home_opened(user=user)) == 200
        await h.settle()
        home = "\n".join(b.get("text", {}).get("text", "") for b in h.fake.views[user]["blocks"])
        assert "*Documents* 1 in 1 channel" in home, home
        assert not any(n in home for n in ("secret.pdf", "vault.pdf", "diary.pdf")), home

    # Inside the private channel, its document still answers, beside the public ones.
    inside = await asked(h, NIGHTJAR_QUESTION, channel=secret)
    assert "`secret.pdf` p.1" in inside and "12 October" in inside, inside
    [there] = await command(h, "", ADA, channel=secret)
    assert "`secret.pdf`" in there and "`roadmap.pdf`" in there and "vault.pdf" not in there


async def test_slack_a_document_from_before_visibility_learns_it_at_its_channels_next_question(slack_factory):
    h = await slack_factory(knowledge=True, limits=LIMITS)
    await command(h, "workspace scope workspace", GRACE, name="/llm-config")
    old, hidden = "C0OLD", "C0HIDDEN"
    h.fake.add_channel(hidden, "private")
    for channel, name, lines in ((old, "old.pdf", ZORBLAX), (hidden, "hidden.pdf", NIGHTJAR)):
        # Indexed as a Parley before this change did: no visibility recorded
        await h.engine.ingest(FileUpload(where=Conversation("slack", h.fake.team_id, channel, ""), user=User(ADA),
                                         filename=name, data=docgen.lines_pdf(lines)))
    [listing] = await command(h, "", ADA)
    assert "old.pdf" not in listing and "hidden.pdf" not in listing, "unknown: never public by default"

    await asked(h, "What is the Zorblax budget?", channel=old)  # Slack says: a public channel
    await asked(h, NIGHTJAR_QUESTION, channel=hidden)  # a private one
    [listing] = await command(h, "", ADA)
    assert "`old.pdf`" in listing and "hidden.pdf" not in listing, listing


async def test_slack_a_channel_made_private_takes_its_documents_out_of_the_workspace_at_once(slack_factory):
    """Slack's own event says the channel was made private: no one need ask there first. Made
    public again, its documents are back in the workspace scope."""
    h = await slack_factory(knowledge=True, limits=LIMITS)
    h.fake.add_user(BEN, "Ben")
    plans, lobby = "C0PLANS", "C0LOBBY"
    await command(h, "workspace scope workspace", GRACE, name="/llm-config")
    await share(h, "nightjar.pdf", NIGHTJAR, ADA, channel=plans)
    [listing] = await command(h, "", BEN, channel=lobby)
    assert "`nightjar.pdf`" in listing, listing
    assert "`nightjar.pdf` p.1" in await asked(h, NIGHTJAR_QUESTION, user=BEN, channel=lobby)

    async def converted(kind: str, channel_type: str) -> None:
        h.fake.add_channel(plans, kind)  # what conversations.info says from now on
        event = h.fake.message(f"made this channel *{kind}*.", user=ADA, channel=plans, channel_type=channel_type,
                               subtype=f"channel_convert_to_{kind}")
        assert await h.send(event) == 200
        await h.settle()

    await converted("private", "group")
    [listing] = await command(h, "", BEN, channel=lobby)
    assert "nightjar.pdf" not in listing, listing
    answer = await asked(h, NIGHTJAR_QUESTION, user=BEN, channel=lobby)
    assert "nightjar.pdf" not in answer, answer
    [inside] = await command(h, "", ADA, channel=plans)
    assert "`nightjar.pdf`" in inside, "its own channel still has it"
    assert not h.fake.bot_messages(plans, None)[1:], "nothing is posted about the change"

    await converted("public", "channel")
    [listing] = await command(h, "", BEN, channel=lobby)
    assert "`nightjar.pdf`" in listing, listing


# ---- Discord ---------------------------------------------------------------------------------

async def test_discord_owners_and_private_places_hold_through_messages_and_slash_commands(discord_factory):
    h = await discord_factory(knowledge=True, limits=LIMITS)
    ada = h.people["ada"]
    ben = h.fake.add_user("Ben")
    h.fake.add_member(h.guild, ben)
    h.people["ben"] = ben
    general = Conversation("discord", str(h.guild), str(h.general), "")

    async def names(where: Conversation = general) -> list[tuple[str, str]]:
        return [(d.filename, d.uploader) for d in await h.engine.list_documents(where, workspace_wide=False)]

    def pdf(channel: int, name: str, lines: list[str]) -> dict:
        return h.fake.add_file(channel, name, docgen.lines_pdf(lines), "application/pdf")

    await h.slash("lin", "llm-config", {"args": "workspace scope workspace"})
    await h.mention("The roadmap.", attachments=[pdf(h.general, "report.pdf", ZORBLAX)])

    # Finding 1: a decorated name finds Ada's document, which Ben cannot remove.
    [refused] = await h.slash("ben", "llm-docs", {"action": "forget", "name": "x/report.pdf"})
    assert refused.startswith("Sorry") and await names() == [("report.pdf", str(ada))], refused
    # Finding 2: Ben's report.pdf is his own document beside Ada's.
    await h.say(h.general, "ben", "Mine.", mention=True, attachments=[pdf(h.general, "report.pdf", QUIXEL)])
    assert await names() == [("report (2).pdf", str(ben)), ("report.pdf", str(ada))]

    # Finding 4: a channel hidden from @everyone, and a private thread of the public channel.
    vault = await h.fake.add_private_channel(h.guild, "vault", members=[ada])
    await h.say(vault, "ada", "Keep this.", mention=True, attachments=[pdf(vault, "vault.pdf", ["Code 4711."])])
    thread = await h.fake.add_thread(h.general, "plans", owner=ada, private=True)
    await h.say(thread, "ada", "Our plan.", mention=True, attachments=[pdf(thread, "plan.pdf", NIGHTJAR)])
    in_thread = Conversation("discord", str(h.guild), str(h.general), "", document_channel=str(thread))
    assert await names() == [("report (2).pdf", str(ben)), ("report.pdf", str(ada))], \
        "the private thread's file is not the channel's"
    assert ("plan.pdf", str(ada)) in await names(in_thread)
    visibility = {d.filename: d.visibility for where in (general, in_thread, Conversation(
        "discord", str(h.guild), str(vault), "")) for d in await h.engine.list_documents(where, workspace_wide=False)}
    assert visibility == {"report.pdf": "public", "report (2).pdf": "public", "vault.pdf": "private",
                          "plan.pdf": "private"}

    _, asked_in_general = await h.mention(NIGHTJAR_QUESTION, who="ben")
    answer = h.fake.bot_messages(asked_in_general)[-1].text
    assert "plan.pdf" not in answer and "vault.pdf" not in answer, answer
    [listing] = await h.slash("ben", "llm-docs")
    assert "`report.pdf`" in listing and "plan.pdf" not in listing and "vault.pdf" not in listing, listing
    [gone] = await h.slash("ada", "llm-docs", {"action": "forget", "name": "plan.pdf"})
    assert gone.startswith("There is no document named `plan.pdf` here"), gone

    # Inside the private thread: its own document, listed and cited, and the channel's.
    [there] = await h.slash("ada", "llm-docs", channel=thread)
    assert "`plan.pdf`" in there and "`report.pdf`" in there, there
    await h.say(thread, "ada", NIGHTJAR_QUESTION, mention=True)
    inside = h.fake.bot_messages(thread)[-1].text
    assert "`plan.pdf` p. 1" in inside and "12 October" in inside, inside


async def test_discord_a_channel_made_private_takes_its_documents_out_of_the_workspace_at_once(discord_factory):
    """A moderator hides #general from @everyone: its documents leave the workspace scope at that
    CHANNEL_UPDATE, not at the channel's next question; shown again, they are back."""
    h = await discord_factory(knowledge=True, limits=LIMITS)
    ben = h.fake.add_user("Ben")
    h.fake.add_member(h.guild, ben)
    h.people["ben"] = ben
    lobby = h.fake.add_channel(h.guild, "lobby")
    await h.fake.dispatch("CHANNEL_CREATE", h.fake.channels[lobby])
    await h.slash("lin", "llm-config", {"args": "workspace scope workspace"})
    plan = h.fake.add_file(h.general, "plan.pdf", docgen.lines_pdf(NIGHTJAR), "application/pdf")
    await h.mention("The plan.", attachments=[plan])
    [listing] = await h.slash("ben", "llm-docs", channel=lobby)
    assert "`plan.pdf`" in listing, listing

    await h.fake.set_private(h.general, True)
    await h.settle()
    [listing] = await h.slash("ben", "llm-docs", channel=lobby)
    assert "plan.pdf" not in listing, listing
    general = Conversation("discord", str(h.guild), str(h.general), "")
    assert [d.visibility for d in await h.engine.list_documents(general, workspace_wide=False)] == ["private"]

    await h.fake.set_private(h.general, False)
    await h.settle()
    [listing] = await h.slash("ben", "llm-docs", channel=lobby)
    assert "`plan.pdf`" in listing, listing
