"""Where generated sets live and how they get there: located, built once, published atomically, checked.

Why it exists: a synthetic set is generated on first use into the user's cache
and reused by every later run, possibly by several processes at once, and a
folder a user names may already hold other files. Both writers
(:mod:`~reidbench.data.synthetic.market` and
:mod:`~reidbench.data.synthetic.rgbnt`) need the same guarantees, kept here
once: a set is built in a temporary folder beside its destination and moved
into place, so a folder is either absent or complete; a set is replaced only
when its ``dataset.json`` says a writer of that kind made it, never over
foreign files; a cached set is reused exactly when its manifest records the
requested settings and the current generator version; half-built sets left by
a killed process are removed.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Optional

from PIL import Image

from reidbench.errors import UsageError
from reidbench.runtime.files import TEMPORARY, DiskFull, is_disk_full, pid_alive

MANIFEST_NAME = "dataset.json"


def cache_folder() -> Path:
    """The user cache every default set is generated into: ``$REIDBENCH_CACHE``, else ``~/.cache/reidbench``."""
    cache = os.environ.get("REIDBENCH_CACHE") or Path.home() / ".cache" / "reidbench"
    return Path(cache).expanduser()


def default_root(version: int, seed: int, suffix: str = "") -> Path:
    """The cached folder of a default set: ``synthetic-v<version>-seed<seed><suffix>`` in :func:`cache_folder`.

    The version and seed are in the name so that sets of other versions or seeds sit beside each other
    instead of replacing each other.
    """
    return cache_folder() / f"synthetic-v{version}-seed{seed}{suffix}"


def shared_problems(p, layout: str, max_ids: int, why_two_cameras: str) -> list[str]:
    """What is wrong with the settings every synthetic set has (identities, cameras, size, quality, seed).

    `p` is a params dataclass with those fields; `layout` names the file-name layout whose
    digits bound the identities (`max_ids`) and cameras (one digit).
    """
    h, w = p.size
    problems = []
    if p.num_ids_train < 1 or p.num_ids_test < 1:
        problems.append("num_ids_train and num_ids_test must be at least 1")
    if p.num_ids_train + p.num_ids_test > max_ids:
        problems.append(f"at most {max_ids} identities fit the {len(str(max_ids))}-digit {layout} pid")
    if not 2 <= p.num_cameras <= 9:
        problems.append(f"num_cameras must be 2..9 ({layout} names hold one camera digit)")
    if not 2 <= p.min_cameras_per_id <= p.num_cameras:
        problems.append(f"min_cameras_per_id must be 2..num_cameras, so {why_two_cameras}")
    if h < 32 or w < 16:
        problems.append("size must be at least (32, 16)")
    if not 1 <= p.jpeg_quality <= 100:
        problems.append("jpeg_quality must be 1..100")
    if p.seed < 0:
        problems.append("seed must be non-negative")
    return problems


# --- manifests and versions ---------------------------------------------------------------------


def read_manifest_of(root: Path, generator: str) -> dict | None:
    """The ``dataset.json`` in ``root`` if ``generator`` (the writer's marker in its manifests) wrote it, else None."""
    try:
        manifest = json.loads((Path(root) / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("generator") == generator else None


def matches(manifest: dict | None, p, version: int) -> bool:
    """Whether ``manifest`` describes the set that settings ``p`` (a params dataclass) and ``version`` draw."""
    return (
        manifest is not None
        and manifest.get("generator_version") == version
        and manifest.get("params") == json.loads(json.dumps(asdict(p)))
    )


def settings_digest(manifest: dict) -> str:
    """Eight hex digits that change with any of the manifest's settings: the tail of a dataset's version string."""
    return hashlib.sha256(json.dumps(manifest["params"], sort_keys=True).encode()).hexdigest()[:8]


# --- building and publishing --------------------------------------------------------------------


def _is_empty_dir(path: Path) -> bool:
    if not path.is_dir():
        return False
    with os.scandir(path) as entries:
        return next(entries, None) is None


def _publish(tmp: Path, out: Path) -> None:
    """Move a finished set into place; an old *synthetic* set there is replaced."""
    if out.exists() and not _is_empty_dir(out):
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-old-", dir=out.parent))
        os.replace(out, old / out.name)
        try:
            os.replace(tmp, out)
        finally:
            shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def _remove_stale_builds(out: Path) -> None:
    """Half-built sets beside `out` whose process is gone (killed while generating): they only take space."""
    for path in out.parent.glob(f".{out.name}.tmp-*"):
        match = TEMPORARY.match(path.name)
        if match is not None and not pid_alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)


def build(
    out: Path, write: Callable[[Path], dict], manifest_of: Callable[[Path], dict | None], replace_ours: bool
) -> Path:
    """Build a set with ``write(folder) -> manifest`` in a temporary folder beside ``out`` and move it into place.

    ``out`` must be absent or empty, or hold a set whose ``dataset.json``
    ``manifest_of`` recognises and ``replace_ours`` allows replacing.
    """
    out = Path(out).expanduser().absolute()
    if out.exists() and not _is_empty_dir(out):
        if manifest_of(out) is None:
            raise UsageError(f"{out} already exists and is not an empty folder; choose a new folder for "
                             "the synthetic dataset.")
        if not replace_ours:
            raise UsageError(f"{out} already holds a synthetic dataset; choose a new folder or remove it.")
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    try:
        manifest = write(tmp)
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        tmp.chmod(0o755)  # mkdtemp makes it private
        _publish(tmp, out)
    except BaseException as exc:
        full = _disk_full(exc, tmp, out)  # the free space as the write met it, before the partial set goes
        shutil.rmtree(tmp, ignore_errors=True)
        if full is not None:
            raise full from exc
        raise
    return out


def _disk_full(exc: BaseException, tmp: Path, out: Path) -> Optional[DiskFull]:
    """A full disk, naming the file at the place it was to have; nothing is kept, so there is nothing to continue."""
    if not is_disk_full(exc):
        return None
    written = getattr(exc, "filename", None)
    path = out / Path(written).relative_to(tmp) if written and Path(written).is_relative_to(tmp) else out
    return DiskFull(path, None, f"Nothing was kept (the partly written set is removed). Free space there, or choose --out "
                                "on another disk, then run the command again: generation starts over.")


def save_image(image: Image.Image, path: Path, quality: int) -> None:
    """`image.save`, with a failed write naming its file (PIL's own OSError names none)."""
    try:
        image.save(path, quality=quality)
    except OSError as exc:
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def ensure(root: Path, up_to_date: Callable[[Path], bool], generate: Callable[[Path], Path]) -> Path:
    """``root`` as it is when ``up_to_date(root)``, else ``generate(root)``, which replaces it atomically.

    Safe against a concurrent process doing the same: whichever finishes second
    may fail to move its set into place, finds the first one's set, and keeps it.
    """
    if up_to_date(root):
        return root
    try:
        return generate(root)
    except OSError:
        if up_to_date(root):  # another process published the same set first
            return root
        raise
