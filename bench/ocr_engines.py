"""OCR engines compared on generated pictures of known text: accuracy and CPU time.

Samples (made here with Pillow's own font, nothing downloaded):
- screenshot: an error message in a light window, as people share one (26 px type);
- small: a settings dialog's small type (13 px);
- page150: an A4 page of prose scanned at 150 dpi (11 pt type, about 40 lines), as a PDF page.

Engines:
- parley: RapidOCR as Parley runs it: a picture as engine/knowledge/ocr.py reads one (enlarged
  up to 2x, RapidOCR's whole pipeline), a page as engine/knowledge/scanned.py recognises one
  (PDFium rendering, lines found at 960 px and read at 40 px, one line at a time, no direction
  classifier), one onnxruntime thread;
- parley-2threads: the same with two onnxruntime threads;
- rapidocr-defaults: RapidOCR() called on the picture as its README shows (direction classifier
  on, lines read in batches of 6), one thread;
- tesseract: Debian's tesseract-ocr 5 (LSTM, English), one thread (OMP_THREAD_LIMIT=1), when it
  is installed (`apt-get install -y tesseract-ocr`; Parley does not need it).

Reported for each: CER (character error rate: edit distance / length of the known text, spacing
normalised), CER without spaces (characters read, words run together or not), and CPU seconds
(this process's, or tesseract's as a child), best of --repeat runs.

    .venv/bin/python bench/ocr_engines.py
"""
from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the document generators live beside the tests

import docgen  # noqa: E402
from engine.runtime.cpu import cpu_name  # noqa: E402

SCREENSHOT = ["ERROR 4012: connection to billing-db refused (timeout after 30 s)",
              "Retry after rotating the TLS certificate on host db-07.internal"]
SMALL = ["Notifications: send a daily summary at 08:30 to ops-team@example.org",
         "Retention: delete resolved incidents after 180 days; keep audit logs for 7 years",
         "Webhook secret rotated on 2024-03-14 by j.martinez (expires in 90 days)"]


def levenshtein(a: str, b: str) -> int:
    """Edit distance, bit-parallel (Hyyrö 2003): a page of 3,000 characters in milliseconds."""
    if len(a) < len(b):
        a, b = b, a
    m = len(b)
    if m == 0:
        return len(a)
    peq: dict[str, int] = {}
    for i, c in enumerate(b):
        peq[c] = peq.get(c, 0) | (1 << i)
    full = (1 << m) - 1
    top = 1 << (m - 1)
    pv, mv, score = full, 0, m
    for c in a:
        eq = peq.get(c, 0)
        xv = eq | mv
        xh = ((((eq & pv) + pv) & full) ^ pv) | eq
        ph = (mv | ~(xh | pv)) & full
        mh = pv & xh
        if ph & top:
            score += 1
        elif mh & top:
            score -= 1
        ph = ((ph << 1) | 1) & full
        mh = (mh << 1) & full
        pv = (mh | ~(xv | ph)) & full
        mv = ph & xv
    return score


def error_rates(truth: str, got: str) -> tuple[float, float]:
    """CER with spacing normalised, and CER with every space removed."""
    spaced = (" ".join(truth.split()), " ".join(got.split()))
    squeezed = ("".join(truth.split()), "".join(got.split()))
    return (levenshtein(*spaced) / len(spaced[0]), levenshtein(*squeezed) / len(squeezed[0]))


def window(lines: list[str], px: int) -> Any:
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=px)
    width = int(max(font.getlength(line) for line in lines)) + 2 * px
    picture = Image.new("RGB", (width, round(px * (2 + 1.9 * len(lines)))), (246, 246, 248))
    draw = ImageDraw.Draw(picture)
    for i, line in enumerate(lines):
        draw.text((px, px + round(1.9 * px * i)), line, fill=(32, 32, 36), font=font)
    return picture


def samples() -> dict[str, tuple[str, Any, bytes]]:
    """name -> (known text, picture, the same as a one-page scanned PDF)."""
    prose = docgen.prose_lines(11, 40, 85)
    out = {}
    for name, lines, picture in (("screenshot", SCREENSHOT, window(SCREENSHOT, 26)),
                                 ("small", SMALL, window(SMALL, 13)),
                                 ("page150", prose, docgen.page_picture(prose, dpi=150))):
        pdf = io.BytesIO()
        picture.convert("L").save(pdf, format="PDF", resolution=150 if name == "page150" else 96)
        out[name] = ("\n".join(lines), picture, pdf.getvalue())
    return out


# ---- the engines -------------------------------------------------------------------------------

def parley(threads: int) -> Callable[[str, Any, bytes], str]:
    import pypdfium2 as pdfium

    from engine.knowledge import ocr, scanned

    ocr.ocr_engine(threads)  # what ocr.py and scanned.py use from now on

    def run(name: str, picture: Any, pdf: bytes) -> str:
        if name != "page150":  # a picture shared with a question
            png = io.BytesIO()
            picture.save(png, format="PNG")
            return "\n".join(page.text for page in ocr.load_image("x.png", png.getvalue(), lambda *a: None, None))
        document = pdfium.PdfDocument(pdf)
        try:
            return "\n".join(line.text for line in scanned.recognise_page(document[0], "x.pdf", 1))
        finally:
            document.close()
    return run


def rapidocr_defaults() -> Callable[[str, Any, bytes], str]:
    import numpy
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR(intra_op_num_threads=1, inter_op_num_threads=1)

    def run(name: str, picture: Any, pdf: bytes) -> str:
        found, _ = engine(numpy.asarray(picture.convert("RGB"))[:, :, ::-1])
        return "\n".join(text for _, text, _ in found or [])
    return run


def tesseract(name: str, picture: Any, pdf: bytes) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "in.png")
        picture.save(path)
        env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
        return subprocess.run(["tesseract", path, "-", "-l", "eng", "--psm", "3"], capture_output=True,
                              text=True, check=True, env=env).stdout


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(run: Callable[[str, Any, bytes], str], sample: tuple[str, Any, bytes], name: str,
            repeat: int) -> tuple[float, float, float, float]:
    truth, picture, pdf = sample
    best_cpu = best_wall = float("inf")
    got = ""
    for _ in range(repeat):
        cpu, wall = cpu_seconds(), time.perf_counter()
        got = run(name, picture, pdf)
        best_cpu = min(best_cpu, cpu_seconds() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    cer, squeezed = error_rates(truth, got)
    return cer, squeezed, best_cpu, best_wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    print(f"CPU: {cpu_name()} ({os.cpu_count()} cores), load average {os.getloadavg()[0]:.2f}", flush=True)
    made = samples()
    engines: list[tuple[str, Callable[[], Callable[[str, Any, bytes], str]]]] = [
        ("parley", lambda: parley(1)), ("parley-2threads", lambda: parley(2)),
        ("rapidocr-defaults", rapidocr_defaults)]
    if shutil.which("tesseract"):
        engines.append(("tesseract", lambda: tesseract))
    else:
        print("tesseract: not installed (apt-get install -y tesseract-ocr), left out")
    print(f"{'engine':<18} {'sample':<11} {'CER':>6} {'CER-nospace':>11} {'CPU s':>6} {'wall s':>6}")
    for label, make in engines:
        run = make()
        run("screenshot", *made["screenshot"][1:])  # warm: models loaded, first-call allocations
        for name, sample in made.items():
            cer, squeezed, cpu, wall = measure(run, sample, name, args.repeat)
            print(f"{label:<18} {name:<11} {cer:>6.3f} {squeezed:>11.3f} {cpu:>6.2f} {wall:>6.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
