"""Weights by name: timm tags, open_clip tags and `hf-hub:` repos, resolved to a file in the Hugging Face cache.

Every name ends as a file of a Hugging Face Hub repository (timm's and
open_clip's pretrained configs say which repository and file a tag is), looked
up and downloaded with huggingface_hub into its standard cache, so a cache
filled by timm, open_clip or `huggingface-cli download` serves reidbench and
the other way round. huggingface_hub reads HF_HOME, HF_HUB_CACHE and
HF_HUB_OFFLINE once, when it is imported; they are read here at each call and
handed to it, so a value set later (a test, a job script) is the one obeyed.

The cache is read first and the hub asked only for what it does not hold: a
name cached on a login node resolves on an offline compute node. A cached
file is checked against its blob's name (the SHA-256 of the file for LFS
files, git's blob hash otherwise) before it is loaded, so a truncated or
damaged file is refused; an interrupted download stays a `*.incomplete` blob,
which no snapshot points to and nothing loads.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from reidbench.errors import UsageError
from reidbench.variants.weights.paths import URL, WEIGHT_SUFFIXES, file_sha256
from reidbench.variants.weights.spec import Upstream

HF_HUB_PREFIX = "hf-hub:"
TIMM_PREFIX = "timm/"
_TRUE = {"1", "ON", "YES", "TRUE"}
"""What huggingface_hub takes for true in a boolean environment variable."""


def is_hub_name(text: str) -> bool:
    """Whether a weights value that is no local file is a name: `hf-hub:...`, `timm/...`, or a bare open_clip tag."""
    if text.startswith((HF_HUB_PREFIX, TIMM_PREFIX)):
        return True
    return not URL.match(text) and "/" not in text and os.sep not in text and not text.lower().endswith(WEIGHT_SUFFIXES)


def hub_cache_dir() -> Path:
    """The hub cache huggingface_hub would use if imported now: HF_HUB_CACHE, else HF_HOME/hub, else its default."""
    env = os.environ
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    cache = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
    return Path(os.path.expandvars(os.path.expanduser(cache)))


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as set now."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.upper() in _TRUE


@dataclass(frozen=True)
class HubName:
    """A weights name, parsed: the repository, revision and candidate files it stands for. No file is touched."""

    spec: str
    """As the user wrote it."""
    repo_id: str
    revision: Optional[str]
    """None: the repository's main branch."""
    filenames: tuple[str, ...]
    """Tried in this order (safetensors first, as timm and open_clip do)."""
    activation: Optional[str] = None
    """open_clip tags: the MLP activation open_clip's config builds the model with (QuickGELU or GELU)."""

    def describe(self) -> str:
        files = " or ".join(self.filenames)
        return f"Hugging Face repo {self.repo_id}, revision {self.revision or 'main'}, file {files}"


@dataclass(frozen=True)
class HubFile:
    """A name resolved to one cached, checked file: what a record says the backbone started from."""

    name: HubName
    revision: str
    """The commit hash the file was taken at."""
    filename: str
    path: Path
    """The file in the cache's snapshot folder."""
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        """What a weights report adds for a named file (its SHA-256 is the report's own)."""
        return {"spec": self.name.spec, "repo": self.name.repo_id, "revision": self.revision, "file": self.filename}


def parse_hub_name(text: str, backbone: str, upstream: Optional[Upstream], where: str) -> HubName:
    """A name checked against the backbone's library (its tags, its pretrained configs); no cache, no network."""
    text, revision = _split_revision(text.strip(), where, backbone)
    if text.startswith(HF_HUB_PREFIX):
        parts = text[len(HF_HUB_PREFIX):].split("/")
        if len(parts) < 2 or not all(parts):
            raise UsageError(f"{where}: {text!r} for {backbone} must be hf-hub:ORG/REPO[/FILE][@REVISION], e.g. "
                             "hf-hub:timm/vit_base_patch16_224.orig_in21k_ft_in1k.")
        named = "/".join(parts[2:])
        return HubName(_with_revision(text, revision), "/".join(parts[:2]), revision, (named,) if named else _library_files(upstream))
    if upstream is None:
        raise UsageError(f"{where}: {backbone} declares no upstream library, so it takes no tag {text!r}; pass a local "
                         "file or hf-hub:ORG/REPO.")
    if text.startswith(TIMM_PREFIX):
        return _timm_name(text, revision, backbone, upstream, where)
    return _open_clip_name(text, revision, backbone, upstream, where)


