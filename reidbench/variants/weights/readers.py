"""Readers, one per format, that turn a file into a flat {name: tensor} mapping without running anything in it.

- PyTorch files (`.pth`, `.pt`, `.bin`): `torch.load(..., weights_only=True)`.
- safetensors: `safetensors.torch.load_file`.
- the original JAX ViT `.npz`: `numpy.load(allow_pickle=False)`; its names are
  mapped onto timm's later, by `jax.jax_vit_to_timm`.
- OpenAI's CLIP `ViT-B-16.pt`, a TorchScript archive: see `torchscript`.

The format is told from the file's first bytes, not its name, so a renamed or
mislabelled file is read by the right reader or refused in one line.
"""
from __future__ import annotations

import pickle
import re
import struct
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch

from reidbench.variants.weights.checkpoint import Checkpoint
from reidbench.variants.weights.messages import unreadable
from reidbench.variants.weights.torchscript import read_torchscript


def read_checkpoint(path: Path) -> Checkpoint:
    """Read any supported file; a file that is not one fails with one line naming it."""
    checkpoint = _READERS[_sniff(path)](path)
    if not checkpoint.tensors:
        unreadable(path, "it holds no tensors")
    return checkpoint


def _sniff(path: Path) -> str:
    """The reader a file needs, from its first bytes (and a zip archive's member names)."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(9)
    if size == 0:
        unreadable(path, "the file is empty")
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _sniff_zip(path)
    if head[:1] == b"\x80":
        return "torch"  # torch.save's legacy (non-zip) format starts with a pickle protocol byte
    if len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < size:
        return "safetensors"
    unreadable(path, f"its first bytes {head[:8]!r} match none of these formats")


def _sniff_zip(path: Path) -> str:
    """torch.save, numpy.savez and TorchScript all write zip archives; their members tell them apart."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        unreadable(path, f"it is a truncated or corrupt zip archive ({exc})")
    if any(n == "constants.pkl" or n.endswith("/constants.pkl") for n in names):
        return "torchscript"
    if names and all(n.endswith(".npy") for n in names):
        return "npz"
    if any(n.endswith("data.pkl") for n in names):
        return "torch"
    unreadable(path, f"it is a zip archive of other files ({', '.join(names[:3])}, ...)")


def _read_torch(path: Path) -> Checkpoint:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if "Weights only load failed" in text:
            what = f" ({found.group(1)})" if found else ""
            unreadable(
                path,
                f"it holds pickled objects other than tensors and plain containers{what}; reidbench loads with "
                f"weights_only=True and never unpickles arbitrary objects -- save the model's state_dict() instead",
            )
        unreadable(path, f"torch.load failed: {text.splitlines()[0] if text else type(exc).__name__}")
    except Exception as exc:  # torch.load reports damage as RuntimeError, EOFError, ValueError, ...
        unreadable(path, f"torch.load failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    tensors, notes = _unwrap_state_dict(path, obj)
    return Checkpoint("torch", f"torch state dict ({path.suffix or 'no suffix'})", tensors, notes)


def _unwrap_state_dict(path: Path, obj: Any) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A plain state dict, or the state dict inside a training checkpoint; `module.` (DDP) prefixes dropped."""
    notes = []
    if not isinstance(obj, dict):
        unreadable(path, f"it holds a {type(obj).__name__}, not a state dict")
    for wrapper in ("state_dict", "model"):
        if isinstance(obj.get(wrapper), dict):
            notes.append(f"tensors read from the checkpoint's {wrapper!r} entry")
            obj = obj[wrapper]
            break
    others = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if others:
        unreadable(path, f"entries {', '.join(map(str, others[:5]))} are not tensors; expected a state dict")
    if obj and all(k.startswith("module.") for k in obj):
        notes.append("'module.' prefix (DistributedDataParallel) removed from every key")
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj), notes


def _read_safetensors(path: Path) -> Checkpoint:
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as exc:  # SafetensorError and OSError for truncated or malformed files
        unreadable(path, f"safetensors: {exc}")
    return Checkpoint("safetensors", "safetensors", dict(tensors))


def _read_npz(path: Path) -> Checkpoint:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: np.asarray(archive[name]) for name in archive.files}
    except Exception as exc:  # object arrays, damaged members, ...
        unreadable(path, f"numpy.load: {exc}")
    odd = [n for n, a in arrays.items() if a.dtype.kind not in "fiub"]
    if odd:
        unreadable(path, f"arrays {', '.join(odd[:3])} have dtype {arrays[odd[0]].dtype}, not a number type")
    return Checkpoint("npz", "JAX ViT .npz", {n: torch.from_numpy(a.copy()) for n, a in arrays.items()})


def _read_torchscript(path: Path) -> Checkpoint:
    tensors, script_classes = read_torchscript(path)
    return Checkpoint("torchscript", "TorchScript archive (OpenAI CLIP)", tensors, script_classes=script_classes)


_READERS: dict[str, Callable[[Path], Checkpoint]] = {
    "torch": _read_torch,
    "safetensors": _read_safetensors,
    "npz": _read_npz,
    "torchscript": _read_torchscript,
}
"""One reader per entry of `spec.FORMATS`."""
