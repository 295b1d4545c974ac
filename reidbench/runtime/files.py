"""Files written so that a process killed at any moment leaves each one either old or new, never half-written.

Every file reidbench writes goes to a temporary name beside its target and is
renamed into place (`os.replace` is atomic on one file system).
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from reidbench.errors import ReidbenchError, UsageError


TEMPORARY = re.compile(r"^\..+\.tmp-(\d+)(-.*)?$")
"""The names this module (and the synthetic generator) give temporary files: `.<name>.tmp-<pid>[-...]`."""


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def probe_write(folder: Path) -> None:
    """Create and delete a file in `folder`: raises the OSError a write there would meet, before any work is done."""
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".reidbench-write-check-"):
        pass


TORCH_WRITE_FAILED = ("inline_container.cc", "PytorchStreamWriter failed")
"""What torch.save's writer says when the disk refuses its bytes (`[enforce fail at inline_container.cc:…] .
unexpected pos …`, `PytorchStreamWriter failed writing file …`): a RuntimeError with no errno."""


class DiskFull(ReidbenchError, OSError):
    """A file the disk had no room for: the message names it, what it needed and what is free there.

    Also an OSError (errno ENOSPC), so code that tolerates a failed write (a run's closing run.json) still does."""

    def __init__(self, path: Path, needed: Optional[int], advice: str = "Free space there (or write to another disk), then go on.") -> None:
        OSError.__init__(self, errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        folder = path.parent
        free = shutil.disk_usage(folder).free if folder.is_dir() else None
        size = f"about {mib(needed)}" if needed is not None else "its size unknown"
        room = f"{mib(free)} free" if free is not None else "free space unknown"
        self.message = (
            f"No space left on device: the disk is full. Writing {path} ({size}) failed with {room} on the disk that "
            f"holds {folder}. {advice}"
        )

    def __str__(self) -> str:
        return self.message


def mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB"


def is_disk_full(exc: BaseException) -> bool:
    """A full disk (or used-up quota), whether the OS said so or torch.save's writer did."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(exc, RuntimeError) and any(marker in str(exc) for marker in TORCH_WRITE_FAILED)


def write_atomic(path: Path, data: bytes | str) -> None:
    raw = data.encode() if isinstance(data, str) else data
    _replace_with(path, lambda tmp: tmp.write_bytes(raw), len(raw))


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
    _replace_with(path, lambda tmp: torch.save(obj, tmp), tensor_bytes(obj))


def tensor_bytes(obj: Any) -> int:
    """The bytes of the tensors in a (nested) state dict: about what torch.save writes for it."""
    if isinstance(obj, torch.Tensor):
        return obj.untyped_storage().nbytes()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def _replace_with(path: Path, write: Callable[[Path], Any], size: Optional[int]) -> None:
    """Write a temporary file with `write`, then rename it over `path`; whatever stops the write
    (a full disk, Ctrl-C) removes the partial file instead of leaving it to fill the disk.
    A full disk is said as such, with `size` (what was being written) and the space free."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc) and not isinstance(exc, DiskFull):
            raise DiskFull(path, size) from exc
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
