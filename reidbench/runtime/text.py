"""Short text from long: what a console line or a status row shows of an error."""
from __future__ import annotations

from typing import Optional


def first_line(text: Optional[str], fallback: str = "") -> str:
    """The first non-empty line of `text`, stripped; `fallback` when there is none."""
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return lines[0] if lines else fallback
