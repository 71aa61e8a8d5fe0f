"""Vision models (issue 26): a picture shared with a mention reaches an openai_compatible model marked
`vision: true` as an image_url part of the asker's turn (downscaled, re-encoded, without metadata),
through the real Slack path, the real OCR worker and a real server on loopback (ops_servers.FakeOpenAI);
a model without vision reads the picture's OCR text instead, also when a thread that began on the
vision model goes on without it; a picture past the bounds, or a broken one, is refused with a note
and nothing of it is sent, while the question still is. The pictures' base64 never reaches the log."""
from __future__ import annotations

import base64
import io
import logging

import pytest
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from conftest import collect, make_config
from engine.core import Engine
from engine.types import AnswerDone, ChatRequest, Conversation, User
from ops_servers import FakeOpenAI
from test_discord import discord_factory  # noqa: F401 - the fixtures, shared
from test_slack import ADA, CHANNEL, GRACE, LIN, slack_factory  # noqa: F401

pytestmark = pytest.mark.timeout(240)

PLANTED = "Retry after rotating the TLS certificate."


def screenshot(width: int = 2400, height: int = 1200) -> bytes:
    """A large PNG with a line of text and a metadata chunk that must not travel."""
    picture = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(picture).text((40, 40), PLANTED, fill=(20, 20, 20), font=ImageFont.load_default(size=64))
    info = PngImagePlugin.PngInfo()
    info.add_text("Location", "51.5007 N, 0.1246 W")
    out = io.BytesIO()
    picture.save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def remote(name: str, server: FakeOpenAI, **extra) -> dict:
    return {"name": name, "source": "openai_compatible", "base_url": server.base_url, "api_model": name,
            "context_window": 8192, "generation": {"temperature": 0.0, "max_new_tokens": 16}, **extra}


@pytest.fixture
async def servers():
    eyes = await FakeOpenAI(reply="It is a certificate error.").start()
    words = await FakeOpenAI(reply="Rotate the certificate.").start()
    yield eyes, words
    await eyes.stop()
    await words.stop()


def image_parts(body: dict) -> list[dict]:
    return [part for message in body["messages"] if isinstance(message["content"], list)
            for part in message["content"] if part.get("type") == "image_url"]


def texts(body: dict) -> str:
    """Every text the model was given, parts included."""
    said = []
    for message in body["messages"]:
        content = message["content"]
        said += [content] if isinstance(content, str) else [p["text"] for p in content if p.get("type") == "text"]
    return "\n".join(said)


def decoded(part: dict) -> Image.Image:
    url = part["image_url"]["url"]
    head, _, data = url.partition(",")
    assert head in ("data:image/png;base64", "data:image/jpeg;base64"), head
    picture = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
    picture.load()
    assert picture.format in ("PNG", "JPEG") and f"image/{picture.format.lower()}" in head
    return picture


