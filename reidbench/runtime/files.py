"""Files written so that a process killed at any moment leaves each one either old or new, never half-written.

Every file reidbench writes goes to a temporary name beside its target and is
renamed into place (`os.replace` is atomic on one file system).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

from reidbench.errors import UsageError


TEMPORARY = re.compile(r"^\..+\.tmp-(\d+)(-.*)?$")
"""The names this module (and the synthetic generator) give temporary files: `.<name>.tmp-<pid>[-...]`."""


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def probe_write(folder: Path) -> None:
    """Create and delete a file in `folder`: raises the OSError a write there would meet, before any work is done."""
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".reidbench-write-check-"):
        pass


def write_atomic(path: Path, data: bytes | str) -> None:
    _replace_with(path, lambda tmp: tmp.write_bytes(data.encode() if isinstance(data, str) else data))


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path} is damaged and cannot be read ({exc}).") from None


def save_torch_atomic(obj: Any, path: Path) -> None:
    _replace_with(path, lambda tmp: torch.save(obj, tmp))


def _replace_with(path: Path, write: Callable[[Path], Any]) -> None:
    """Write a temporary file with `write`, then rename it over `path`; whatever stops the write
    (a full disk, Ctrl-C) removes the partial file instead of leaving it to fill the disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files and folders under `folder` left by processes that are gone (SIGKILL, power loss).

    Only this host's processes can be asked, so call it where this process
    holds the folder's lock: then no other live writer can own them either.
    """
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.rglob(".*.tmp-*"):
        match = TEMPORARY.match(path.name)
        if match is None or int(match.group(1)) == os.getpid() or pid_alive(int(match.group(1))):
            continue
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def append_line(path: Path, data: dict[str, Any]) -> None:
    """Append one JSON line; the log is rewritten from the checkpoint on resume, so a torn last line is harmless."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(data) + "\n")


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
