"""Which local file a weights value names, and its hash. Names (timm and open_clip tags, hf-hub:) are `hub`'s."""
from __future__ import annotations

import functools
import hashlib
import os
import re
from pathlib import Path
from typing import Optional

from reidbench.errors import UsageError
from reidbench.variants.weights.messages import DOWNLOAD_HINT

WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".npz", ".ckpt")
"""File endings read as checkpoints; a value without one that is not a file is taken for a weights name."""
URL = re.compile(r"^[a-z][a-z0-9+.-]*://")
"""A URL: refused, as reidbench fetches weights by name only."""


IS_A_FOLDER = "is a folder"
NOT_REGULAR = "is not a regular file (a device, a pipe or a socket)"
MISSING = "does not exist"


def not_a_file(path: Path) -> Optional[str]:
    """Why `path` cannot be read as a weights file (IS_A_FOLDER, NOT_REGULAR, MISSING), None for a regular file.

    Asked before anything opens it: torch.load on a FIFO waits for a writer forever, and on a device reads without end.
    """
    if path.is_file():
        return None
    if path.is_dir():
        return IS_A_FOLDER
    return NOT_REGULAR if path.exists() else MISSING


def resolve_weights_path(value: str | os.PathLike, backbone: str, where: str = "weights", base_dir: Optional[Path] = None) -> Path:
    """The absolute path of an existing local file; URLs and missing files are refused.

    `where` names the origin of the value in messages (--weights, a grid file);
    relative paths are taken from `base_dir` when given.
    """
    text = os.fspath(value)
    path = Path(text).expanduser()
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    kind = not_a_file(path)
    if kind is None:
        return Path(os.path.abspath(path))  # absolute, `..` folded; symlinks kept as the user named them
    if kind == IS_A_FOLDER:
        raise UsageError(f"{where}: weights for {backbone}, {path}, {kind}; pass the checkpoint file inside it.")
    if kind == NOT_REGULAR:
        raise UsageError(f"{where}: weights for {backbone}, {path}, {kind}; pass the path of a checkpoint file.")
    if URL.match(text):
        raise UsageError(
            f"{where}: weights for {backbone} {text!r} are a URL; reidbench fetches weights by name only (a timm tag, "
            f"an open_clip tag, hf-hub:ORG/REPO; see `reidbench weights pull`), otherwise {DOWNLOAD_HINT}."
        )
    raise UsageError(f"{where}: weights file {path} for {backbone} does not exist; pass the path of a local checkpoint file.")


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, cached while the file's size and mtime stay the same."""
    stat = path.stat()
    return _sha256_cached(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
