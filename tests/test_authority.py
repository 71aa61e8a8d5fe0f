"""Who may do what (engine/authority.py), tried as an attacker would, through the real slack-bolt
and discord.py paths with the fake far side (tests/fake_slack.py, tests/fake_discord.py); and
docs/security.md's tables checked against the code: the acts against ACTS, the entry points
against every handler the adapters register."""
from __future__ import annotations

import ast
import asyncio
import inspect
import re

import discord
import pytest
from slack_bolt.middleware.assistant.async_assistant import AsyncAssistant
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from conftest import ROOT, make_config
from engine.authority import ACTS, Authority, Role, with_acts_table
from engine.config import parse_config
from engine.types import Conversation, User
from fake_discord import FakeDiscord
from test_discord import MANAGE_GUILD, discord_factory, until  # noqa: F401 - the fixture
from test_slack import ADA, GRACE, LIN, slack_factory  # noqa: F401 - the fixture

pytestmark = pytest.mark.timeout(300)

SECURITY = ROOT / "docs" / "security.md"


# ---- the roles -------------------------------------------------------------------------------

def test_roles_come_from_the_workspace_the_config_and_the_operators_list():
    authority = Authority({"slack": {"T1": ["U0LISTED"]}, "discord": {"*": ["role:42"]}},
                          {"slack": ["U0OP"], "discord": ["900"]})
    t1 = Conversation("slack", "T1", "C1", "")
    t2 = Conversation("slack", "T2", "C1", "")
    assert authority.role_of(t1, User("U0ADA")) is Role.MEMBER
    assert authority.role_of(t1, User("U0GRACE", platform_admin=True)) is Role.WORKSPACE_ADMIN
    assert authority.role_of(t1, User("U0LISTED")) is Role.WORKSPACE_ADMIN
    assert authority.role_of(t2, User("U0LISTED")) is Role.MEMBER, "a workspace's list is that workspace's"
    assert authority.role_of(t2, User("U0OP")) is Role.OPERATOR, "an operator is one everywhere"
    guild = Conversation("discord", "555", "1", "")
    assert authority.role_of(guild, User("7", roles=("42",))) is Role.WORKSPACE_ADMIN
    assert authority.role_of(guild, User("U0OP")) is Role.MEMBER, "operators are listed per platform"
    assert authority.role_of(Conversation("console", "local", "console", ""), User("console")) is Role.OPERATOR
    assert authority.role_of(Conversation("console", "local", "console", ""), User("U1")) is Role.MEMBER
    admin = User("U0GRACE", platform_admin=True)
    assert not authority.allows("switch_model", t1, admin) and authority.allows("configure_channel", t1, admin)
    assert authority.allows("forget_document", t1, User("U0ADA"), owner="U0ADA"), "an owner may forget theirs"
    assert not authority.allows("forget_document", t1, User("U0ADA"), owner="U0BEN")
    assert not authority.allows("switch_model", t1, User("U0ADA"), owner="U0ADA"), "owning gives no process act"


def test_the_rate_limit_exemption_is_operators_unless_the_config_widens_it(tmp_path):
    t1 = Conversation("slack", "T1", "C1", "")
    admin = User("U0GRACE", platform_admin=True)
    operator = User("U0OP")

    def exempt(**limits) -> tuple[bool, bool]:
        config = make_config(tmp_path, operators={"slack": ["U0OP"]}, limits=limits)
        authority = Authority(config.admins, config.operators, config.limits.exempt)
        return authority.exempt(t1, admin), authority.exempt(t1, operator)

    assert exempt() == (False, True), "by default Manage Server or a Slack admin flag lifts no limit"
    assert exempt(exempt="admins") == (True, True)
    assert exempt(exempt="none") == (False, False)
    assert exempt(admins_exempt=True) == (True, True), "the older key still means what it said"
    assert exempt(admins_exempt=False) == (False, False)


# ---- finding 3: Manage Server in a guild anyone can create -----------------------------------

async def slash_in(fake: FakeDiscord, gid: int, channel: int, uid: int, command: str, options: dict | None = None,
                   permissions: int = 0) -> str:
    interaction = await fake.slash(gid, channel, uid, command, options, permissions=permissions)
    await until(lambda: interaction.texts, what=f"the reply to /{command}")
    await asyncio.sleep(0.1)
    assert all(r["ephemeral"] for r in interaction.replies)
    return "\n".join(interaction.texts)


async def two_guilds() -> tuple[FakeDiscord, int, int]:
    """Guild A, where Parley was meant to be, and guild B, which Mallory created and invited it to."""
    fake = await FakeDiscord().start()
    team = fake.add_guild("Team", owner="Olive")
    people = {"olive": int(fake.guilds[team]["owner_id"])}
    for name in ("ada", "lin", "oscar"):
        people[name] = fake.add_user(name.capitalize())
        fake.add_member(team, people[name])
    other = fake.add_guild("Mallory's place", owner="Mallory")
    people["mallory"] = int(fake.guilds[other]["owner_id"])
    fake.people = people
    return fake, team, other


