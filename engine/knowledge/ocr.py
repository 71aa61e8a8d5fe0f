"""Text in images, offline: RapidOCR (rapidocr-onnxruntime; its detection and recognition models
ship inside the wheel, so nothing is fetched at run time) on onnxruntime.

engine/knowledge/pictures.py reads one image in a parse worker (sandbox.py) like any document, as
the loader kind "image": its memory limit is raised to OCR_MEMORY_MB (onnxruntime's arenas reserve more address
space than a parser: 1 GB fails on a one-line screenshot, 1.5 GB reads it) and, past the 256 MB
a worker may keep, the worker is replaced after it. Pictures are bounded before they are decoded:
MAX_PIXELS (Pillow's decompression-bomb check, made an error) and the file size the platform
allows. Scanned PDF pages are read the same way (scanned.py).

How a picture is read (`recognise`), measured on generated pictures of known text
(bench/ocr_engines.py): lines are found on the picture as it is (at most 2000 pixels a side;
RapidOCR's default enlarged a 900 x 160 screenshot to 4140 x 736 first: 1.3 s of CPU time where
this takes 0.2 s), then each line is cut from a copy scaled so that its type is LINE_PX high,
the recognizer's own input height, and read alone. The recognizer runs the words of 13-26 px
type together ("Thearchitecturereviewboard": 14% of a 150-dpi page's characters wrong, 41% of a
dialog's 13 px type) and keeps their spaces at 48 px (no character wrong on either). Lines are
read one per reader, READERS at once: batches of 6 are padded to their longest line and took
twice the CPU time.
RapidOCR's direction classifier is not used: it turned upright lines upside down (5 of 15 on a
page, the first line of a dialog), which then read as one letter. The lines come back in
reading order, boxes side by side joined into one line.
"""
from __future__ import annotations

import dataclasses
import io
import logging
import math
import os
import statistics
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, NamedTuple

from engine.errors import ErrorCode, ParleyError
from engine.knowledge.bounds import ParseLimits, too_complex
from engine.knowledge.records import PageText

log = logging.getLogger(__name__)

PageCallback = Callable[[int, int], None]
Render = Callable[[float], Any]  # the picture at a scale, as the BGR array RapidOCR takes
OCR_MEMORY_MB = 2048  # a worker's address space while it reads an image
MAX_PIXELS = 40_000_000  # a 40-megapixel picture at most (a 4K screenshot is 8)
PICTURE_SIDE = 2000  # a picture's lines are found with its longer side at most this (RapidOCR's own bound)
LINE_PX = 48  # a line's height, in pixels, where its words are read (the recognizer's own input height)
MAX_ZOOM = 4.0  # a line is enlarged at most this much for reading
MIN_SCORE = 0.5  # recognised lines less certain than this are left out
# Lines read at once, each on one onnxruntime thread: a 40-line 150-dpi page took 3.5-3.8 s alone
# and 1.9-2.1 s two at a time on a quiet 2-core EPYC, for the same CPU time. The worker runs at
# nice 10, so answers still come first; one session's two intra-op threads did as well quiet,
# but wait for each other (spinning) when a core is taken.
READERS = max(1, min(2, os.cpu_count() or 1))
_engine: list[tuple[int, Any]] = []  # the worker's RapidOCR and its threads, made at its first image


class TextLine(NamedTuple):
    """A line read in a picture: its top, bottom and left edge in the picture's units (y down)."""

    top: float
    bottom: float
    left: float
    text: str


def with_ocr_memory(limits: ParseLimits) -> ParseLimits:
    """`limits` with the address space onnxruntime needs (OCR_MEMORY_MB), for a file that may be
    recognised: a picture, a PDF with scanned pages."""
    return dataclasses.replace(limits, memory_mb=max(limits.memory_mb, OCR_MEMORY_MB))


def load_image(filename: str, data: bytes, on_page: PageCallback, limits: ParseLimits) -> list[PageText]:
    """The loader of kind "image": one page of the lines recognised, in reading order."""
    import numpy
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as picture:
            if picture.width * picture.height > MAX_PIXELS:
                raise too_complex(filename, f"is a picture of {picture.width:,} x {picture.height:,} pixels")
            pixels = numpy.ascontiguousarray(numpy.asarray(picture.convert("RGB"))[:, :, ::-1])  # OpenCV's BGR
    except ParleyError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        log.info("image unreadable", extra={"file": filename, "error": repr(exc)})
        raise ParleyError(ErrorCode.FILE_UNREADABLE, f"{filename} could not be read as a picture.")
    height, width = pixels.shape[:2]
    lines = recognise(_scaler(pixels), width, height, min(1.0, PICTURE_SIDE / max(width, height, 1)))
    on_page(1, 1)
    return [PageText(page=None, text="\n".join(line.text for line in lines))]


