"""`reidbench weights pull` and `weights list`: fill the Hugging Face cache ahead of a run, and show what it holds.

Pulling is what a login node with internet access does before an offline
cluster job: each name is fetched (or found) in the cache and its file loaded
into the backbone it is for, so a file that does not fit is found now, not in
the job. Listing reads the cache with huggingface_hub's own scanner.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from reidbench.errors import UsageError
from reidbench.variants.backbones import BACKBONES
from reidbench.variants.factory import create_variant
from reidbench.variants.grid import Cell
from reidbench.variants.pretrained import fetch_named
from reidbench.variants.settings import VariantSettings
from reidbench.variants.weights import WEIGHT_SUFFIXES, file_sha256
from reidbench.variants.weights.hub import blob_damage, hub_cache_dir, hub_offline, upstream_repos


def pull_weights(weights: dict[str, str], settings: Callable[[str], VariantSettings], log: Callable[[str], None]) -> None:
    """Fetch every backbone's weights into the cache and load each into its backbone, built with `settings(backbone)`."""
    if not weights:
        raise UsageError("weights pull: nothing to pull; give BACKBONE=SPEC (e.g. vit768=timm/vit_base_patch16_224.orig_in21k_ft_in1k), "
                         "--pretrained, or a --grid whose file names [weights] or says pretrained = true.")
    mode = "offline (HF_HUB_OFFLINE): the cache is only read" if hub_offline() else "missing files are downloaded"
    log(f"weights pull: {len(weights)} backbone(s), Hugging Face cache {hub_cache_dir()}, {mode}")
    for backbone, value in weights.items():
        fetch_named({backbone: value}, "weights pull")
        report = create_variant(Cell(backbone, "none"), weights=value, settings=settings(backbone)).weights_report
        origin = f"{report.hub['repo']}@{report.hub['revision']} {report.hub['file']}" if report.hub else "local file"
        log(f"{backbone}: {value} -> {origin} ({report.path}), {report.size_bytes} bytes, sha256 {report.sha256}: loads "
            f"({report.loaded} tensors)")


@dataclass(frozen=True)
class CachedWeights:
    """One file of one cached revision, and the backbones whose names resolve to its repository."""

    repo: str
    revision: str
    refs: tuple[str, ...]
    file: str
    size: int
    sha256: str
    backbones: tuple[str, ...]
    name: str
    """The weights name that resolves to this repository ('' when none of the backbones' libraries knows it)."""
    damage: str = ""


def cached_weights() -> list[CachedWeights]:
    """The model files in the Hugging Face cache, by huggingface_hub's scan; an absent cache holds none."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(hub_cache_dir())
    except CacheNotFound:
        return []
    takers = _takers()
    rows = []
    for repo in sorted((r for r in info.repos if r.repo_type == "model"), key=lambda r: r.repo_id):
        names = takers.get(repo.repo_id, {})
        for revision in sorted(repo.revisions, key=lambda r: r.commit_hash):
            for file in sorted(revision.files, key=lambda f: f.file_name):
                if not file.file_name.lower().endswith(WEIGHT_SUFFIXES):
                    continue
                sha256 = file_sha256(file.file_path)
                rows.append(CachedWeights(
                    repo.repo_id, revision.commit_hash, tuple(sorted(revision.refs)), file.file_name, file.size_on_disk,
                    sha256, tuple(names), next(iter(names.values()), ""), blob_damage(file.file_path, sha256),
                ))
    return rows


def _takers() -> dict[str, dict[str, str]]:
    """Hub repository -> {backbone: the name that resolves to it}, from each backbone's declared upstream."""
    out: dict[str, dict[str, str]] = {}
    known: dict[object, dict[str, str]] = {}
    for entry in BACKBONES:
        if entry.upstream is None:
            continue
        repos = known.setdefault(entry.upstream, upstream_repos(entry.upstream))
        for repo, name in repos.items():
            out.setdefault(repo, {})[entry.name] = name
    return out


def cached_weights_table(rows: list[CachedWeights]) -> str:
    """One line per cached file, for `reidbench weights list`."""
    if not rows:
        return f"no model weights in the Hugging Face cache {hub_cache_dir()}; fill it with `reidbench weights pull`."
    lines = [f"Hugging Face cache {hub_cache_dir()}:"]
    for row in rows:
        refs = f" ({', '.join(row.refs)})" if row.refs else ""
        takers = f"{', '.join(row.backbones)} as {row.name}" if row.backbones else "no backbone's library names it (use hf-hub:)"
        damage = f"  DAMAGED: {row.damage}" if row.damage else ""
        lines.append(f"  {row.repo}  revision {row.revision}{refs}  {row.file}  {row.size} bytes  sha256 {row.sha256}  "
                     f"backbones: {takers}{damage}")
    return "\n".join(lines)

