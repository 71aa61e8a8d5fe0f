"""A screenshot shared with Parley in Slack or Discord: its text is read (OCR, in a parse worker) into the
question it came with, so the answer is about what it says; a picture without text is said so;
the same screenshot shared without a mention stays quiet (never downloaded, nothing posted)."""
from __future__ import annotations

import io

import pytest
from PIL import Image, ImageDraw, ImageFont

from test_discord import discord_factory  # noqa: F401 - the fixtures, shared
from test_slack import ADA, CHANNEL, slack_factory  # noqa: F401

pytestmark = pytest.mark.timeout(240)

PLANTED = "Retry after rotating the TLS certificate."


def screenshot(lines: list[str]) -> bytes:
    picture = Image.new("RGB", (900, 60 + 50 * len(lines)), "white")
    draw = ImageDraw.Draw(picture)
    for i, line in enumerate(lines):
        draw.text((20, 30 + 50 * i), line, fill=(30, 30, 30), font=ImageFont.load_default(size=26))
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


def user_turns(h, thread_ts: str) -> list[str]:
    session = h.engine.sessions.get(f"slack/{h.fake.team_id}/{CHANNEL}/{thread_ts}")
    return [t.text for t in session.turns if t.role == "user"] if session else []


async def test_a_screenshot_shared_with_a_mention_is_read_into_the_question(slack_factory):  # noqa: F811
    h = await slack_factory()
    shot_ts = h.fake.next_ts()
    shot = h.fake.add_file("error.png", screenshot(["Build failed: disk quota exceeded", PLANTED]), "image/png",
                           channel=CHANNEL, ts=shot_ts, user=ADA)
    # Shared in passing: nothing downloaded, nothing said.
    assert await h.send(h.fake.message("", user=ADA, ts=shot_ts, subtype="file_share", files=[shot])) == 200
    await h.settle()
    assert not h.fake.downloads and not h.fake.calls_of("chat.postMessage") and not h.fake.ephemerals

    # With a mention: downloaded, read, and the question the engine answers holds its text.
    body, ts = await h.mention("what does this error mean?", user=ADA, files=[shot])
    [question] = user_turns(h, ts)
    assert question.startswith("[Ada shared error.png; its text:\n"), question
    assert "TLS certificate" in question and "disk quota exceeded" in question
    assert question.endswith("what does this error mean?")
    assert h.fake.downloads and h.fake.bot_messages(CHANNEL, ts)  # answered in the thread
    assert not h.fake.ephemerals

    # A picture without text, with a bare mention: the reply says no text was found, and nothing
    # is left to ask the model.
    blank_ts = h.fake.next_ts()
    blank = h.fake.add_file("photo.png", screenshot([]), "image/png", channel=CHANNEL, ts=blank_ts, user=ADA)
    body, ts = await h.mention("", user=ADA, files=[blank])
    assert not user_turns(h, ts)
    said = [m.text for m in h.fake.bot_messages(CHANNEL, ts)]
    assert said == ["I found no text in `photo.png`: tell me in words what you would like to know."], said


async def test_a_screenshot_attached_with_a_mention_in_discord_is_read_into_the_question(discord_factory):  # noqa: F811
    h = await discord_factory()
    shot = h.fake.add_file(h.general, "error.png", screenshot([PLANTED]), "image/png")
    _, thread = await h.mention("", attachments=[shot])
    [question] = [t.text for t in h.engine.sessions.get(f"discord/{h.guild}/{h.general}/{thread}").turns
                  if t.role == "user"]
    assert question.startswith("[Ada shared error.png; its text:\n") and "TLS certificate" in question, question
    assert question.endswith("What does this say?")
