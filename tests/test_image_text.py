"""Text in images, read offline: a screenshot rendered here (PIL) with a planted sentence is read
back in a parse worker by RapidOCR, whose models ship in its wheel (nothing is fetched: the
tests run with HF_HUB_OFFLINE and no network); a picture without text reads as "", a file that
is no picture is refused with its code, and a picture too large to decode is refused unread."""
from __future__ import annotations

import io
import time

import pytest
from PIL import Image, ImageDraw, ImageFont

from engine.errors import ErrorCode, ParleyError
from engine.knowledge.bounds import ParseLimits
from engine.knowledge.pictures import image_text

PLANTED = "ERROR 4012: connection to billing-db refused"


def screenshot(lines: list[str], size: tuple[int, int] = (900, 160)) -> bytes:
    """A white window with dark lines of text, as a screenshot of an error shows it."""
    picture = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=26)
    for i, line in enumerate(lines):
        draw.text((20, 30 + 50 * i), line, fill=(30, 30, 30), font=font)
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


def test_a_screenshot_s_sentence_is_read_back_in_a_parse_worker():
    data = screenshot([PLANTED, "Retry after rotating the TLS certificate."])
    started = time.perf_counter()
    text = image_text("error.png", data, ParseLimits())
    seconds = time.perf_counter() - started
    lines = text.split("\n")
    assert len(lines) == 2, text
    assert "".join(lines[0].split()) == "".join(PLANTED.split())  # spacing aside, every character
    assert "TLS certificate" in lines[1]
    assert seconds < 60, seconds  # about 3 s on 2 busy cores (a fresh worker, the models loaded)


def test_a_picture_without_text_reads_as_nothing_and_a_fake_one_is_refused():
    assert image_text("blank.png", screenshot([]), ParseLimits()) == ""
    with pytest.raises(ParleyError) as err:
        image_text("error.png", b"\x89PNG\r\n\x1a\n not really", ParseLimits())
    assert err.value.code is ErrorCode.FILE_UNREADABLE and "error.png could not be read as a picture" in err.value.user_message


def test_a_picture_too_large_to_decode_is_refused_unread():
    out = io.BytesIO()
    Image.new("1", (8000, 6000)).save(out, format="PNG")  # 48 megapixels in a few KB
    with pytest.raises(ParleyError) as err:
        image_text("huge.png", out.getvalue(), ParseLimits())
    assert err.value.code is ErrorCode.FILE_TOO_COMPLEX and "8,000 x 6,000 pixels" in err.value.user_message