async def test_a_vision_model_sees_the_picture_and_a_model_without_vision_reads_its_text(
        slack_factory, servers, caplog, tmp_path):  # noqa: F811
    caplog.set_level(logging.DEBUG)
    eyes, words = servers
    h = await slack_factory(models=[remote("eyes", eyes, vision=True), remote("words", words)],
                            default_model="eyes", operators={"slack": [LIN]}, data_dir=tmp_path / "data")
    shot = h.fake.add_file("error.png", screenshot(), "image/png", channel=CHANNEL, ts=h.fake.next_ts(), user=ADA)
    _, ts = await h.mention("what does this error mean?", user=ADA, files=[shot])

    # The vision model: the asker's turn is its text (the OCR note, then the question) and the picture.
    [body] = eyes.requests
    asked = body["messages"][-1]
    assert asked["role"] == "user" and isinstance(asked["content"], list)
    assert asked["content"][0]["type"] == "text" and asked["content"][0]["text"].endswith("what does this error mean?")
    assert "TLS certificate" in asked["content"][0]["text"]  # the OCR text goes along (engine/vision.py says why)
    [part] = image_parts(body)
    picture = decoded(part)
    assert picture.size == (1024, 512)  # 2400 x 1200, at most 1,024 a side
    assert "Location" not in picture.info and not picture.getexif()  # no metadata travels
    assert [m.text for m in h.fake.bot_messages(CHANNEL, ts)][-1].startswith("It is a certificate error.")

    # The thread goes on: the picture was that turn's only; its text stays in the history.
    await h.mention("and how do I rotate it?", user=ADA, thread_ts=ts)
    follow_up = eyes.requests[-1]
    assert not image_parts(follow_up) and "TLS certificate" in texts(follow_up)

    # The live model switched to one without vision: the same picture in a new thread goes as its text.
    assert (await h.command("/llm-model", "words", user=LIN))[-1].startswith("Now answering with *words*")
    shot = h.fake.add_file("again.png", screenshot(), "image/png", channel=CHANNEL, ts=h.fake.next_ts(), user=ADA)
    await h.mention("and this one?", user=ADA, files=[shot])
    [body] = words.requests
    assert all(isinstance(m["content"], str) for m in body["messages"])
    assert "[Ada shared again.png; its text:" in body["messages"][-1]["content"] and "TLS certificate" in texts(body)

    # A thread that began on the vision model goes on where that model is gone (a config without
    # it: the live model answers): the picture's text, no image part.
    await h.adapter.close(grace_s=1)
    await h.engine.stop()
    config = make_config(tmp_path / "data", models=[remote("words", words)], default_model="words",
                         knowledge={"enabled": False})
    engine = Engine(config, model_loader=lambda cfg: pytest.fail("a remote model is never loaded"))
    await engine.start()
    try:
        where = Conversation("slack", h.fake.team_id, CHANNEL, ts)
        _, final, _ = await collect(engine, ChatRequest(where=where, user=User(ADA, "Ada"), text="still there?"))
    finally:
        await engine.stop()
    assert isinstance(final, AnswerDone) and final.model == "words"
    body = words.requests[-1]
    assert not image_parts(body) and "TLS certificate" in texts(body) and body["messages"][-1]["content"] == "still there?"

    # Nothing of a picture's bytes reached the log.
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "base64" not in logged and part["image_url"]["url"][30:90] not in logged


async def test_a_picture_too_large_or_broken_is_refused_and_the_question_still_goes(slack_factory, servers):  # noqa: F811
    eyes, _ = servers
    h = await slack_factory(models=[remote("eyes", eyes, vision=True)], default_model="eyes")
    h.engine.config.knowledge.vision_max_pixels = 1_000_000
    huge = h.fake.add_file("huge.png", screenshot(), "image/png", channel=CHANNEL, ts=h.fake.next_ts(), user=ADA)
    broken = h.fake.add_file("broken.png", b"\x89PNG\r\n\x1a\n" + bytes(300), "image/png", channel=CHANNEL,
                             ts=h.fake.next_ts(), user=ADA)
    _, ts = await h.mention("why does the deploy fail?", user=ADA, files=[huge, broken])
    said = [m.text for m in h.fake.bot_messages(CHANNEL, ts)]
    assert said[0] == ("`huge.png` is larger than the pictures I look at (FILE_TOO_COMPLEX): "
                       "share a smaller one or a crop."), said
    assert said[1] == "I could not read `broken.png` as a picture (FILE_UNREADABLE).", said
    assert said[-1].startswith("It is a certificate error.")  # the question was still answered
    [body] = eyes.requests
    assert not image_parts(body) and "TLS certificate" not in texts(body)
    assert body["messages"][-1]["content"].endswith("why does the deploy fail?")

    # A picture without text, with a bare mention: no note, the vision model is asked about it.
    blank = io.BytesIO()
    Image.new("RGB", (300, 200), (40, 120, 200)).save(blank, format="PNG")
    sky = h.fake.add_file("sky.png", blank.getvalue(), "image/png", channel=CHANNEL, ts=h.fake.next_ts(), user=ADA)
    _, ts = await h.mention("", user=ADA, files=[sky])
    assert [m.text for m in h.fake.bot_messages(CHANNEL, ts)] == ["It is a certificate error."]
    body = eyes.requests[-1]
    [part] = image_parts(body)
    assert decoded(part).size == (300, 200) and texts(body).endswith("What does this say?")

    # Someone else's picture in the thread is not the asker's: it never reaches the model.
    theirs = h.fake.add_file("theirs.png", screenshot(600, 300), "image/png", channel=CHANNEL,
                             ts=h.fake.next_ts(), user=GRACE)
    posted = h.fake.add_message("look at this", user=GRACE, files=[theirs])
    downloads = len(h.fake.downloads)
    await h.mention("what do you make of it?", user=ADA, thread_ts=posted.ts)
    assert not image_parts(eyes.requests[-1]) and len(h.fake.downloads) == downloads

    # Past the size for a vision model: refused before it is downloaded.
    h.engine.config.knowledge.vision_max_mb = 0.001
    big = h.fake.add_file("big.png", screenshot(), "image/png", channel=CHANNEL, ts=h.fake.next_ts(), user=ADA)
    downloads = len(h.fake.downloads)
    _, ts = await h.mention("", user=ADA, files=[big])
    assert len(h.fake.downloads) == downloads and len(eyes.requests) == 3  # nothing fetched, nothing asked
    assert [m.text for m in h.fake.bot_messages(CHANNEL, ts)] == [
        "`big.png` is larger than the pictures I look at (FILE_TOO_LARGE): share a smaller one or a crop."]


