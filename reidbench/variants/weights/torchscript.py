"""OpenAI's CLIP archive, a TorchScript zip, read for its tensors without running any of its code.

`torch.jit.load` would compile and run the archive's code. Instead its
`data.pkl` is read with an unpickler that knows only how tensors are stored:
it rebuilds them from the archive's storages, replaces every scripted module by
an inert record of the attributes the pickle sets, and refuses any other global.
"""
from __future__ import annotations

import collections
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from reidbench.errors import UsageError
from reidbench.variants.weights.messages import unreadable

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


@dataclass(frozen=True)
class _StorageType:
    """Stands in for `torch.<X>Storage` in a pickle: only its dtype is needed."""

    dtype: torch.dtype


class _ScriptedModule:
    """Stands in for a TorchScript module class: records the attributes the pickle sets, runs nothing."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: tuple, stride: tuple, requires_grad: bool, hooks: Any, metadata: Any = None) -> torch.Tensor:
    """What `torch._utils._rebuild_tensor_v2` does, on a flat tensor standing for the storage."""
    return storage.as_strided(size, stride, offset)


class _ArchiveUnpickler(pickle.Unpickler):
    """Rebuilds tensors and records modules; any other global in the pickle is refused."""

    def __init__(self, archive: zipfile.ZipFile, root: str) -> None:
        super().__init__(archive.open(f"{root}/data.pkl"))
        self.archive = archive
        self.root = root
        self.script_classes: set[str] = set()
        self._storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module.startswith("__torch__."):
            self.script_classes.add(f"{module}.{name}")
            return _ScriptedModule
        raise pickle.UnpicklingError(f"refusing to load the global {module}.{name}, which is not part of a weights archive")

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if key not in self._storages:
            raw = self.archive.read(f"{self.root}/data/{key}")
            dtype = storage_type.dtype
            need = numel * torch.empty((), dtype=dtype).element_size()
            if len(raw) < need:
                raise pickle.UnpicklingError(f"storage {key} holds {len(raw)} bytes, {need} expected")
            flat = torch.frombuffer(bytearray(raw[:need]), dtype=dtype) if need else torch.empty(0, dtype=dtype)
            self._storages[key] = flat
        return self._storages[key]


def read_torchscript(path: Path) -> tuple[dict[str, torch.Tensor], set[str]]:
    """The archive's tensors under their module paths, and the scripted classes it names (to tell QuickGELU from GELU)."""
    try:
        with zipfile.ZipFile(path) as archive:
            unpickler = _ArchiveUnpickler(archive, _archive_root(path, archive))
            top = unpickler.load()
    except UsageError:
        raise
    except Exception as exc:  # UnpicklingError (refused global), KeyError (missing storage), BadZipFile, ...
        unreadable(path, f"reading its TorchScript data.pkl failed: {type(exc).__name__}: {exc}")
    if not isinstance(top, _ScriptedModule):
        unreadable(path, "its data.pkl does not hold a scripted module")
    tensors: dict[str, torch.Tensor] = {}
    _collect_tensors(top, "", tensors)
    return tensors, unpickler.script_classes


def _archive_root(path: Path, archive: zipfile.ZipFile) -> str:
    """The archive's one top-level folder holding data.pkl and constants.pkl, stored little-endian."""
    names = set(archive.namelist())
    roots = [n[: -len("/data.pkl")] for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(roots) != 1 or f"{roots[0]}/constants.pkl" not in names:
        unreadable(path, "it looks like a TorchScript archive but has no single <name>/data.pkl")
    byteorder = f"{roots[0]}/byteorder"
    if byteorder in names and archive.read(byteorder).strip() not in (b"little", b""):
        unreadable(path, "its tensors are stored big-endian")
    return roots[0]


def _collect_tensors(module: _ScriptedModule, prefix: str, out: dict[str, torch.Tensor]) -> None:
    state = getattr(module, "state", None)
    if not isinstance(state, dict):
        return
    for name, value in state.items():
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
        elif isinstance(value, _ScriptedModule):
            _collect_tensors(value, f"{prefix}{name}.", out)
