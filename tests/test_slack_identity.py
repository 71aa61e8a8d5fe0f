"""Which Slack workspace an act belongs to, and who is an admin there, through real slack-bolt
and the fake Slack: a message shortcut and a button press (whose payloads name the workspace as
`team.id`, not `team_id`) run under their workspace, so a deployment serving only its own
workspace still answers them; and a Slack Connect guest who administers their own organisation
is a member in ours: they cannot change a channel's settings, while our workspace's admin can."""
from __future__ import annotations

import pytest

from engine.types import Conversation
from test_slack import ADA, CHANNEL, GRACE, slack_factory  # noqa: F401 - the fixture is used by name

pytestmark = pytest.mark.timeout(240)

EVE = "U0EVE"  # an admin of another organisation, in our shared channel through Slack Connect


async def test_a_shortcut_and_a_button_press_run_under_their_workspace(slack_factory):
    h = await slack_factory(slack={"workspaces": ["T0001"]})  # only our own workspace is served
    seen: list[Conversation] = []
    summarize = h.engine.summarize

    async def spy(where, *args, **kwargs):
        seen.append(where)
        return await summarize(where, *args, **kwargs)

    h.engine.summarize = spy
    root = h.fake.add_message("Planning the offsite.", user=ADA)
    h.fake.add_message("Budget is 12,000 euros.", user=GRACE, thread_ts=root.ts)
    body, key = h.fake.shortcut("summarize_thread", root, user=ADA)
    assert await h.send(body) == 200
    await h.settle()
    assert not h.fake.responses_for(key), "not refused as another workspace's"
    [summary] = h.fake.bot_messages(CHANNEL, root.ts)
    assert summary.text.startswith("*Summary of this thread*")
    assert [w.workspace for w in seen] == ["T0001"], "the summary runs under the workspace it was asked in"

    _, ts = await h.mention("Name a colour.", user=ADA)
    [answer] = h.fake.bot_messages(CHANNEL, ts)
    answer_id = answer.blocks[-1]["elements"][0]["positive_button"]["value"].split(":", 1)[1]
    assert await h.send(h.fake.block_action(answer, f"up:{answer_id}", user=GRACE)) == 200
    await h.settle()
    assert [e["user"] for e in h.fake.ephemerals] == [GRACE], "the press is counted and its presser thanked"


async def test_another_organisations_admin_cannot_change_our_channel_settings(slack_factory):
    h = await slack_factory()
    h.fake.add_user(EVE, "Eve", admin=True, team="T0OTHER")  # is_admin: of her own organisation
    where = Conversation("slack", h.fake.team_id, CHANNEL, "")
    before = (await h.engine.channel_settings(where)).length

    refused = await h.command("/llm-config", "length short", EVE)
    assert (await h.engine.channel_settings(where)).length == before, refused
    assert refused, "she is told why"

    await h.command("/llm-config", "length short", GRACE)  # an admin of this workspace
    assert (await h.engine.channel_settings(where)).length == "short"