async def test_discord_pictures_reach_a_vision_model_up_to_the_limit_of_a_message(discord_factory, servers):  # noqa: F811
    eyes, _ = servers
    h = await discord_factory(models=[remote("eyes", eyes, vision=True)], default_model="eyes")
    h.engine.config.knowledge.vision_max_pictures = 1
    first = h.fake.add_file(h.general, "first.png", screenshot(900, 120), "image/png")
    second = h.fake.add_file(h.general, "second.jpg", _jpeg(), "image/jpeg")
    await h.mention("what went wrong?", attachments=[first, second])
    [body] = eyes.requests
    [part] = image_parts(body)  # the first picture; the second counts for its text only
    assert decoded(part).size == (900, 120)
    asked = texts(body)
    assert "[Ada shared first.png; its text:" in asked and "[Ada shared second.jpg; its text:" in asked
    assert asked.count("Retry after rotating") == 2 and asked.endswith("what went wrong?")


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(screenshot(900, 120))).convert("RGB").save(out, format="JPEG", quality=95)
    return out.getvalue()


def test_a_servers_error_that_echoes_a_picture_is_logged_without_it():
    from engine.config import ModelConfig
    from engine.runtime.remote import RemoteBackend

    backend = RemoteBackend(ModelConfig(name="eyes", source="openai_compatible", base_url="http://127.0.0.1:9/v1",
                                        api_model="eyes", vision=True))
    data = base64.b64encode(screenshot(200, 100)).decode()
    error = backend.http_error(400, f'{{"error": "bad image_url data:image/png;base64,{data}"}}')
    assert data[:40] not in error.detail and "[picture data]" in error.detail
    bare = backend.http_error(400, f"cannot decode {data}")
    assert data[:40] not in bare.detail


@pytest.mark.parametrize("change, key", [
    (lambda data: data["models"][0].update(vision=True), "models[0].vision"),  # the packaged model
    (lambda data: data.update(knowledge={"vision_max_side": 10}), "knowledge.vision_max_side"),
    (lambda data: data.update(knowledge={"vision_max_pixels": 500_000_000}), "knowledge.vision_max_pixels"),
    (lambda data: data.update(knowledge={"vision_max_mb": 0}), "knowledge.vision_max_mb"),
    (lambda data: data.update(knowledge={"vision_max_pictures": 0}), "knowledge.vision_max_pictures"),
])
def test_the_vision_options_are_checked(tmp_path, change, key):
    from engine.config import parse_config
    from engine.config_schema import ConfigError

    data = {"models": [{"name": "small", "source": "packaged"}], "data_dir": str(tmp_path)}
    change(data)
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        parse_config(data)
