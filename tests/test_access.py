"""Access control people ask for (engine/access.py): a channel switched off, allow and deny lists of
users, roles and channels per workspace, DMs on or off. First the rule itself, then through the real
slack-bolt and discord.py paths with the fake far side: every entry point that starts work obeys
it, a person turned away is told privately (once in a while, never in the channel), and admins are
never locked out of the commands that govern Parley."""
from __future__ import annotations

import pytest

from conftest import make_config
from engine.access import ALLOWED, NOTES, AccessPolicy, Barrier, Refused
from engine.config import ConfigError
from engine.types import Conversation, FileUpload, User
from fake_discord import FakeDiscord
from test_discord import MANAGE_GUILD, discord_factory, until  # noqa: F401 - the fixture is used by name
from test_slack import ADA, CHANNEL, GRACE, LIN, slack_factory  # noqa: F401 - the fixture is used by name

pytestmark = pytest.mark.timeout(240)

T1 = "T0001"  # the fake Slack's workspace
OFF = NOTES[Barrier.SWITCHED_OFF]
NOT_YOU = NOTES[Barrier.PERSON]
NO_DMS = NOTES[Barrier.DMS]


def policy(tmp_path, access: dict, admins: tuple[str, ...] = ()) -> AccessPolicy:
    config = make_config(tmp_path, access=access)
    return AccessPolicy(config.access, is_admin=lambda where, user: user.id in admins)


def in_channel(channel: str = "C1", workspace: str = T1) -> Conversation:
    return Conversation("slack", workspace, channel, "")


# ---- the rule --------------------------------------------------------------------------------

def test_deny_wins_and_an_allow_list_admits_only_whom_it_names(tmp_path):
    access = policy(tmp_path, {"slack": {T1: {"allow_users": ["U1", "U2"], "deny_users": ["U2"]}}})
    assert access.decide(in_channel(), User("U1")) is ALLOWED
    assert access.decide(in_channel(), User("U2")) == Refused(Barrier.PERSON), "deny wins over allow"
    assert access.decide(in_channel(), User("U3")) == Refused(Barrier.PERSON), "not on the allow list"
    assert access.decide(in_channel(workspace="T2"), User("U3")) is ALLOWED, "another workspace: no lists"


def test_roles_allow_and_deny_on_discord(tmp_path):
    access = policy(tmp_path, {"discord": {"G1": {"allow_roles": ["staff"], "deny_roles": [111]}}})
    here = Conversation("discord", "G1", "42", "")
    assert access.decide(here, User("1", roles=("staff",))) is ALLOWED
    assert not access.decide(here, User("2", roles=("staff", "111"))).allowed, "a denied role wins (ids as numbers)"
    assert not access.decide(here, User("3")).allowed, "no allowed role, not an allowed user"


def test_every_workspace_and_one_workspace_join(tmp_path):
    access = policy(tmp_path, {"slack": {"*": {"deny_users": ["U9"], "dms": False},
                                         T1: {"deny_channels": ["C2"], "dms": True}}})
    assert not access.decide(in_channel(), User("U9")).allowed, "'*' applies to T1 too"
    assert access.decide(in_channel("C2"), User("U1")) == Refused(Barrier.CHANNEL)
    assert access.decide(in_channel("C2", workspace="T2"), User("U1")) is ALLOWED, "C2 is denied in T1 only"
    assert access.decide(in_channel("D1"), User("U1")) is ALLOWED, "T1 says DMs are on: its own word wins"
    assert access.decide(in_channel("D1", workspace="T2"), User("U1")) == Refused(Barrier.DMS)


def test_channels_switched_off_or_denied_are_quiet_and_dms_are_no_channel(tmp_path):
    access = policy(tmp_path, {"slack": {T1: {"allow_channels": ["C1"]}}, "discord": {"dm": {"dms": False}}})
    assert access.decide(in_channel("C1"), User("U1"), reply="off") == Refused(Barrier.SWITCHED_OFF)
    denied = access.decide(in_channel("C7"), User("U1"))
    assert denied == Refused(Barrier.CHANNEL) and denied.quiet and denied.reason == NOTES[Barrier.CHANNEL]
    assert not Refused(Barrier.PERSON).quiet and not Refused(Barrier.DMS).quiet, "those are told why"
    assert access.decide(in_channel("D1"), User("U1")) is ALLOWED, "a DM is not a channel of the allow list"
    assert access.decide(Conversation("discord", "dm", "5", ""), User("U1")) == Refused(Barrier.DMS)
    assert access.decide(Conversation("discord", "G1", "5", ""), User("U1")) is ALLOWED


