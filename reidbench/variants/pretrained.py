"""Weights values -- a local file or a name -- checked, fetched and turned into the file a backbone loads.

A value is a local path when such a file exists, otherwise a name
(`reidbench.variants.weights.hub`) resolved against the backbone's upstream
library as declared on the backbone registry. Grids and --weights keep names
as written (checked, not fetched); `fetch_named` caches them before a run
starts, and a variant is built from the cached file with the name, revision
and SHA-256 in its weights report.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Optional

from reidbench.errors import UsageError
from reidbench.variants.backbones import BACKBONES
from reidbench.variants.weights import WeightsReport, resolve_weights_path
from reidbench.variants.weights.hub import HubFile, HubName, fetch, is_hub_name, parse_hub_name


def upstream_name(value: str | os.PathLike, backbone: str, where: str, base_dir: Optional[Path] = None) -> Optional[HubName]:
    """The parsed name when `value` is one (a string naming no existing file), else None."""
    if not isinstance(value, str):
        return None
    path = Path(value.strip()).expanduser()
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    if path.exists() or not is_hub_name(value.strip()):
        return None
    return parse_hub_name(value, backbone, BACKBONES.get(backbone).upstream, where)


def check_weights_value(value: str | os.PathLike, backbone: str, where: str, base_dir: Optional[Path] = None) -> str:
    """A weights value as a plan stores it: a name as written (checked against the backbone's library, not
    fetched), or the absolute path of an existing file."""
    name = upstream_name(value, backbone, where, base_dir)
    return name.spec if name is not None else str(resolve_weights_path(value, backbone, where, base_dir=base_dir))


def weights_file(value: str | os.PathLike, backbone: str, where: str, download: bool = True) -> tuple[Path, Optional[HubFile]]:
    """The local file to load, and for a name the cached hub file it resolved to (downloaded if allowed)."""
    name = upstream_name(value, backbone, where)
    if name is None:
        return resolve_weights_path(value, backbone, where), None
    hub = fetch(name, backbone, where, download)
    return hub.path, hub


def pretrained_weights(backbones: Iterable[str]) -> dict[str, str]:
    """`--pretrained`: each backbone's upstream weights, as its registry entry declares them."""
    return {b: upstream.default for b in backbones if (upstream := BACKBONES.get(b).upstream) is not None}


def fetch_named(weights: dict[str, str], where: str) -> dict[str, HubFile]:
    """Every name among `weights` in the cache, downloaded first where allowed: fails before anything starts."""
    found = {}
    for backbone, value in weights.items():
        hub = weights_file(value, backbone, where)[1]
        if hub is not None:
            found[backbone] = hub
    return found


def with_hub(report: WeightsReport, hub: HubFile) -> WeightsReport:
    """The report of a load from a named file, with the name, revision and file; an open_clip tag's activation checked.

    open_clip's config says which activation a tag's weights were trained with
    (OpenAI's: QuickGELU; LAION's: GELU), which the files themselves do not
    record; a variant built with the other one is refused.
    """
    wanted = hub.name.activation
    if wanted and report.activation and wanted != report.activation:
        raise UsageError(
            f"weights {hub.name.spec!r} for {report.backbone} were trained with {wanted} (open_clip's config for that tag), "
            f"but this variant was built with {report.activation}; set clip_quick_gelu = {str(wanted == 'QuickGELU').lower()} "
            f"and build it again."
        )
    return replace(report, hub=hub.to_dict())
