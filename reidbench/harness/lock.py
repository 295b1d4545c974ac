"""Who writes a run directory: an exclusive advisory lock, with the holder's identity for the one turned away.

Two processes that continue the same run (`--resume` twice, or a resume beside
the jobs of a fanned-out run) would train the same cell at once and interleave
its training log. A process that writes a run takes the run's lock (a job of a
fanned-out run, the lock of its own cell folder); a second one is refused,
naming the holder. The lock is `flock`'s: the kernel drops it when its process
dies, however it dies, so a lock is never left behind.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Optional

from reidbench.errors import UsageError
from reidbench.runtime.files import now_utc


class InUse(UsageError):
    """Another live process holds the lock."""


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


class DirectoryLock:
    """Held while this process writes the folder of the lock file `path`; `what` names the folder in the refusal ("run", "cell")."""

    def __init__(self, path: Path, what: str) -> None:
        self.path, self.folder, self.what = path, path.parent, what
        self.handle: Optional[Any] = None

    def acquire(self) -> "DirectoryLock":
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = _holder(handle.read())
            handle.close()
            raise InUse(
                f"the {self.what} {self.folder} is in use by {holder}; two processes writing it would train the same "
                "cells twice. Wait for that process to end (or stop it), then run the command again."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(this_process()))
        handle.flush()
        self.handle = handle
        return self

    def release(self) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle.fileno(), fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None

    def __enter__(self) -> "DirectoryLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _holder(text: str) -> str:
    try:
        owner = json.loads(text)
        return f"process {owner['pid']} on {owner['host']} since {owner['started']} ({owner.get('command', '?')})"
    except (ValueError, KeyError, TypeError):
        return "another process (it has not said which yet)"
