"""Which process a pid names, and whether it still runs: what tells a live run from one whose process was killed.

`status` and `report` both ask this (through `reidbench.rundir`), and the run lock records it,
so the identity of a process is written and read in one way.
"""
from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Optional

from reidbench.runtime.files import now_utc


def process_start_ticks(pid: int) -> Optional[int]:
    """When process `pid` started, in clock ticks since boot (Linux); None where it cannot be read.

    With the pid it names one process for good: a pid reused by a later process has another start time.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def this_process() -> dict[str, Any]:
    """The identity a lock holder, run.json's owner and a job file record."""
    return {
        "pid": os.getpid(), "host": socket.gethostname(), "started": now_utc(), "started_unix": time.time(),
        "start_ticks": process_start_ticks(os.getpid()), "command": " ".join(sys.argv),
    }


def is_alive(owner: dict[str, Any]) -> Optional[bool]:
    """Whether the process an owner record names still runs: None when that cannot be told from this host."""
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return None
    ticks = process_start_ticks(owner["pid"])
    if ticks is None:
        return False
    return owner.get("start_ticks") in (None, ticks)