def _split_revision(text: str, where: str, backbone: str) -> tuple[str, Optional[str]]:
    name, sep, revision = text.partition("@")
    if sep and (not revision or "@" in revision):
        raise UsageError(f"{where}: {text!r} for {backbone}: give one revision after a single '@', e.g. NAME@main.")
    return name, revision or None


def _with_revision(text: str, revision: Optional[str]) -> str:
    return f"{text}@{revision}" if revision else text


def _library_files(upstream: Optional[Upstream]) -> tuple[str, ...]:
    """The files a library's hub repositories hold its weights in, safetensors first: the library's own names."""
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME as CLIP_SAFE, HF_WEIGHTS_NAME as CLIP_BIN
    from timm.models._hub import HF_SAFE_WEIGHTS_NAME as TIMM_SAFE, HF_WEIGHTS_NAME as TIMM_BIN

    files = {"timm": (TIMM_SAFE, TIMM_BIN), "open_clip": (CLIP_SAFE, CLIP_BIN)}
    return files[upstream.library] if upstream else (*files["timm"], *files["open_clip"])


def _timm_name(text: str, revision: Optional[str], backbone: str, upstream: Upstream, where: str) -> HubName:
    """`timm/ARCH.TAG`: timm's pretrained config names the hub repository (and, for some tags, the file)."""
    import timm

    if upstream.library != "timm":
        raise UsageError(f"{where}: {text!r} is a timm tag, but {backbone} wraps an {upstream.library} {upstream.architecture}: "
                         f"give it an {upstream.library} tag (e.g. {upstream.default}) or hf-hub:ORG/REPO.")
    cfg = timm.models.get_pretrained_cfg(text[len(TIMM_PREFIX):])
    if cfg is None or not cfg.hf_hub_id:
        known = ", ".join(timm.list_pretrained(f"{upstream.architecture}.*")[:6])
        raise UsageError(f"{where}: timm has no hub weights named {text!r} for {backbone}; timm tags of its architecture "
                         f"include {known} (as timm/NAME), or pass hf-hub:ORG/REPO or a local file.")
    files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else _library_files(upstream)
    return HubName(_with_revision(text, revision), cfg.hf_hub_id, revision, files)


def _open_clip_name(text: str, revision: Optional[str], backbone: str, upstream: Upstream, where: str) -> HubName:
    """An open_clip pretrained tag (`openai`, `laion2b_s34b_b88k`): open_clip's config for the architecture names the repo."""
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(upstream.architecture) if upstream.library == "open_clip" else []
    if text not in tags:
        kind = f"open_clip's {upstream.architecture} tags are {', '.join(tags)}" if tags else (
            f"{backbone} wraps timm's {upstream.architecture} and takes timm tags, e.g. {upstream.default}")
        raise UsageError(f"{where}: {text!r} for {backbone} is neither a local file nor a known weights name; {kind}; "
                         "or pass hf-hub:ORG/REPO, or the path of a local checkpoint file.")
    cfg = open_clip.get_pretrained_cfg(upstream.architecture, text)
    if not cfg.get("hf_hub"):
        raise UsageError(f"{where}: open_clip's {upstream.architecture} tag {text!r} has no Hugging Face Hub copy; download "
                         f"{cfg.get('url') or 'the file'} and pass its local path.")
    repo_id, filename = os.path.split(cfg["hf_hub"])
    activation = "QuickGELU" if cfg.get("quick_gelu") else "GELU"
    return HubName(_with_revision(text, revision), repo_id, revision, (filename,) if filename else _library_files(upstream), activation)


def fetch(name: HubName, backbone: str, where: str, download: bool = True) -> HubFile:
    """The cached file a name stands for, downloaded first when it is not cached and downloads are allowed.

    Offline (HF_HUB_OFFLINE) or with `download` False, only the cache is read.
    A failure is one paragraph: the name, the cache searched, `reidbench weights
    pull` and the local-file alternative.
    """
    cache = hub_cache_dir()
    for filename in name.filenames:
        found = _cached(name, filename, cache)
        if found is not None:
            return _checked(name, filename, found, cache, backbone, where)
    if hub_offline() or not download:
        why = "downloads are off (HF_HUB_OFFLINE is set)" if hub_offline() else "it was not downloaded"
        raise UsageError(_not_cached(name, backbone, where, cache, why))
    filename, path = _download(name, backbone, where, cache)
    return _checked(name, filename, path, cache, backbone, where)


