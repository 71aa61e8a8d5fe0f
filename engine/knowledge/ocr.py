"""Text in images, offline: RapidOCR (rapidocr-onnxruntime; its detection, direction and
recognition models ship inside the wheel, so nothing is fetched at run time) on onnxruntime.

engine/knowledge/pictures.py reads one image in a parse worker (sandbox.py) like any document, as
the loader kind "image": its memory limit is raised to OCR_MEMORY_MB (onnxruntime's arenas reserve more address
space than a parser: 1 GB fails on a one-line screenshot, 1.5 GB reads it) and, past the 256 MB
a worker may keep, the worker is replaced after it. Pictures are bounded before they are decoded:
MAX_PIXELS (Pillow's decompression-bomb check, made an error) and the file size the platform
allows. The recognised lines come back in reading order, one a line.
"""
from __future__ import annotations

import io
import logging
from typing import Any, Callable

from engine.errors import ErrorCode, ParleyError
from engine.knowledge.bounds import ParseLimits, too_complex
from engine.knowledge.records import PageText

log = logging.getLogger(__name__)

PageCallback = Callable[[int, int], None]
OCR_MEMORY_MB = 2048  # a worker's address space while it reads an image
MAX_PIXELS = 40_000_000  # a 40-megapixel picture at most (a 4K screenshot is 8)
ENLARGED_SIDE = 4000  # a small picture is enlarged (up to 2x) to at most this many pixels a side
MIN_SCORE = 0.5  # recognised lines less certain than this are left out
_engine: list[Any] = []  # the worker's RapidOCR, made at its first image


def load_image(filename: str, data: bytes, on_page: PageCallback, limits: ParseLimits) -> list[PageText]:
    """The loader of kind "image": one page of the lines recognised, in reading order."""
    import numpy
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as picture:
            if picture.width * picture.height > MAX_PIXELS:
                raise too_complex(filename, f"is a picture of {picture.width:,} x {picture.height:,} pixels")
            pixels = numpy.asarray(_enlarged(picture.convert("RGB")))[:, :, ::-1]  # RapidOCR takes OpenCV's BGR
    except ParleyError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        log.info("image unreadable", extra={"file": filename, "error": repr(exc)})
        raise ParleyError(ErrorCode.FILE_UNREADABLE, f"{filename} could not be read as a picture.")
    lines = _recognise(pixels)
    on_page(1, 1)
    return [PageText(page=None, text="\n".join(lines))]


def _enlarged(picture: Any) -> Any:
    """The picture up to twice its size, its longer side at most ENLARGED_SIDE: the recognition
    model runs the words of a screenshot's small type together ("Retryafterrotating…") and keeps
    their spaces once the type is larger."""
    from PIL import Image

    scale = min(2.0, ENLARGED_SIDE / max(picture.width, picture.height, 1))
    if scale <= 1.0:
        return picture
    return picture.resize((round(picture.width * scale), round(picture.height * scale)), Image.LANCZOS)


def ocr_engine() -> Any:
    """The worker's RapidOCR (made at its first use): one thread, the worker runs at nice 10 beside
    the answering; lines recognised one at a time (a batch is padded to its longest line: batches
    of 6 took twice the CPU time on a page of prose, bench/ocr_engines.py)."""
    if not _engine:
        from rapidocr_onnxruntime import RapidOCR

        _engine.append(RapidOCR(intra_op_num_threads=1, inter_op_num_threads=1, rec_batch_num=1))
    return _engine[0]


def _recognise(pixels: Any) -> list[str]:
    found, _ = ocr_engine()(pixels)
    boxes = [(box, text) for box, text, score in (found or []) if float(score) >= MIN_SCORE and text.strip()]
    boxes.sort(key=lambda item: (round(item[0][0][1] / 10), item[0][0][0]))  # top to bottom, then left to right
    return [" ".join(text.split()) for _, text in boxes]