def test_admins_commands_always_pass_and_their_messages_do_not(tmp_path):
    access = policy(tmp_path, {"slack": {"*": {"deny_users": ["UADMIN"], "deny_channels": ["C1"], "dms": False}}},
                    admins=("UADMIN",))
    admin = User("UADMIN")
    for where, reply in ((in_channel("C1"), ""), (in_channel("C2"), "off"), (in_channel("D1"), "")):
        assert access.decide(where, admin, reply=reply, command=True) is ALLOWED
        assert not access.decide(where, admin, reply=reply).allowed, "a mention follows the rule like anyone's"
    assert not access.decide(in_channel("C2"), User("U1"), reply="off", command=True).allowed, "members' commands"
    console = Conversation("console", "local", "console", "1")
    assert access.decide(console, User("U1"), reply="off") is ALLOWED, "the console is the operator"


def test_a_person_turned_away_is_told_once_per_cool_down(tmp_path, monkeypatch):
    from engine import access as access_module

    access = policy(tmp_path, {})
    now = [1000.0]
    monkeypatch.setattr(access_module.time, "monotonic", lambda: now[0])
    assert access.first_notice(in_channel("C1"), "U1")
    assert not access.first_notice(in_channel("C2"), "U1"), "another channel of the same workspace: no flood"
    assert access.first_notice(in_channel("C1"), "U2"), "someone else is told"
    now[0] += access_module.NOTICE_COOLDOWN_S + 1
    assert access.first_notice(in_channel("C1"), "U1"), "told again after the cool-down"


def test_the_config_refuses_what_cannot_work(tmp_path):
    with pytest.raises(ConfigError, match=r"access\.slack\.T1: Slack has no roles"):
        make_config(tmp_path, access={"slack": {"T1": {"deny_roles": ["R1"]}}})
    with pytest.raises(ConfigError, match=r"access\.teams: unknown platform"):
        make_config(tmp_path, access={"teams": {"*": {"dms": False}}})
    with pytest.raises(ConfigError, match=r"access\.slack\.T1\.deny_user: unknown key"):
        make_config(tmp_path, access={"slack": {"T1": {"deny_user": ["U1"]}}})
    config = make_config(tmp_path, access={"discord": {123: {"allow_users": [456]}}})
    assert config.access["discord"]["123"].allow_users == ["456"], "ids written as numbers are ids"
    assert config.access["discord"]["123"].dms is None, "unset: as '*' says, else on"


def test_reply_off_is_a_channel_setting(tmp_path):
    from engine.channels import ChannelSettingsStore

    store = ChannelSettingsStore(make_config(tmp_path), {})
    assert store.validate("reply", "OFF") == "off"
    assert store.validate("reply", "on") == "mentions" and store.validate("reply", "mention") == "mentions"


# ---- Slack -----------------------------------------------------------------------------------

def _pdf_share(h, ts: str) -> tuple[dict, dict]:
    import docgen

    file = h.fake.add_file("plan.pdf", docgen.lines_pdf(["The plan."]), "application/pdf", channel=CHANNEL,
                           ts=ts, user=ADA)
    message = h.fake.message("", user=ADA, ts=ts, subtype="file_share", files=[file])
    shared = h.fake.event_body({"type": "file_shared", "file_id": file["id"], "user_id": ADA, "channel_id": CHANNEL,
                                "event_ts": ts})
    return message, shared


async def test_slack_a_channel_switched_off_is_ignored_until_an_admin_switches_it_back(slack_factory):
    h = await slack_factory(knowledge=True)
    [refused] = await h.command("/llm-config", "reply off", user=ADA)
    assert "Only admins" in refused
    [changed] = await h.command("/llm-config", "reply off", user=GRACE)
    assert "reply: off (channel)" in changed

    await h.mention("What is 2 + 2?", user=ADA)
    await h.mention("summarize", user=GRACE)  # an admin's mention is a message too: ignored
    message, shared = _pdf_share(h, h.fake.next_ts())
    assert await h.send(message) == 200 and await h.send(shared) == 200
    await h.settle()
    assert not h.fake.calls_of("chat.postMessage") and not h.fake.ephemerals, "nothing said, to anyone"
    assert not h.fake.downloads, "a file shared there is not even downloaded"

    assert await h.command("/llm-docs", "", user=ADA) == [OFF], "a member's command: the private note"
    assert await h.command("/llm-summarize", "", user=ADA) == [OFF]
    assert "No documents" in (await h.command("/llm-docs", "", user=GRACE))[0], "an admin's command still works"
    [back] = await h.command("/llm-config", "reply mention", user=LIN)  # an admin by Parley's config
    assert "reply: mentions (channel)" in back
    _, ts = await h.mention("What is 2 + 2?", user=ADA)
    assert len(h.fake.bot_messages(CHANNEL, ts)) == 1, "answered again"