def _cached(name: HubName, filename: str, cache: Path) -> Optional[Path]:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(name.repo_id, filename, cache_dir=str(cache), revision=name.revision)
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def _download(name: HubName, backbone: str, where: str, cache: Path) -> tuple[str, Path]:
    """The first of the name's files the repository has, downloaded into the cache by huggingface_hub."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    for filename in name.filenames:
        try:
            return filename, Path(hf_hub_download(name.repo_id, filename, revision=name.revision, cache_dir=str(cache)))
        except RemoteEntryNotFoundError:  # the hub answered: no such file (not: the hub could not be reached)
            continue
        except Exception as exc:  # no network, unknown repo or revision, gated repo, interrupted download
            reason = " ".join(str(exc).split())[:300]
            raise UsageError(_not_cached(name, backbone, where, cache, f"the download failed ({type(exc).__name__}: {reason})")) from None
    raise UsageError(f"{where}: {name.spec!r} for {backbone}: the {name.describe()} does not exist; name the file, "
                     f"e.g. hf-hub:{name.repo_id}/FILE.")


def _not_cached(name: HubName, backbone: str, where: str, cache: Path, why: str) -> str:
    partial = sorted((cache / _repo_folder(name.repo_id) / "blobs").glob("*.incomplete"))
    interrupted = (f" An interrupted download ({partial[0].name}) is there; it is never loaded." if partial else "")
    return (
        f"{where}: {name.spec!r} for {backbone} ({name.describe()}) is not in the Hugging Face cache {cache} "
        f"and {why}.{interrupted} Fetch it where the hub is reachable (on a cluster, a login node) with "
        f"`reidbench weights pull {backbone}={name.spec}` into the same cache (HF_HOME or HF_HUB_CACHE), or download "
        f"the file elsewhere and pass its local path, e.g. --weights {backbone}=/models/{name.filenames[0]}."
    )


def _repo_folder(repo_id: str) -> str:
    return "models--" + repo_id.replace("/", "--")


def _checked(name: HubName, filename: str, path: Path, cache: Path, backbone: str, where: str) -> HubFile:
    """The file with its revision and SHA-256, once its bytes match the blob name the hub gave them."""
    sha256 = file_sha256(path)
    damage = blob_damage(path, sha256)
    if damage:
        raise UsageError(
            f"{where}: the cached file {path} for {backbone} ({name.spec!r}) is damaged -- {damage}; nothing was loaded. "
            f"Delete {path.resolve()} and fetch it again with `reidbench weights pull {backbone}={name.spec}`."
        )
    snapshot = path.relative_to(cache / _repo_folder(name.repo_id) / "snapshots").parts[0]
    return HubFile(name, snapshot, filename, path, sha256)


def blob_damage(path: Path, sha256: str) -> str:
    """'' when a cached file's bytes match its blob's name, else why not (a truncated or corrupt file).

    The hub names an LFS file's blob by its SHA-256 and a small file's by git's
    blob hash; a file laid in a snapshot folder without a blob cannot be checked
    here, and its reader refuses it if it is damaged.
    """
    blob = path.resolve()
    expected, actual = blob.name, None
    if blob.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", expected):
        actual = sha256
    elif blob.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{40}", expected):
        actual = _git_blob_sha1(blob)
    if actual is None or actual == expected:
        return ""
    return f"truncated or corrupt: its hash is {actual}, the hub's {expected} ({blob.stat().st_size} bytes on disk)"


def _git_blob_sha1(path: Path) -> str:
    """How git names a file that is not stored with LFS (small files): sha1 of 'blob SIZE\\0' and the bytes."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    digest.update(path.read_bytes())
    return digest.hexdigest()


def upstream_repos(upstream: Upstream) -> dict[str, str]:
    """Hub repository -> the name that resolves to it, for every pretrained tag of the upstream's architecture."""
    if upstream.library == "timm":
        import timm

        tags = timm.list_pretrained(f"{upstream.architecture}.*")
        return {cfg.hf_hub_id: TIMM_PREFIX + tag for tag in tags if (cfg := timm.models.get_pretrained_cfg(tag)) and cfg.hf_hub_id}
    import open_clip

    repos = {}
    for tag in open_clip.list_pretrained_tags_by_model(upstream.architecture):
        hub = open_clip.get_pretrained_cfg(upstream.architecture, tag).get("hf_hub")
        if hub:
            repos.setdefault(os.path.split(hub)[0], tag)
    return repos
