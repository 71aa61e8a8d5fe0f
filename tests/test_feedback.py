"""👍 / 👎 on answers: counted once per person and answer (engine/feedback.py, a real SqliteDict),
pressed on Slack with signed block_actions requests through real slack-bolt, shown by /llm-stats
and the Prometheus metrics."""
from __future__ import annotations

import time

import pytest

from engine.feedback import DAY_S, AnswerRecord, FeedbackStore
from engine.metrics import metric_families
from test_discord import discord_factory  # noqa: F401 - the fixture
from test_slack import ADA, CHANNEL, GRACE, LIN, slack_factory  # noqa: F401 - the fixture

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def store(tmp_path):
    from sqlitedict import SqliteDict

    path = str(tmp_path / "feedback.sqlite")
    made = FeedbackStore(*(SqliteDict(path, tablename=t, autocommit=True) for t in ("answers", "votes", "totals")))
    yield made
    made.close()


def record(answer_id: str, model: str, at: float) -> AnswerRecord:
    return AnswerRecord(answer_id, "slack", "T1", "C1", model, documents=False, latency_s=1.0, at=at)


def test_one_vote_per_person_per_answer_counted_over_the_day_and_the_week(store):
    now = time.time()
    store.register(record("a" * 16, "m1", now - 3 * DAY_S))
    store.register(record("b" * 16, "m1", now))
    store.register(record("c" * 16, "m2", now))
    assert store.vote("a" * 16, "u1", True, now - 3 * DAY_S).counted  # three days ago
    assert store.vote("b" * 16, "u1", True, now).counted
    assert not store.vote("b" * 16, "u1", True, now).counted, "a repeat (or a replay) is not counted again"
    assert store.vote("b" * 16, "u2", False, now).counted
    changed = store.vote("c" * 16, "u1", True, now)
    assert changed.counted and store.vote("c" * 16, "u1", False, now).counted, "the other button replaces it"
    assert not store.vote("f" * 16, "u1", True, now).known, "an answer not on record is not counted"

    m1, m2 = store.counts(now)
    assert (m1.model, m1.day_up, m1.day_down, m1.week_up, m1.week_down) == ("m1", 1, 1, 2, 1)
    assert (m2.model, m2.day_up, m2.day_down) == ("m2", 0, 1)
    assert store.comment("b" * 16, "u2", "It made up the budget.") and not store.comment("b" * 16, "u9", "x")
    assert store.totals() == {("m1", "up"): 2, ("m1", "down"): 1, ("m2", "up"): 1, ("m2", "down"): 1}


async def test_presses_are_counted_once_thanked_privately_and_shown_to_admins(slack_factory):
    h = await slack_factory()
    _, ts = await h.mention("Say hello to the team.", user=ADA)
    [answer] = h.fake.bot_messages(CHANNEL, ts)
    [buttons] = [e for b in answer.blocks if b["type"] == "context_actions" for e in b["elements"]]
    up, down = buttons["positive_button"]["value"], buttons["negative_button"]["value"]

    press_up = h.fake.block_action(answer, up, user=ADA)
    assert await h.send(press_up) == 200
    assert await h.send(h.fake.block_action(answer, down, user=GRACE)) == 200
    await h.settle()
    assert await h.send(press_up) == 200  # Slack (or an attacker) replays the same signed press
    await h.settle()
    assert await h.send(h.fake.block_action(answer, up, user=LIN), secret="not-the-secret") == 401

    thanks = {e["user"]: e for e in reversed(h.fake.ephemerals)}  # each one's first
    assert set(thanks) == {ADA, GRACE} and all(e["thread_ts"] == ts for e in thanks.values())
    assert thanks[ADA]["text"].startswith("Thanks for the feedback")
    assert "what was wrong" in thanks[GRACE]["text"]
    assert [e["text"] for e in h.fake.ephemerals if e["user"] == ADA][-1].startswith("Your feedback on that answer "
                                                                                    "is already recorded")

    stats = (await h.command("/llm-stats", "", user=GRACE))[0]
    assert "smollm2-135m: last day 1 👍 / 1 👎 (50% positive); last week 1 👍 / 1 👎 (50% positive)" in stats
    assert "Feedback" not in (await h.command("/llm-stats", "", user=ADA))[0], "operator figures are for admins"
    report = await h.engine.stats(None)
    votes = next(f for f in metric_families(report.values) if f.name == "parley_feedback_votes")
    assert {(s.labels["model"], s.labels["rating"]): s.value for s in votes.samples
            if s.name.endswith("_total")} == {("smollm2-135m", "up"): 1, ("smollm2-135m", "down"): 1}

    # The 👎's offer opens the "what was wrong?" form; what is sent there is kept with the vote.
    offer = h.fake.block_action(answer, down.split(":")[1], user=GRACE, action_id="parley_feedback_comment")
    assert await h.send(offer) == 200
    await h.settle()
    [form] = h.fake.opened_views
    assert form["type"] == "modal" and form["private_metadata"] == down.split(":")[1]


async def test_discord_answers_carry_the_same_buttons_writing_to_the_same_counts(discord_factory):
    from test_discord import until

    h = await discord_factory()
    _, thread = await h.mention("Say hello to the team.")
    [answer] = h.fake.bot_messages(thread)
    ids = [c["custom_id"] for row in answer.components for c in row["components"]]
    assert len(ids) == 2 and ids[0].startswith("parley:fb:up:") and ids[1].startswith("parley:fb:down:")

    presses = []
    for person, button in (("ada", ids[0]), ("grace", ids[1]), ("ada", ids[0])):  # one after the other
        press = await h.fake.press(h.guild, h.people[person], answer.id, button)
        await until(lambda p=press: p.texts, what="the thank-you")
        presses.append(press)
    up, down, again = presses
    assert all(r["ephemeral"] for p in (up, down, again) for r in p.replies)
    assert up.texts[0].startswith("Thanks for the feedback") and "what was wrong" in down.texts[0]
    assert again.texts[0].startswith("Your feedback on that answer is already recorded")
    [counts] = await h.engine.feedback.counts()
    assert (counts.model, counts.day_up, counts.day_down) == ("smollm2-135m", 1, 1)
