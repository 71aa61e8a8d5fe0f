"""Pictures shared with a question: each is downloaded, its text read (OCR, in a parse worker:
engine/knowledge/pictures.py) and put into the question as the picture's content, so the model
answers about what the screenshot says:

    [Ana shared error.png; its text:
    ERROR 4012: connection to billing-db refused]
    what does this error mean?

A picture without text, or one that could not be read, is said so in the same place, and the
asker is told (`notes`). When the asker wrote nothing and no picture gave any text, there is no
question left: the notes are the whole reply (no model call on "What does this say?" alone).

Where a configured model takes pictures (`vision: true`; engine/vision.py), each picture is also
bounded (bytes before the download, pixels from its header before the OCR worker decodes it),
downscaled and re-encoded into `PictureTurn.pictures`, which the adapter hands the engine in its
ChatRequest: the engine, not this layer, decides per model whether they go as image parts. A
picture past those bounds is refused whole with a note saying so; the rest of the turn goes on.
A picture without text is then no reason for a note, nor for leaving the model out: a vision
model may see what it shows (a model without vision reads "no text was found in it").
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from adapters.chat.ingest import SharedFile
from adapters.chat.markup import Markup, shown_name
from engine.config import Config, KnowledgeConfig
from engine.errors import ErrorCode, ParleyError, file_too_large
from engine.knowledge.bounds import ParseLimits
from engine.knowledge.pictures import image_text
from engine.types import SharedPicture
from engine.vision import PictureBounds, check_picture, prepare_picture

log = logging.getLogger(__name__)

ALONE = "What does this say?"  # the question of a picture shared with a bare mention
NO_TEXT_NOTE = "I found no text in {names}, so I can only go by your words."
NO_TEXT_ALONE = "I found no text in {names}: tell me in words what you would like to know."
UNREADABLE_NOTE = "I could not read {name} as a picture ({code})."  # the name as the platform shows it safely
TOO_BIG_NOTE = "{name} is larger than the pictures I look at ({code}): share a smaller one or a crop."
TOO_BIG = (ErrorCode.FILE_TOO_LARGE, ErrorCode.FILE_TOO_COMPLEX)


@dataclass(frozen=True)
class PictureTurn:
    question: str  # the question with each picture's text before it
    without_text: tuple[str, ...]  # pictures in which no text was found
    unreadable: tuple[tuple[str, ParleyError], ...] = ()  # (picture, why) for those not read
    asked: bool = True  # the asker wrote words, or a picture gave text: there is a question
    pictures: tuple[SharedPicture, ...] = ()  # re-encoded for a vision model (none configured: empty)

    def notes(self, shown_name: Callable[[str], str]) -> list[str]:
        """What to tell the asker before the answer (or instead of it, when nothing was `asked`)."""
        notes = [(TOO_BIG_NOTE if exc.code in TOO_BIG else UNREADABLE_NOTE).format(
            name=shown_name(name), code=exc.code.value) for name, exc in self.unreadable]
        if self.without_text:
            note = NO_TEXT_NOTE if self.asked else NO_TEXT_ALONE
            notes.append(note.format(names=", ".join(shown_name(name) for name in self.without_text)))
        return notes


async def with_pictures(question: str, sharer: str, pictures: list[SharedFile], config: KnowledgeConfig,
                        vision: PictureBounds | None = None) -> PictureTurn:
    """`question` with the text of each picture before it (see the module's doc); a picture over
    `knowledge.max_file_mb` is not downloaded. With `vision` (a configured model takes pictures),
    each picture is bounded by it as well and comes back re-encoded in `PictureTurn.pictures`."""
    limits = ParseLimits.from_config(config)
    parts: list[str] = []
    without_text: list[str] = []
    unreadable: list[tuple[str, ParleyError]] = []
    seen: list[SharedPicture] = []
    for picture in pictures:
        name = picture.name.replace("[", "(").replace("]", ")")
        try:
            seeing = vision if vision is not None and len(seen) < vision.max_pictures else None  # past it: text only
            text, prepared = await _read(picture, config, limits, seeing)
        except ParleyError as exc:
            log.info("picture not read", extra={"file": picture.name, "code": exc.code.value})
            parts.append(f"[{sharer} shared {name}; it could not be read ({exc.code.value})]")
            unreadable.append((picture.name, exc))
            continue
        if prepared is not None:
            seen.append(prepared)
        if text:
            parts.append(f"[{sharer} shared {name}; its text:\n{text}]")
        else:
            parts.append(f"[{sharer} shared {name}; no text was found in it]")
            if prepared is None:  # for a vision model a picture without text is still something to ask about
                without_text.append(picture.name)
    asked = bool(question.strip()) or len(without_text) + len(unreadable) < len(pictures)
    return PictureTurn("\n".join([*parts, question.strip() or ALONE]), tuple(without_text), tuple(unreadable), asked,
                       tuple(seen))


async def picture_question(question: str, sharer: str, pictures: list[SharedFile], config: Config,
                           markup: Markup, post: Callable[[str], Awaitable[object]],
                           ) -> tuple[str | None, tuple[SharedPicture, ...]]:
    """What a platform asks when pictures came with a question: the question with their text in
    it, or None when nothing is left to ask, and the pictures for a vision model (bounded as
    configured). A picture without text, or not read, is said so first (`post`, the file names
    written with `markup`)."""
    turn = await with_pictures(question, sharer or "Someone", pictures, config.knowledge, PictureBounds.wanted(config))
    for note in turn.notes(lambda name: shown_name(name, markup)):
        await post(note)
    return (turn.question if turn.asked else None), turn.pictures


async def _read(picture: SharedFile, config: KnowledgeConfig, limits: ParseLimits,
                vision: PictureBounds | None) -> tuple[str, SharedPicture | None]:
    """One picture's text (OCR in a parse worker) and, with `vision`, the picture re-encoded:
    checked against the bounds before anything decodes it, decoded here only once the worker read it."""
    picture.check()
    if picture.size > config.max_file_mb * 2**20:
        raise file_too_large(picture.name, picture.size, config.max_file_mb)
    if vision is not None and picture.size > vision.max_bytes:
        raise file_too_large(picture.name, picture.size, vision.max_bytes / 2**20)
    data = await picture.download()
    if vision is not None:
        await asyncio.to_thread(check_picture, picture.name, data, vision)  # the header alone
    text = await asyncio.to_thread(image_text, picture.name, data, limits)
    if vision is None:
        return text, None
    return text, await asyncio.to_thread(prepare_picture, picture.name, data, vision)
