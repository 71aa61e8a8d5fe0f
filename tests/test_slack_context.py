"""Conversations, not messages, through the real Slack adapter (slack-bolt in HTTP mode, the fake
Slack on loopback): who said what reaches the model, and a thread Parley joins midway is read.
Assertions are on the prompt the engine sent the model, never on the tiny model's wording."""
from __future__ import annotations

import pytest

from conftest import spy_prompts
from test_slack import ADA, CHANNEL, GRACE, LIN, slack_factory  # noqa: F401 - the fixture is used by name

pytestmark = pytest.mark.timeout(240)


async def test_each_person_in_a_thread_is_named_in_the_prompt(slack_factory):
    h = await slack_factory()
    prompts = spy_prompts(h.engine)
    _, ts = await h.mention("The launch moved to Tuesday.", user=ADA)
    assert await h.send(h.fake.message("Who moved the launch?", user=GRACE, thread_ts=ts)) == 200
    await h.settle()
    assert len(h.fake.bot_messages(CHANNEL, ts)) == 2
    first, second = prompts
    assert first[-1]["content"] == "The launch moved to Tuesday.", "one person alone: no names"
    people = [m["content"] for m in second if m["role"] == "user"]
    assert people == ["Ada: The launch moved to Tuesday.", "Grace: Who moved the launch?"]
