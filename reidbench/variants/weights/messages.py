"""The text of the loader's refusals: one line each, naming the file and saying what to do instead."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, NoReturn

from reidbench.errors import UsageError
from reidbench.variants.weights.spec import PretrainedSpec

DOWNLOAD_HINT = (
    "download the file elsewhere (vit768: timm's jx_vit_base_p16_224-80ecf9dd.pth "
    "or another ViT-B/16 .pth/.bin/.safetensors/.npz; clip512, clip512proj and clip768: OpenAI's ViT-B-16.pt or an "
    "open_clip ViT-B-16 open_clip_pytorch_model.bin / open_clip_model.safetensors) and pass its local path, "
    "e.g. --weights vit768=/models/jx_vit_base_p16_224-80ecf9dd.pth"
)

FORMAT_HOLDS = {"npz": "an ImageNet ViT: load it into vit768", "torchscript": "OpenAI CLIP: load it into clip512, clip512proj or clip768"}
"""Formats only one kind of network comes in -> what such a file holds and which backbone takes it."""

_BLOCK_KEY = r"^(?:blocks|transformer\.resblocks)\.(\d+)\."
"""A transformer block's number in timm's and open_clip's names."""


def unreadable(path: Path, reason: str) -> NoReturn:
    """Refuse a file no reader can take, with the formats that are read."""
    reason = " ".join(str(reason).split())
    raise UsageError(
        f"weights file {path} cannot be read: {reason}. Expected a PyTorch state dict (.pth/.pt/.bin), a "
        f"safetensors file, a JAX ViT .npz or OpenAI's TorchScript CLIP archive; re-download the file if it is "
        f"truncated."
    )


def wrong_format(path: Path, fmt: str, kind: str, backbone_name: str) -> str:
    """A file of a format the backbone's spec does not list."""
    return (
        f"weights file {path} is a {fmt}, which {backbone_name} does not take; such a file holds "
        f"{FORMAT_HOLDS.get(kind, 'another network')}."
    )


def mismatch_message(
    path: Path, fmt: str, backbone_name: str, spec: PretrainedSpec, settings: Any,
    missing: list[str], unexpected: list[str], mismatched: dict[str, tuple], network_keys: list[str],
) -> str:
    """Every key that does not fit, folded by block number, and a guess at the cause."""
    built = (
        f" (depth {settings.depth}, {settings.img_size[0]}x{settings.img_size[1]}, stride {settings.stride})" if settings else ""
    )
    parts = [
        f"weights file {path} ({fmt}) does not fit {backbone_name}'s {spec.network}{built}: "
        f"{len(missing)} missing, {len(unexpected)} unexpected and {len(mismatched)} shape-mismatched key(s); "
        f"nothing was loaded."
    ]
    if missing:
        parts.append(f"Missing (in the model, not in the file): {', '.join(compact_keys(missing))}.")
    if unexpected:
        parts.append(f"Unexpected (in the file, not in the model): {', '.join(compact_keys(unexpected))}.")
    if mismatched:
        shapes = ", ".join(f"{key} {list(have)} vs {list(want)}" for key, (have, want) in mismatched.items())
        parts.append(f"Shape mismatch (file vs model): {shapes}.")
    hint = _architecture_hint(spec, network_keys, unexpected, settings)
    if hint:
        parts.append(hint)
    return " ".join(parts)


def _architecture_hint(spec: PretrainedSpec, network_keys: list[str], unexpected: list[str], settings: Any) -> str:
    """Another network's file (the spec's misfits), or the right network at another depth."""
    keys = network_keys + unexpected
    for misfit in spec.misfits:
        if any(k.startswith(misfit.key_prefixes) for k in keys):
            return misfit.hint
    blocks = {int(m.group(1)) for k in network_keys if (m := re.match(_BLOCK_KEY, k))}
    if settings is not None and blocks and max(blocks) + 1 != settings.depth:
        return f"The file has {max(blocks) + 1} blocks and the variant {settings.depth}: set depth = {max(blocks) + 1}."
    return ""


def compact_keys(keys: Iterable[str]) -> list[str]:
    """Keys that differ only in their first number, folded: blocks.{0-11}.norm1.weight."""
    groups: dict[str, list[int]] = {}
    for key in keys:
        match = re.search(r"(?<=[._/])(\d+)(?=[._/]|$)", key)
        pattern = key if match is None else key[: match.start()] + "{}" + key[match.end():]
        groups.setdefault(pattern, [])
        if match is not None:
            groups[pattern].append(int(match.group(1)))
    out = []
    for pattern, numbers in groups.items():
        if len(numbers) <= 1:
            out.append(pattern.replace("{}", str(numbers[0])) if numbers else pattern)
        else:
            out.append(pattern.replace("{}", "{" + _ranges(sorted(set(numbers))) + "}"))
    return out


def _ranges(numbers: list[int]) -> str:
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 2 else ",".join(map(str, r)) for r in runs)
