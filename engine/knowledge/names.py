"""Document names: the bare name a user sees, and the name a second document of the same name
gets beside the first (no imports beyond the standard library: adapters read names too)."""
from __future__ import annotations

import re
import unicodedata
from pathlib import PurePath

MAX_NAME = 200


def clean_filename(name: str) -> str:
    """The bare file name a user sees: compatibility forms folded (NFKC: a full-width "ｒｅｐｏｒｔ" is
    "report"), no invisible format characters (bidi controls such as U+202E, zero-width spaces and
    joiners, U+FEFF: Unicode category Cf), no control characters, no directories. So a name that
    only looks like another document's is that name, not a second look-alike."""
    name = unicodedata.normalize("NFKC", name or "")
    name = "".join(c for c in name if unicodedata.category(c) != "Cf")
    name = re.split(r"[\\/]", name)[-1]
    name = re.sub(r"[\x00-\x1f\x7f-\x9f]", "", name).strip()
    return name[:MAX_NAME] or "upload"


def numbered_name(name: str, taken: set[str]) -> str:
    """`name` as the next free "report (2).pdf", "report (3).pdf"… among `taken` (what file
    managers do with a second file of the same name)."""
    path = PurePath(name)
    suffix = path.suffix if path.stem else ""
    stem = name[: len(name) - len(suffix)] if suffix else name
    n = 2
    while True:
        candidate = f"{stem} ({n}){suffix}"
        if candidate not in taken:
            return candidate
        n += 1