async def test_slack_a_denied_user_is_told_once_privately_and_refused_everywhere(slack_factory):
    h = await slack_factory(access={"slack": {T1: {"deny_users": [ADA]}}})
    _, lin_ts = await h.mention("Say hello.", user=LIN)
    [answer] = h.fake.bot_messages(CHANNEL, lin_ts)
    posts = len(h.fake.calls_of("chat.postMessage"))

    for question in ("What is 2 + 2?", "Hello??", "Anyone?"):
        await h.mention(question, user=ADA)
    assert len(h.fake.calls_of("chat.postMessage")) == posts, "no answer, nothing in the channel"
    assert [(e["user"], e["text"]) for e in h.fake.ephemerals] == [(ADA, NOT_YOU)], "one private note, no flood"

    body, key = h.fake.shortcut("summarize_thread", answer, user=ADA)
    assert await h.send(body) == 200
    await h.settle()
    assert [r["text"] for r in h.fake.responses_for(key)] == [NOT_YOU], "the shortcut is refused privately"
    assert len(h.fake.calls_of("chat.postMessage")) == posts, "no summary posted"
    assert await h.command("/llm-stats", "", user=ADA) == [NOT_YOU]

    [buttons] = [e for b in answer.blocks if b["type"] == "context_actions" for e in b["elements"]]
    assert await h.send(h.fake.block_action(answer, buttons["positive_button"]["value"], user=ADA)) == 200
    await h.settle()
    assert h.fake.ephemerals[-1]["text"] == NOT_YOU, "a press is not counted, and says why"
    assert "👍" not in (await h.command("/llm-stats", "", user=GRACE))[0].split("Feedback")[-1][:40]

    assert await h.send(h.fake.home_opened(user=ADA)) == 200
    await h.settle()
    home = str(h.fake.views[ADA])
    assert NOT_YOU in home and "Live model" not in home, "the Home tab says Parley is not theirs"
    assert await h.send(h.fake.home_opened(user=LIN)) == 200
    await h.settle()
    assert "Live model" in str(h.fake.views[LIN])


async def test_slack_an_allow_list_admits_only_its_users_and_admins_keep_their_commands(slack_factory):
    h = await slack_factory(access={"slack": {"*": {"allow_users": [LIN]}}})
    _, ts = await h.mention("What is 2 + 2?", user=LIN)
    assert len(h.fake.bot_messages(CHANNEL, ts)) == 1
    for who in (ADA, GRACE):  # a member, and a workspace admin not on the list
        _, ts = await h.mention("What is 2 + 2?", user=who)
        assert not h.fake.bot_messages(CHANNEL, ts)
    assert [(e["user"], e["text"]) for e in h.fake.ephemerals] == [(ADA, NOT_YOU), (GRACE, NOT_YOU)]
    assert await h.command("/llm-docs", "", user=ADA) == [NOT_YOU]
    assert "smollm2-135m" in (await h.command("/llm-stats", "", user=GRACE))[0], "never locked out of governing"


async def test_slack_dms_off_refuse_dms_the_panel_and_commands_in_dms(slack_factory):
    h = await slack_factory(access={"slack": {T1: {"dms": False}}})
    dm = "D0ADA"
    for text in ("Hi! What is 2 + 2?", "Hello?"):
        assert await h.send(h.fake.message(text, user=ADA, channel=dm, channel_type="im")) == 200
    await h.settle()
    assert not h.fake.bot_messages(dm, None) and [e["text"] for e in h.fake.ephemerals] == [NO_DMS]
    body, key = h.fake.command("/llm-docs", "", user=ADA, channel=dm)
    assert await h.send(body) == 200
    await h.settle()
    assert [r["text"] for r in h.fake.responses_for(key)] == [NO_DMS], "a command in a DM obeys it too"
    body, key = h.fake.command("/llm-new", "", user=ADA, channel=dm)
    assert await h.send(body) == 200
    await h.settle()
    assert [r["text"] for r in h.fake.responses_for(key)] == [NO_DMS], "no fresh start where DMs are off"

    started = h.fake.assistant_thread_started(user=ADA)
    assert await h.send(started) == 200
    await h.settle()
    thread_ts = started["event"]["assistant_thread"]["thread_ts"]
    assert [m.text for m in h.fake.bot_messages("D0PANEL", thread_ts)] == [NO_DMS], "said instead of the greeting"
    assert not h.fake.prompts, "no suggested prompts"

    _, ts = await h.mention("What is 2 + 2?", user=ADA)
    assert len(h.fake.bot_messages(CHANNEL, ts)) == 1, "channels are unaffected"


