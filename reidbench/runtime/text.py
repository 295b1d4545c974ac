"""Short text from long: what a console line or a status row shows of an error."""
from __future__ import annotations

from typing import Optional


def first_line(text: Optional[str], fallback: str = "") -> str:
    """The first non-empty line of `text`, stripped; `fallback` when there is none."""
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return lines[0] if lines else fallback


def printable(text: str) -> str:
    """`text` with any undecodable file-name bytes (held as surrogates) shown as U+FFFD, so it can be written as UTF-8.

    A folder name with a byte that is not UTF-8 reaches Python as a lone
    surrogate; written as is, it stops a report or a console line halfway.
    """
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
