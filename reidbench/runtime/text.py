"""Short text from long: what a console line or a status row shows of an error."""
from __future__ import annotations

import re
from typing import Optional


ANSI_COLOURS = re.compile(r"\x1b\[[0-9;]*m")


def first_line(text: Optional[str], fallback: str = "", limit: Optional[int] = None) -> str:
    """The first non-empty line of `text`, stripped of terminal colours and cut to `limit` characters; `fallback`
    when there is none. Exporter and compiler errors run to pages; a record or a status row wants one line."""
    lines = [line.strip() for line in ANSI_COLOURS.sub("", text or "").splitlines() if line.strip()]
    line = lines[0] if lines else fallback
    return line if limit is None or len(line) <= limit else line[: limit - 3] + "..."


def printable(text: str) -> str:
    """`text` with any undecodable file-name bytes (held as surrogates) shown as U+FFFD, so it can be written as UTF-8.

    A folder name with a byte that is not UTF-8 reaches Python as a lone
    surrogate; written as is, it stops a report or a console line halfway.
    """
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def counted(count: int, word: str, plural: Optional[str] = None) -> str:
    """'1 way', '3 ways': a count with its noun in the number it takes (`plural` where adding 's' is wrong)."""
    return f"{count} {word if count == 1 else plural or word + 's'}"


def seeds_text(seeds: list[int]) -> str:
    """'seed 0', 'seeds 5-9', 'seeds 0, 2': which seeds, as a run header or a message names them."""
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    if seeds and list(seeds) == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"seeds {seeds[0]}-{seeds[-1]}"
    return "seeds " + (", ".join(map(str, seeds)) or "none")