async def test_manage_server_in_another_guild_governs_that_guild_only(discord_factory):
    fake, team, other = await two_guilds()
    oscar, mallory = fake.people["oscar"], fake.people["mallory"]
    h = await discord_factory(fake=fake, operators={"discord": [str(oscar)]})  # discord.guilds: [] (all served)
    assert h.guild == team and not h.adapter.guilds_allowed
    mine = fake.channel_named(other, "general")

    refused = await slash_in(fake, other, mine, mallory, "llm-model", {"model": "smollm2-135m-b"}, MANAGE_GUILD)
    assert "FORBIDDEN" in refused and "operators" in refused
    assert h.engine.live_model == "smollm2-135m", "the live model of every workspace stays"
    loading = await slash_in(fake, other, mine, mallory, "llm-config", {"args": "model smollm2-135m-b"}, MANAGE_GUILD)
    assert "FORBIDDEN" in loading and not h.engine.lineup.backends()[1:], "no second model loaded"
    figures = await slash_in(fake, other, mine, mallory, "llm-stats", permissions=MANAGE_GUILD)
    assert "This workspace today" in figures
    assert not re.search(r"^\W*(Memory|Queue|Latency|Errors|Sessions|Requests)", figures, re.MULTILINE), figures
    # Her own guild's channels are hers to set.
    changed = await slash_in(fake, other, mine, mallory, "llm-config", {"args": "length short"}, MANAGE_GUILD)
    assert "length: short (channel)" in changed

    # A configured operator, without Manage Server anywhere, governs the process.
    switched = await slash_in(fake, team, h.general, oscar, "llm-model", {"model": "smollm2-135m-b"})
    assert switched.startswith("Now answering with **smollm2-135m-b**") and h.engine.live_model == "smollm2-135m-b"
    assert "Memory" in await slash_in(fake, team, h.general, oscar, "llm-stats")

    # The audit trail: Mallory reads her guild's (her refusals among them), not guild A's.
    hers = await slash_in(fake, other, mine, mallory, "llm-audit", permissions=MANAGE_GUILD)
    assert "**switch_model** smollm2-135m-b · refused (ref " in hers
    assert "**load_model** smollm2-135m-b · refused" in hers and "**configure_channel** length short · done" in hers
    assert f"discord/{team}" not in hers and "smollm2-135m-b · done" not in hers
    everything = await slash_in(fake, team, h.general, oscar, "llm-audit")
    assert "**switch_model** smollm2-135m-b · done" in everything and f"discord/{other}" in everything
    assert "FORBIDDEN" in await slash_in(fake, team, h.general, fake.people["ada"], "llm-audit")


async def test_a_slack_workspace_admin_who_is_no_operator_governs_the_workspace_not_the_process(slack_factory):
    h = await slack_factory(operators={"slack": [LIN]})
    refused = await h.command("/llm-model", "smollm2-135m-b", user=GRACE)  # a workspace admin (users.info)
    assert "FORBIDDEN" in refused[-1] and h.engine.live_model == "smollm2-135m"
    loading = await h.command("/llm-config", "workspace model smollm2-135m-b", user=GRACE)
    assert "FORBIDDEN" in loading[-1]
    settings = await h.engine.channel_settings(Conversation("slack", h.fake.team_id, "C0GENERAL", ""))
    assert settings.origins["model"] == "default"
    assert "length: short (channel)" in (await h.command("/llm-config", "length short", user=GRACE))[-1]
    figures = (await h.command("/llm-stats", "", user=GRACE))[-1]
    assert "This workspace today" in figures and "Memory" not in figures and "Latency" not in figures

    assert await h.send(h.fake.home_opened(user=GRACE)) == 200
    await h.settle()
    home = "\n".join(b.get("text", {}).get("text", "") for b in h.fake.views[GRACE]["blocks"])
    assert "For admins" in home and "This workspace today" in home and "Memory" not in home

    switched = await h.command("/llm-model", "smollm2-135m-b", user=LIN)  # the operator
    assert switched[-1].startswith("Now answering with *smollm2-135m-b*")
    assert "Memory" in (await h.command("/llm-stats", "", user=LIN))[-1]
    assert "FORBIDDEN" in (await h.command("/llm-audit", "", user=ADA))[-1]
    entries = [(e.act, e.user_id, e.outcome) for e in await h.engine.audit.newest(20)]
    assert ("switch_model", GRACE, "refused") in entries and ("load_model", GRACE, "refused") in entries
    assert ("switch_model", LIN, "done") in entries and ("view_audit", ADA, "refused") in entries


# ---- docs/security.md against the code -------------------------------------------------------

def test_the_acts_table_is_written_from_the_code():
    text = SECURITY.read_text(encoding="utf-8")
    assert text == with_acts_table(text), "run `python -m engine.authority docs/security.md`"
    for act in ACTS.values():
        assert f"| `{act.name}` |" in text


