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
from pathlib import Path
from typing import Any, Optional

from reidbench.errors import UsageError
from reidbench.runtime.processes import this_process


class InUse(UsageError):
    """Another live process holds the lock."""


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
