"""Pictures for a vision model (an openai_compatible model entry with `vision: true`).

A picture shared with a question (adapters/chat/pictures.py) is bounded before it is decoded
(its bytes, then its pixel count read from the header; Pillow's decompression-bomb check stays
on), decoded, turned upright by its EXIF orientation, made at most `knowledge.vision_max_side`
pixels a side and re-encoded into a fresh image, so no metadata (EXIF, GPS, text chunks, ICC)
leaves with it: PNG (lossless, what screenshots need), or JPEG when the PNG of a photo would be
large. It travels to the engine in ChatRequest.pictures (engine.types.SharedPicture), never in
the text, and is never stored: a thread's sessions keep the turn's text only.

The engine decides per model (engine/answering.py): a vision model receives the pictures of the
current turn as `image_url` parts (base64 data URLs) of that user message; any other model reads
the pictures' OCR text, which is in the question's text for every model. The OCR text stays in
the vision model's text as well: it costs a few tokens beside the picture's hundreds, helps with
small type a model sees downscaled, and the thread's history (text only) keeps what the picture
said, so a later turn, or the same thread on a model without vision, still knows it.
"""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any, Sequence

from engine.config import Config, KnowledgeConfig
from engine.errors import ErrorCode, ParleyError, file_too_large
from engine.types import SharedPicture

# What is decoded at all (the picture suffixes of engine/knowledge/formats.py; MPO: a phone's JPEG);
# anything else is unreadable.
FORMATS = {"PNG", "JPEG", "MPO", "GIF", "WEBP", "BMP", "TIFF"}
JPEG_OVER_BYTES = 512 * 1024  # a PNG larger than this (a photo) is sent as JPEG instead
JPEG_QUALITY = 85
PIXELS_PER_TOKEN = 28 * 28  # a rough count for the prompt's budget (Qwen2-VL's patch; LLaVA's is close)


@dataclass(frozen=True)
class PictureBounds:
    """What a picture for a vision model may be (knowledge.vision_max_*)."""

    max_bytes: int
    max_pixels: int
    max_side: int
    max_pictures: int = 4  # of one message; those past it are read for their text only

    @classmethod
    def from_config(cls, config: KnowledgeConfig) -> PictureBounds:
        return cls(int(config.vision_max_mb * 2**20), config.vision_max_pixels, config.vision_max_side,
                   config.vision_max_pictures)

    @classmethod
    def wanted(cls, config: Config) -> PictureBounds | None:
        """The bounds when some configured model takes pictures; None when none does (then
        pictures are only read for their text, and nothing is re-encoded)."""
        return cls.from_config(config.knowledge) if any(m.vision for m in config.models) else None


def _unreadable(name: str) -> ParleyError:
    return ParleyError(ErrorCode.FILE_UNREADABLE, f"{name} could not be read as a picture.")


def _too_many_pixels(name: str, width: int, height: int, bounds: PictureBounds) -> ParleyError:
    return ParleyError(ErrorCode.FILE_TOO_COMPLEX, f"{name} is a picture of {width:,} x {height:,} pixels; "
                       f"the limit is {bounds.max_pixels:,} pixels. Share a smaller picture or a crop.")


def check_picture(name: str, data: bytes, bounds: PictureBounds) -> None:
    """Refuse a picture past the bounds from its size and header alone, before anything decodes
    it (the OCR worker, prepare_picture): FILE_TOO_LARGE, FILE_TOO_COMPLEX or FILE_UNREADABLE."""
    from PIL import Image

    if len(data) > bounds.max_bytes:
        raise file_too_large(name, len(data), bounds.max_bytes / 2**20)
    try:
        with Image.open(io.BytesIO(data)) as picture:  # reads the header, not the pixels
            if picture.format not in FORMATS:
                raise _unreadable(name)
            if picture.width * picture.height > bounds.max_pixels:
                raise _too_many_pixels(name, picture.width, picture.height, bounds)
    except Image.DecompressionBombError:  # past twice Pillow's own limit: not even worth the header
        raise ParleyError(ErrorCode.FILE_TOO_COMPLEX, f"{name} has far more pixels than I look at "
                          f"(at most {bounds.max_pixels:,}). Share a smaller picture or a crop.") from None
    except (OSError, ValueError, SyntaxError, EOFError):
        raise _unreadable(name) from None


def prepare_picture(name: str, data: bytes, bounds: PictureBounds) -> SharedPicture:
    """The picture decoded within `bounds`, downscaled and re-encoded without metadata (blocking:
    run it in a thread). ParleyError as check_picture, or FILE_UNREADABLE for damaged pixels."""
    from PIL import Image, ImageOps

    check_picture(name, data, bounds)
    side = bounds.max_side
    try:
        with Image.open(io.BytesIO(data)) as picture:
            picture.draft("RGB", (side, side))  # a JPEG decodes at a fraction of its size where it can
            picture.thumbnail((side, side), Image.LANCZOS)  # decodes, then at most `side` a side
            upright = ImageOps.exif_transpose(picture)
            has_alpha = upright.mode in ("RGBA", "LA", "PA") or "transparency" in upright.info
            mode = "RGBA" if has_alpha else "RGB"
            converted = upright.convert(mode)
            clean = Image.frombytes(mode, converted.size, converted.tobytes())  # nothing of its info kept
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        raise _unreadable(name) from None
    return _encoded(name, clean)


def _encoded(name: str, clean: Any) -> SharedPicture:
    """`clean` as PNG, or as JPEG when that PNG is large (a photo)."""
    from PIL import Image

    out = io.BytesIO()
    clean.save(out, format="PNG", optimize=False)
    if out.tell() <= JPEG_OVER_BYTES:
        return SharedPicture(name, "image/png", out.getvalue(), clean.width, clean.height)
    flat = clean
    if clean.mode == "RGBA":
        flat = Image.new("RGB", clean.size, "white")
        flat.paste(clean, mask=clean.getchannel("A"))
    out = io.BytesIO()
    flat.save(out, format="JPEG", quality=JPEG_QUALITY)
    return SharedPicture(name, "image/jpeg", out.getvalue(), clean.width, clean.height)


def picture_tokens(picture: SharedPicture) -> int:
    """About how many prompt tokens a vision model spends on `picture`."""
    return max(1, -(-picture.width * picture.height // PIXELS_PER_TOKEN))


def data_url(picture: SharedPicture) -> str:
    return f"data:{picture.mime};base64,{base64.b64encode(picture.data).decode('ascii')}"


def with_picture_parts(messages: list[dict], pictures: Sequence[SharedPicture]) -> list[dict]:
    """`messages` with the last one (the asker's turn) made of its text and one `image_url` part
    a picture (OpenAI's chat format); unchanged without pictures."""
    if not pictures:
        return messages
    last = messages[-1]
    if last.get("role") != "user" or not isinstance(last.get("content"), str):
        raise ValueError("the pictures go with the asker's message, the prompt's last")
    parts: list[dict] = [{"type": "text", "text": last["content"]}]
    parts += [{"type": "image_url", "image_url": {"url": data_url(p)}} for p in pictures]
    return [*messages[:-1], {**last, "content": parts}]