# ---- Discord ---------------------------------------------------------------------------------

async def _team_with_contractors() -> tuple[FakeDiscord, int, int]:
    """A fake Discord whose guild has a Contractors role (Ada holds it) and Mods (Grace)."""
    fake = await FakeDiscord().start()
    guild = fake.add_guild("Team", owner="Olive")
    mods = fake.add_role(guild, "Mods", permissions=MANAGE_GUILD)
    contractors = fake.add_role(guild, "Contractors")
    people = {"olive": int(fake.guilds[guild]["owner_id"])}
    for name, roles in (("ada", [contractors]), ("grace", [mods, contractors]), ("lin", []), ("robo", [])):
        people[name] = fake.add_user(name.capitalize(), bot=name == "robo")
        fake.add_member(guild, people[name], roles=roles)
    fake.people = people
    return fake, guild, contractors


def _dms_to(h, who: str) -> list[str]:
    channels = [cid for cid, c in h.fake.channels.items()
                if c["type"] == 1 and c["recipients"][0]["id"] == str(h.people[who])]
    return [m.text for cid in channels for m in h.fake.bot_messages(cid)]


async def test_discord_a_denied_role_is_told_in_a_dm_once_and_refused_its_menu(discord_factory):
    fake, guild, contractors = await _team_with_contractors()
    h = await discord_factory(fake=fake, knowledge=True,
                              access={"discord": {str(guild): {"deny_roles": [str(contractors)]}}})
    general = Conversation("discord", str(guild), str(h.general), "1", visibility="public")
    await h.engine.ingest(FileUpload(general, User(str(h.people["lin"])), "notes.txt", b"The offsite is in May."))
    _, thread = await h.mention("Plan the offsite with me.", who="lin")
    for question in ("What is 2 + 2?", "Hello??"):
        await h.say(h.general, "ada", question, mention=True)
    assert len(h.fake.threads_of(h.general)) == 1, "no thread opened for Ada"
    assert all(m.text != NOT_YOU for m in h.fake.bot_messages(h.general)), "nothing said in the channel"
    assert _dms_to(h, "ada") == [NOT_YOU], "one note, in Ada's DM"

    assert await h.slash("ada", "llm-docs") == [NOT_YOU]
    for who, seen in (("ada", []), ("lin", ["notes.txt"])):  # the name autocompletes for a member served
        typing = await h.fake.slash(h.guild, h.general, h.people[who], "llm-docs", {"name": "no"}, focused="name")
        await until(lambda: typing.replies, what="the autocomplete answer")
        assert [c["value"] for c in typing.replies[0]["choices"]] == seen, who
    picked = h.fake.bot_messages(thread)[-1]
    menu = await h.fake.message_menu(h.guild, thread, h.people["ada"], "Summarize", picked.id)
    await until(lambda: any(NOT_YOU in (r["content"] or "") for r in menu.replies), what="the menu's refusal")
    await h.settle()
    assert not h.fake.bot_messages(thread)[-1].text.startswith("**Summary"), "no summary posted"

    # Grace holds the denied role too, but governs the server: her commands pass, her mentions do not.
    changed = await h.slash("grace", "llm-config", {"args": "length short"}, permissions=MANAGE_GUILD)
    assert "length: short (channel)" in changed[-1]


async def test_discord_reply_off_and_dms_off(discord_factory):
    h = await discord_factory(access={"discord": {"dm": {"dms": False}}})
    changed = await h.slash("grace", "llm-config", {"args": "reply off"}, permissions=MANAGE_GUILD)
    assert "reply: off (channel)" in changed[-1]
    await h.say(h.general, "ada", "What is 2 + 2?", mention=True)
    assert not h.fake.threads_of(h.general) and not h.fake.bot_messages(h.general)
    assert not _dms_to(h, "ada"), "a channel switched off tells nobody"
    assert await h.slash("ada", "llm-stats") == [OFF]

    dm = h.fake.add_dm(h.people["lin"])
    await h.say(dm, "lin", "Hi! What is 2 + 2?")
    await h.say(dm, "lin", "Hello?")
    assert [m.text for m in h.fake.bot_messages(dm)] == [NO_DMS], "one note in the DM, no answer"
    fresh = await h.fake.slash_dm(dm, h.people["lin"], "llm-new")
    await until(lambda: fresh.texts, what="the reply to /llm-new")
    assert fresh.texts == [NO_DMS]