def _scaler(pixels: Any) -> Render:
    import cv2

    def render(scale: float) -> Any:
        if abs(scale - 1.0) < 0.01:
            return pixels
        size = (max(1, round(pixels.shape[1] * scale)), max(1, round(pixels.shape[0] * scale)))
        return cv2.resize(pixels, size, interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)
    return render


def ocr_engine(threads: int = 1) -> Any:
    """The worker's RapidOCR (made at its first use): one onnxruntime thread a call; lines are read
    READERS at a time instead (two intra-op threads were no faster on 2 busy cores, and took twice
    the CPU time while tests ran beside them: bench/ocr_engines.py)."""
    if not _engine or _engine[0][0] != threads:
        from rapidocr_onnxruntime import RapidOCR

        _engine[:] = [(threads, RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=1, rec_batch_num=1,
                                         use_cls=False, det_limit_type="max", det_limit_side_len=2000))]
    return _engine[0][1]


def recognise(render: Render, width: float, height: float, scale: float) -> list[TextLine]:
    """The lines of text in a picture `width` x `height` (any unit) that `render` draws at a scale
    in pixels per unit: found at `scale`, each read where its type is about LINE_PX high (the
    renderings stay within MAX_PIXELS). In reading order; [] when there is none."""
    image = render(scale)
    engine = ocr_engine()
    boxes, _ = engine.auto_text_det(image)
    if not boxes:
        return []
    tall = statistics.median(_height(box) for box in boxes)
    largest = math.sqrt(MAX_PIXELS / max(width * height, 1e-9))
    zoom = min(MAX_ZOOM, max(1.0, LINE_PX / max(tall, 1.0)), largest / scale)
    sharp = render(scale * zoom) if zoom > 1.05 else image
    ratio = sharp.shape[0] / image.shape[0]
    crops = engine.get_crop_img_list(sharp, [box * ratio for box in boxes])
    found = _read(engine, crops)
    per_unit = image.shape[0] / height
    words = [(box, " ".join(text.split())) for box, (text, score) in zip(boxes, found)
             if float(score) >= MIN_SCORE and text.strip()]
    return _lines(words, per_unit)


def _read(engine: Any, crops: list[Any]) -> list[tuple[str, float]]:
    """(text, score) of each line picture, READERS lines at a time (onnxruntime lets go of the GIL
    while it computes)."""
    if READERS < 2 or len(crops) < 2:
        return list(engine.text_rec(crops)[0])
    with ThreadPoolExecutor(READERS) as pool:
        parts = list(pool.map(lambda part: list(engine.text_rec(part)[0]),
                              [crops[i::READERS] for i in range(READERS)]))
    found: list[tuple[str, float]] = [("", 0.0)] * len(crops)
    for i, part in enumerate(parts):
        found[i::READERS] = part
    return found


def _height(box: Any) -> float:
    return float(max(abs(box[3][1] - box[0][1]), abs(box[2][1] - box[1][1])))


def _lines(words: list[tuple[Any, str]], per_unit: float) -> list[TextLine]:
    """Boxes side by side (the middle of one within the other's height) make one line, left to right."""
    placed = sorted((TextLine(float(min(p[1] for p in box)), float(max(p[1] for p in box)),
                              float(min(p[0] for p in box)), text) for box, text in words),
                    key=lambda item: (item.top + item.bottom) / 2)
    rows: list[list[TextLine]] = []
    for item in placed:
        middle = (item.top + item.bottom) / 2
        if rows and rows[-1][0].top <= middle <= rows[-1][0].bottom:
            rows[-1].append(item)
        else:
            rows.append([item])
    lines = []
    for row in rows:
        row.sort(key=lambda item: item.left)
        lines.append(TextLine(top=min(item.top for item in row) / per_unit,
                              bottom=max(item.bottom for item in row) / per_unit,
                              left=row[0].left / per_unit, text=" ".join(item.text for item in row)))
    return lines