def entry_rows() -> dict[str, dict[tuple[str, str], list[str]]]:
    """docs/security.md's entry-point table: platform -> (kind, handler) -> acts."""
    section = SECURITY.read_text(encoding="utf-8").split("## Entry points", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, dict[tuple[str, str], list[str]]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in ("platform", "---"):
            continue
        platform, kind, handler, acts = cells
        rows.setdefault(platform, {})[(kind, handler.strip("`"))] = re.findall(r"`(\w+)`", acts)
    return rows


def test_every_entry_point_names_acts_of_the_table_and_every_act_has_a_way_in():
    rows = entry_rows()
    named = {act for platform in rows.values() for acts in platform.values() for act in acts}
    assert named <= set(ACTS), named - set(ACTS)
    assert set(ACTS) - named == {"skip_rate_limits"}, "every act is reached from somewhere (limits apply to all)"


def _slack_body(kind: str, handler: str) -> dict:
    return {"event": {"type": "event_callback", "event": {"type": handler}},
            "command": {"command": handler},
            "shortcut": {"type": "message_action", "callback_id": handler},
            "action": {"type": "block_actions", "actions": [{"action_id": handler}]},
            "view": {"type": "view_submission", "view": {"type": "modal", "callback_id": handler}}}[kind]


async def _matches(listener, body: dict) -> bool:
    request = AsyncBoltRequest(body=body, mode="socket_mode")
    for matcher in listener.matchers:
        if not await matcher.async_matches(request, BoltResponse(status=200)):
            return False
    return True


async def test_the_slack_entry_points_are_the_registered_listeners(tmp_path):
    from adapters.slack import SlackAdapter
    from engine.core import Engine

    config = make_config(tmp_path / "data", slack={"mode": "http"}, knowledge={"enabled": False})
    adapter = SlackAdapter(Engine(config), config, bot_token="xoxb-0", signing_secret="s",
                           api_url="http://127.0.0.1:9/api/")  # registered, never started
    documented = entry_rows()["slack"]
    listeners = {(kind, handler) for kind, handler in documented if kind != "assistant"}
    for listener in adapter.app._async_listeners:
        hits = [row for row in listeners if await _matches(listener, _slack_body(*row))]
        assert hits, f"{listener.ack_function.__qualname__} is registered but has no row in docs/security.md"
    for row in listeners:
        assert [x for x in adapter.app._async_listeners if await _matches(x, _slack_body(*row))], \
            f"{row} is in docs/security.md but nothing handles it"
    [panel] = [m for m in adapter.app._async_middleware_list if isinstance(m, AsyncAssistant)]
    registered = {"thread_context_changed"}  # Bolt's own handler saves the viewed channel when none is given
    registered |= {name for name in ("thread_started", "user_message", "thread_context_changed", "bot_message")
                   if getattr(panel, f"_{name}_listeners")}
    assert registered == {handler for kind, handler in documented if kind == "assistant"}


async def test_the_discord_and_console_entry_points_are_the_registered_handlers(discord_factory):
    from adapters.chat.commands import COMMANDS
    from adapters.console import CONSOLE_COMMANDS
    from adapters.discord import DiscordAdapter

    h = await discord_factory()
    tree = h.adapter.tree
    found = {("command", c.name) for c in tree.get_commands(type=discord.AppCommandType.chat_input)}
    found |= {("menu", c.name) for c in tree.get_commands(type=discord.AppCommandType.message)}
    found |= {("autocomplete", f"{c.name} {p.name}") for c in tree.get_commands(type=discord.AppCommandType.chat_input)
              for p in c.parameters if p.autocomplete}
    found |= {("button", item.__name__) for item in h.adapter._connection._view_store._dynamic_items.values()}
    found |= {("modal", cls.__name__) for cls in _subclasses(discord.ui.Modal) if cls.__module__.startswith("adapters.")}
    found |= {("event", name) for name, value in vars(DiscordAdapter).items()
              if name.startswith("on_") and inspect.iscoroutinefunction(value)}
    assert found == set(entry_rows()["discord"])

    console = {("line", c) for c in CONSOLE_COMMANDS} | {("line", f"/{name}") for name in COMMANDS}
    assert console | {("line", "a message")} == set(entry_rows()["console"])


def _subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _subclasses(sub)
    return out


def test_adapters_reach_the_process_only_through_the_engines_commands():
    """An adapter that read the full figures (engine.stats), switched through the lineup or asked
    admission or the authority itself would skip the check the Engine's commands make."""
    bypass = re.compile(r"\bengine\.(stats|lineup|admission|authority|audit|channels)\b")
    offenders = []
    for path in sorted((ROOT / "adapters").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and bypass.fullmatch(ast.unparse(node)):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node)}")
    assert not offenders, offenders


def test_operators_and_audit_keys_are_validated():
    base = {"models": [{"name": "m", "source": "packaged"}]}
    assert parse_config({**base, "operators": {"slack": ["U1", 123]}}).operators == {"slack": ["U1", "123"]}
    with pytest.raises(Exception, match="audit.keep"):
        parse_config({**base, "audit": {"keep": 0}})
    with pytest.raises(Exception, match="limits.exempt"):
        parse_config({**base, "limits": {"exempt": "everyone"}})
