"""Pretrained weights from local files, loaded strictly onto a variant's backbone.

Readers, one per format, turn a file into a flat {name: tensor} mapping without
running anything it contains:

- PyTorch files (`.pth`, `.pt`, `.bin`): `torch.load(..., weights_only=True)`.
- safetensors: `safetensors.torch.load_file`.
- the original JAX ViT `.npz` (vit_jax or big_vision layout): `numpy.load(allow_pickle=False)`,
  its names mapped onto timm's (`_jax_vit_to_timm`).
- OpenAI's CLIP `ViT-B-16.pt`, a TorchScript archive: its `data.pkl` is read with a
  restricted unpickler that rebuilds tensors and replaces every scripted module by
  an inert record of its attributes (`_read_torchscript`). `torch.jit.load` is never
  called, so none of the archive's code runs.

The mapping is then checked against the pretrained network the backbone wraps
(timm's VisionTransformer as `backbone.vit.*`, open_clip's as `backbone.visual.*`):
every missing, unexpected or shape-mismatched key is reported and nothing is
loaded unless all of them fit. File keys that belong to no part of a ReID
backbone (the ImageNet classifier, CLIP's text tower) are listed as ignored;
model keys outside the pretrained network (camera embedding, token projection,
neck, head) are listed as new. The position embedding is the one tensor whose
shape may differ: it is resized from the checkpoint's square grid (14x14 at 224)
to the variant's grid (`resize_position_embedding`).
"""
from __future__ import annotations

import collections
import functools
import hashlib
import os
import pickle
import re
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from reidbench.errors import UsageError
from reidbench.variants.backbones import CLIPReIDViT, TransReIDViT

WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".npz", ".ckpt")
"""File endings read as checkpoints; a value without one that is not a file is taken for a hub tag."""

POS_EMBED_RESIZE = "bicubic, antialias, align_corners=False, CLS position kept"
"""How the position-embedding grid is resized: as timm's checkpoint filter and open_clip's loader do."""

DOWNLOAD_HINT = (
    "download the file on a machine with internet access (vit768: timm's jx_vit_base_p16_224-80ecf9dd.pth "
    "or another ViT-B/16 .pth/.bin/.safetensors/.npz; clip512 and clip512proj: OpenAI's ViT-B-16.pt or an "
    "open_clip ViT-B-16 open_clip_pytorch_model.bin / open_clip_model.safetensors) and pass its local path, "
    "e.g. --weights vit768=/models/jx_vit_base_p16_224-80ecf9dd.pth"
)


# --------------------------------------------------------------------------- report and errors


@dataclass(frozen=True)
class WeightsReport:
    """What was loaded from which file: enough to reproduce a cell and to audit the load."""

    backbone: str
    path: str
    sha256: str
    size_bytes: int
    format: str
    loaded: int
    """Tensors of the pretrained network filled from the file."""
    new: tuple[str, ...]
    """Model keys the variant adds on top of the pretrained network; they keep their initialisation."""
    ignored: dict[str, str]
    """File key -> why it is not used (ImageNet classifier, CLIP text tower, ...)."""
    resized: dict[str, dict[str, Any]]
    """Model key -> {"from": shape, "to": shape, "grid_from", "grid_to", "method"}."""
    activation: Optional[str] = None
    """CLIP backbones: the MLP activation the weights are used with."""
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        by_reason: dict[str, list[str]] = {}
        for key, reason in self.ignored.items():
            by_reason.setdefault(reason, []).append(key)
        return {
            "backbone": self.backbone,
            "path": self.path,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "format": self.format,
            "loaded": self.loaded,
            "new": list(self.new),
            "ignored": by_reason,
            "resized": {k: dict(v) for k, v in self.resized.items()},
            "activation": self.activation,
            "notes": list(self.notes),
        }

    def summary(self) -> str:
        """One line for a cell's notes."""
        parts = [f"{self.loaded} tensors loaded"]
        for key, change in self.resized.items():
            (fr, fc), (tr, tc) = change["grid_from"], change["grid_to"]
            parts.append(f"{key} resized {fr}x{fc} -> {tr}x{tc} grid")
        reasons = collections.Counter(self.ignored.values())
        parts.extend(f"{count} ignored ({reason})" for reason, count in reasons.items())
        parts.append(f"{len(self.new)} new")
        if self.activation:
            parts.append(self.activation)
        return f"weights {self.backbone}: {self.path} ({self.format}, sha256 {self.sha256[:12]}): " + ", ".join(parts)


class WeightsMismatchError(UsageError):
    """A checkpoint that does not fit the variant's pretrained network; nothing was loaded."""

    def __init__(self, message: str, missing: list[str], unexpected: list[str], mismatched: dict[str, tuple]) -> None:
        super().__init__(message)
        self.missing = missing
        self.unexpected = unexpected
        self.mismatched = mismatched


# --------------------------------------------------------------------------- paths and hashes


def resolve_weights_path(value: str | os.PathLike, backbone: str, where: str = "weights", base_dir: Optional[Path] = None) -> Path:
    """The absolute path of an existing local file; hub tags and missing files are refused.

    `where` names the origin of the value in messages (--weights, a grid file);
    relative paths are taken from `base_dir` when given.
    """
    text = os.fspath(value)
    path = Path(text).expanduser()
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    if path.is_file():
        return Path(os.path.abspath(path))  # absolute, `..` folded; symlinks kept as the user named them
    if path.is_dir():
        raise UsageError(f"{where}: weights for {backbone}, {path}, is a folder; pass the checkpoint file inside it.")
    if _looks_like_hub_tag(text):
        raise UsageError(
            f"{where}: weights for {backbone} {text!r} look like a model-hub tag or URL, not a local file. "
            f"reidbench never downloads: {DOWNLOAD_HINT}."
        )
    raise UsageError(f"{where}: weights file {path} for {backbone} does not exist; pass the path of a local checkpoint file.")


def _looks_like_hub_tag(text: str) -> bool:
    if re.match(r"^[a-z][a-z0-9+.-]*://", text) or text.startswith(("hf-hub:", "hf:", "timm/")):
        return True
    return not text.lower().endswith(WEIGHT_SUFFIXES)


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


# --------------------------------------------------------------------------- readers


@dataclass
class Checkpoint:
    """A file's tensors under its own names, and what the reader learned about it."""

    kind: str
    """The reader: torch, safetensors, npz or torchscript."""
    format: str
    tensors: dict[str, torch.Tensor]
    notes: list[str] = field(default_factory=list)
    script_classes: set[str] = field(default_factory=set)
    """TorchScript archives: the scripted module classes it names (to tell QuickGELU from GELU)."""


def read_checkpoint(path: Path) -> Checkpoint:
    """Read any supported file; a file that is not one fails with one line naming it."""
    kind = _sniff(path)
    readers: dict[str, Callable[[Path], Checkpoint]] = {
        "torch": _read_torch,
        "safetensors": _read_safetensors,
        "npz": _read_npz,
        "torchscript": _read_torchscript,
    }
    checkpoint = readers[kind](path)
    if not checkpoint.tensors:
        _unreadable(path, "it holds no tensors")
    return checkpoint


def _unreadable(path: Path, reason: str) -> None:
    reason = " ".join(str(reason).split())
    raise UsageError(
        f"weights file {path} cannot be read: {reason}. Expected a PyTorch state dict (.pth/.pt/.bin), a "
        f"safetensors file, a JAX ViT .npz or OpenAI's TorchScript CLIP archive; re-download the file if it is "
        f"truncated."
    )


def _sniff(path: Path) -> str:
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(9)
    if size == 0:
        _unreadable(path, "the file is empty")
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            _unreadable(path, f"it is a truncated or corrupt zip archive ({exc})")
        if any(n == "constants.pkl" or n.endswith("/constants.pkl") for n in names):
            return "torchscript"
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
        if any(n.endswith("data.pkl") for n in names):
            return "torch"
        _unreadable(path, f"it is a zip archive of other files ({', '.join(names[:3])}, ...)")
    if head[:1] == b"\x80":
        return "torch"  # torch.save's legacy (non-zip) format starts with a pickle protocol byte
    if len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < size:
        return "safetensors"
    _unreadable(path, f"its first bytes {head[:8]!r} match none of these formats")
    raise AssertionError("unreachable")


def _read_torch(path: Path) -> Checkpoint:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if "Weights only load failed" in text:
            what = f" ({found.group(1)})" if found else ""
            _unreadable(
                path,
                f"it holds pickled objects other than tensors and plain containers{what}; reidbench loads with "
                f"weights_only=True and never unpickles arbitrary objects -- save the model's state_dict() instead",
            )
        _unreadable(path, f"torch.load failed: {text.splitlines()[0] if text else type(exc).__name__}")
    except Exception as exc:  # torch.load reports damage as RuntimeError, EOFError, ValueError, ...
        _unreadable(path, f"torch.load failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    tensors, notes = _unwrap_state_dict(path, obj)
    return Checkpoint("torch", f"torch state dict ({path.suffix or 'no suffix'})", tensors, notes)


def _unwrap_state_dict(path: Path, obj: Any) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A plain state dict, or the state dict inside a training checkpoint; `module.` (DDP) prefixes dropped."""
    notes = []
    if not isinstance(obj, dict):
        _unreadable(path, f"it holds a {type(obj).__name__}, not a state dict")
    for wrapper in ("state_dict", "model"):
        if isinstance(obj.get(wrapper), dict):
            notes.append(f"tensors read from the checkpoint's {wrapper!r} entry")
            obj = obj[wrapper]
            break
    others = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if others:
        _unreadable(path, f"entries {', '.join(map(str, others[:5]))} are not tensors; expected a state dict")
    if obj and all(k.startswith("module.") for k in obj):
        notes.append("'module.' prefix (DistributedDataParallel) removed from every key")
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj), notes


def _read_safetensors(path: Path) -> Checkpoint:
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as exc:  # SafetensorError and OSError for truncated or malformed files
        _unreadable(path, f"safetensors: {exc}")
    return Checkpoint("safetensors", "safetensors", dict(tensors))


def _read_npz(path: Path) -> Checkpoint:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: np.asarray(archive[name]) for name in archive.files}
    except Exception as exc:  # object arrays, damaged members, ...
        _unreadable(path, f"numpy.load: {exc}")
    odd = [n for n, a in arrays.items() if a.dtype.kind not in "fiub"]
    if odd:
        _unreadable(path, f"arrays {', '.join(odd[:3])} have dtype {arrays[odd[0]].dtype}, not a number type")
    return Checkpoint("npz", "JAX ViT .npz", {n: torch.from_numpy(a.copy()) for n, a in arrays.items()})


# TorchScript archives ---------------------------------------------------------

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


def _read_torchscript(path: Path) -> Checkpoint:
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            roots = [n[: -len("/data.pkl")] for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(roots) != 1 or f"{roots[0]}/constants.pkl" not in names:
                _unreadable(path, "it looks like a TorchScript archive but has no single <name>/data.pkl")
            root = roots[0]
            byteorder = f"{root}/byteorder"
            if byteorder in names and archive.read(byteorder).strip() not in (b"little", b""):
                _unreadable(path, "its tensors are stored big-endian")
            unpickler = _ArchiveUnpickler(archive, root)
            top = unpickler.load()
    except UsageError:
        raise
    except Exception as exc:  # UnpicklingError (refused global), KeyError (missing storage), BadZipFile, ...
        _unreadable(path, f"reading its TorchScript data.pkl failed: {type(exc).__name__}: {exc}")
    if not isinstance(top, _ScriptedModule):
        _unreadable(path, "its data.pkl does not hold a scripted module")
    tensors: dict[str, torch.Tensor] = {}
    _collect_tensors(top, "", tensors)
    return Checkpoint("torchscript", "TorchScript archive (OpenAI CLIP)", tensors, script_classes=unpickler.script_classes)


def _collect_tensors(module: _ScriptedModule, prefix: str, out: dict[str, torch.Tensor]) -> None:
    state = getattr(module, "state", None)
    if not isinstance(state, dict):
        return
    for name, value in state.items():
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
        elif isinstance(value, _ScriptedModule):
            _collect_tensors(value, f"{prefix}{name}.", out)


# JAX .npz -> timm names -------------------------------------------------------


class _JaxArrays:
    """An .npz's arrays read by name; remembers what was read and which arrays made each timm tensor."""

    def __init__(self, arrays: dict[str, torch.Tensor]) -> None:
        self.arrays = arrays
        self.out: dict[str, torch.Tensor] = {}
        self.sources: dict[str, list[str]] = {}
        self._read: list[str] = []  # names read since the last put

    def get(self, name: str, layer: Optional[int] = None) -> Optional[torch.Tensor]:
        if name not in self.arrays:
            return None
        self._read.append(name)
        return self.arrays[name] if layer is None else self.arrays[name][layer]

    def put(self, timm_key: str, value: Any, convert: Callable[[Any], torch.Tensor] = lambda t: t) -> None:
        """Store `convert(value)` under `timm_key`, unless a source array was missing (value None)."""
        if value is not None and not (isinstance(value, list) and None in value):
            self.out[timm_key] = convert(value)
            self.sources[timm_key] = list(self._read)
        self._read.clear()

    def unused(self) -> list[str]:
        used = {name for names in self.sources.values() for name in names}
        return [name for name in self.arrays if name not in used]


def _jax_vit_to_timm(arrays: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str], dict[str, list[str]]]:
    """Map a Google ViT .npz (vit_jax or big_vision naming) onto timm's VisionTransformer names.

    Returns the timm-named tensors, the .npz names that map to nothing, and for
    each timm name the .npz names it was made from (for messages). Every block in
    the file is converted, whatever the variant's depth, so that a depth mismatch
    shows up as unexpected keys. Layouts: Flax dense kernels are (in, out) and are
    transposed; attention q/k/v kernels are (width, heads, head_dim) and are fused
    into timm's qkv; the output kernel is (heads, head_dim, width); the patch
    kernel is HWIO and becomes OIHW. big_vision numbers the sub-layers of a block
    differently (attention _0, MLP _0, second LayerNorm _1 instead of _1, _3, _2),
    keeps the position embedding at the top level and may stack all blocks along
    a leading axis (`encoderblock/...`, "scanned").
    """
    p = next((p for p in ("", "opt/target/", "params/", "params/img/") if f"{p}embedding/kernel" in arrays), "")
    big_vision = p.startswith("params/") or f"{p}pos_embedding" in arrays
    attn_i, mlp_i, norm2_i = (0, 0, 1) if big_vision else (1, 3, 2)
    npz = _JaxArrays(arrays)
    dense = lambda t: t.T  # noqa: E731 - (in, out) -> (out, in)
    npz.put("patch_embed.proj.weight", npz.get(f"{p}embedding/kernel"), lambda t: t.permute(3, 2, 0, 1))
    npz.put("patch_embed.proj.bias", npz.get(f"{p}embedding/bias"))
    npz.put("cls_token", npz.get(f"{p}cls"))
    npz.put("pos_embed", npz.get(f"{p}pos_embedding" if big_vision else f"{p}Transformer/posembed_input/pos_embedding"))
    npz.put("norm.weight", npz.get(f"{p}Transformer/encoder_norm/scale"))
    npz.put("norm.bias", npz.get(f"{p}Transformer/encoder_norm/bias"))
    npz.put("head.weight", npz.get(f"{p}head/kernel"), dense)
    npz.put("head.bias", npz.get(f"{p}head/bias"))
    npz.put("pre_logits.fc.weight", npz.get(f"{p}pre_logits/kernel"), dense)
    npz.put("pre_logits.fc.bias", npz.get(f"{p}pre_logits/bias"))

    scanned = f"{p}Transformer/encoderblock/"
    if f"{scanned}LayerNorm_0/scale" in arrays:
        depth = arrays[f"{scanned}LayerNorm_0/scale"].shape[0]
        blocks = [(i, functools.partial(lambda i, name: npz.get(scanned + name, layer=i), i)) for i in range(depth)]
    else:
        numbers = sorted({int(m.group(1)) for k in arrays if (m := re.match(re.escape(p) + r"Transformer/encoderblock_(\d+)/", k))})
        blocks = [(i, functools.partial(lambda i, name: npz.get(f"{p}Transformer/encoderblock_{i}/{name}"), i)) for i in numbers]
    for i, get in blocks:
        b, attn = f"blocks.{i}.", f"MultiHeadDotProductAttention_{attn_i}/"
        npz.put(b + "norm1.weight", get("LayerNorm_0/scale"))
        npz.put(b + "norm1.bias", get("LayerNorm_0/bias"))
        npz.put(b + "attn.qkv.weight", [get(f"{attn}{n}/kernel") for n in ("query", "key", "value")],
                lambda ws: torch.cat([w.flatten(1).T for w in ws]))
        npz.put(b + "attn.qkv.bias", [get(f"{attn}{n}/bias") for n in ("query", "key", "value")],
                lambda bs: torch.cat([v.reshape(-1) for v in bs]))
        npz.put(b + "attn.proj.weight", get(f"{attn}out/kernel"), lambda t: t.flatten(0, 1).T)
        npz.put(b + "attn.proj.bias", get(f"{attn}out/bias"))
        npz.put(b + "norm2.weight", get(f"LayerNorm_{norm2_i}/scale"))
        npz.put(b + "norm2.bias", get(f"LayerNorm_{norm2_i}/bias"))
        for r in (0, 1):
            npz.put(f"{b}mlp.fc{r + 1}.weight", get(f"MlpBlock_{mlp_i}/Dense_{r}/kernel"), dense)
            npz.put(f"{b}mlp.fc{r + 1}.bias", get(f"MlpBlock_{mlp_i}/Dense_{r}/bias"))
    return npz.out, npz.unused(), npz.sources


# --------------------------------------------------------------------------- position embedding


def resize_position_embedding(table: torch.Tensor, new_grid: tuple[int, int], old_grid: Optional[tuple[int, int]] = None) -> torch.Tensor:
    """[1 + H*W, C] -> [1 + h*w, C]: the CLS row kept, the grid rows resized bicubically (antialiased).

    `old_grid` defaults to the square grid the row count implies (14x14 for 197
    rows). The result is float32, whatever the table's dtype.
    """
    cls, grid = table[:1].float(), table[1:].float()
    if old_grid is None:
        side = int(round(grid.shape[0] ** 0.5))
        old_grid = (side, side)
    rows, cols = old_grid
    if rows * cols != grid.shape[0]:
        raise ValueError(f"{grid.shape[0]} position rows do not form a {rows}x{cols} grid")
    image = grid.reshape(1, rows, cols, -1).permute(0, 3, 1, 2)
    image = F.interpolate(image, size=tuple(new_grid), mode="bicubic", antialias=True, align_corners=False)
    return torch.cat([cls, image.permute(0, 2, 3, 1).reshape(-1, grid.shape[1])])


# --------------------------------------------------------------------------- mapping onto a backbone


@dataclass(frozen=True)
class _Target:
    """How one kind of backbone takes pretrained weights."""

    network: str
    prefix: str
    """Where the pretrained network sits in the model's state dict."""
    pos_key: str
    """The position-embedding key under `prefix`."""
    formats: tuple[str, ...]
    """Readers (see `_sniff`) whose files can hold this network."""
    split: Callable[[dict[str, torch.Tensor]], tuple[dict[str, torch.Tensor], dict[str, str]]]
    """File tensors -> (tensors under the network's own names, {ignored file key: reason})."""


def _split_timm_vit(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    kept, ignored = {}, {}
    for key, value in tensors.items():
        if key.startswith(("head.", "pre_logits.")):
            ignored[key] = "ImageNet classifier head"
        else:
            kept[key] = value
    return kept, ignored


_CLIP_METADATA = ("input_resolution", "context_length", "vocab_size")


def _split_clip(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not any(k.startswith("visual.") for k in tensors):
        return dict(tensors), {}  # a visual tower alone, or no CLIP at all: every key must then fit
    kept, ignored = {}, {}
    for key, value in tensors.items():
        if key.startswith("visual."):
            kept[key[len("visual."):]] = value
        elif key in ("logit_scale", "logit_bias"):
            ignored[key] = "contrastive logit scale"
        elif key in _CLIP_METADATA and value.ndim == 0:
            ignored[key] = "archive metadata"
        else:
            ignored[key] = "text tower"
    return kept, ignored


_VIT_TARGET = _Target("timm ViT-B/16", "backbone.vit.", "pos_embed", ("torch", "safetensors", "npz"), _split_timm_vit)
_CLIP_TARGET = _Target(
    "open_clip ViT-B-16 visual tower", "backbone.visual.", "positional_embedding", ("torch", "safetensors", "torchscript"), _split_clip
)


def _target_for(backbone: nn.Module, name: str) -> _Target:
    if isinstance(backbone, TransReIDViT):
        return _VIT_TARGET
    if isinstance(backbone, CLIPReIDViT):
        return _CLIP_TARGET
    raise UsageError(
        f"backbone {name!r} ({type(backbone).__name__}) does not take pretrained weights; weights load into backbones "
        f"built on TransReIDViT (timm ViT-B/16 files) or CLIPReIDViT (CLIP ViT-B/16 files)."
    )


def load_weights(model: nn.Module, backbone_name: str, path: str | os.PathLike) -> WeightsReport:
    """Fill `model.backbone`'s pretrained network from a local file, strictly, and report what was done.

    Nothing is loaded unless every key fits: missing, unexpected and mismatched
    keys raise `WeightsMismatchError` listing all of them.
    """
    file = resolve_weights_path(path, backbone_name)
    target = _target_for(model.backbone, backbone_name)
    checkpoint = read_checkpoint(file)
    if checkpoint.kind not in target.formats:
        meant_for = {"npz": "an ImageNet ViT: load it into vit768", "torchscript": "OpenAI CLIP: load it into clip512 or clip512proj"}
        raise UsageError(
            f"weights file {file} is a {checkpoint.format}, which {backbone_name} does not take; such a file holds "
            f"{meant_for.get(checkpoint.kind, 'another network')}."
        )
    tensors, unknown_file_keys, sources = checkpoint.tensors, [], {}
    if checkpoint.kind == "npz":
        tensors, unknown_file_keys, sources = _jax_vit_to_timm(tensors)
    network, ignored = target.split(tensors)
    ignored = {name: reason for key, reason in ignored.items() for name in sources.get(key, [key])}
    activation, activation_notes = _check_activation(model.backbone, checkpoint, file)
    notes = [*checkpoint.notes, *activation_notes]

    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in network.values()})
    if dtypes != ["float32"]:
        notes.append(f"file tensors are {', '.join(dtypes)}; copied into the model's float32 parameters")
    model_state = model.state_dict()
    wanted = {k[len(target.prefix):]: v for k, v in model_state.items() if k.startswith(target.prefix)}
    network, resized, mismatched = _fit(network, wanted, target, tuple(model.backbone.grid_size))
    missing = [target.prefix + k for k in wanted if k not in network]
    unexpected = unknown_file_keys + [name for k in network if k not in wanted for name in sources.get(k, [k])]
    if missing or unexpected or mismatched:
        raise WeightsMismatchError(
            _mismatch_message(file, checkpoint.format, backbone_name, model, target, missing, unexpected, mismatched, network),
            missing, unexpected, mismatched,
        )

    merged = dict(model_state)
    merged.update({target.prefix + k: v for k, v in network.items()})
    model.load_state_dict(merged, strict=True)
    return WeightsReport(
        backbone=backbone_name,
        path=str(file),
        sha256=file_sha256(file),
        size_bytes=file.stat().st_size,
        format=checkpoint.format,
        loaded=len(network),
        new=tuple(k for k in model_state if not k.startswith(target.prefix)),
        ignored=ignored,
        resized=resized,
        activation=activation,
        notes=tuple(notes),
    )


def _fit(
    network: dict[str, torch.Tensor], wanted: dict[str, torch.Tensor], target: _Target, grid: tuple[int, int]
) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, Any]], dict[str, tuple]]:
    """Shapes checked key by key; the position table resized when it is a square grid of the right width.

    Returns the network with the resized table, what was resized, and the
    mismatched keys (model name -> (file shape, model shape)).
    """
    fitted, resized, mismatched = dict(network), {}, {}
    for key in [k for k in network if k in wanted]:
        value, expected = network[key], tuple(wanted[key].shape)
        if tuple(value.shape) == expected:
            continue
        change = _resize_pos(value, grid, expected) if key == target.pos_key else None
        if change is None:
            mismatched[target.prefix + key] = (tuple(value.shape), expected)
            continue
        fitted[key], old_grid = change
        resized[target.prefix + key] = {
            "from": list(value.shape), "to": list(expected),
            "grid_from": list(old_grid), "grid_to": list(grid), "method": POS_EMBED_RESIZE,
        }
    return fitted, resized, mismatched


def _resize_pos(value: torch.Tensor, grid: tuple[int, int], expected: tuple[int, ...]) -> Optional[tuple[torch.Tensor, tuple[int, int]]]:
    """The checkpoint's square-grid position table resized to the variant's grid (and the old grid), or None."""
    if value.ndim != len(expected) or value.shape[:-2] != expected[:-2] or value.shape[-1] != expected[-1]:
        return None
    table = value.reshape(-1, value.shape[-1])
    side = int(round((table.shape[0] - 1) ** 0.5))
    if side * side != table.shape[0] - 1 or 1 + grid[0] * grid[1] != expected[-2]:
        return None
    return resize_position_embedding(table, grid, (side, side)).reshape(expected), (side, side)


def _check_activation(backbone: nn.Module, checkpoint: Checkpoint, file: Path) -> tuple[Optional[str], list[str]]:
    """CLIP only: the MLP activation the weights will run with, and a note on where it comes from.

    A TorchScript archive names its module classes, so the activation it was
    trained with is known (OpenAI's: QuickGELU) and a variant built with another
    one is refused rather than silently run with the wrong function. open_clip
    files do not record it; the variant's `clip_quick_gelu` setting decides.
    """
    if not isinstance(backbone, CLIPReIDViT):
        return None, []
    from open_clip.transformer import QuickGELU

    built = "QuickGELU" if any(isinstance(m, QuickGELU) for m in backbone.visual.modules()) else "GELU"
    if checkpoint.kind != "torchscript":
        return built, [
            f"activation {built} from the clip_quick_gelu setting: open_clip files do not record theirs "
            f"(OpenAI-derived and *-quickgelu weights need QuickGELU; LAION ViT-B-16 weights need clip_quick_gelu = false)"
        ]
    names = {c.rsplit(".", 1)[-1] for c in checkpoint.script_classes}
    needed = "GELU" if "GELU" in names and "QuickGELU" not in names else "QuickGELU"
    if needed != built:
        raise UsageError(
            f"weights file {file} is a TorchScript CLIP archive whose MLPs use {needed}, but this variant was built "
            f"with {built} (clip_quick_gelu = {str(built == 'QuickGELU').lower()}); the weights would run with the "
            f"wrong activation. Set clip_quick_gelu = {str(needed == 'QuickGELU').lower()} (the default is true) "
            f"and build it again."
        )
    return needed, [f"activation {needed}, as the archive's modules require"]


# --------------------------------------------------------------------------- error text


def _mismatch_message(
    file: Path, fmt: str, backbone_name: str, model: nn.Module, target: _Target,
    missing: list[str], unexpected: list[str], mismatched: dict[str, tuple], network: dict[str, torch.Tensor],
) -> str:
    settings = getattr(model, "settings", None)
    built = (
        f" (depth {settings.depth}, {settings.img_size[0]}x{settings.img_size[1]}, stride {settings.stride})" if settings else ""
    )
    parts = [
        f"weights file {file} ({fmt}) does not fit {backbone_name}'s {target.network}{built}: "
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
    hint = _architecture_hint(target, network, unexpected, settings)
    if hint:
        parts.append(hint)
    return " ".join(parts)


def _architecture_hint(target: _Target, network: dict[str, torch.Tensor], unexpected: list[str], settings: Any) -> str:
    keys = list(network) + unexpected
    if target is _VIT_TARGET and any(k.startswith(("visual.", "conv1.", "transformer.resblocks.")) for k in keys):
        return "The file looks like a CLIP checkpoint: load it into clip512 or clip512proj."
    if target is _CLIP_TARGET and any(k.startswith(("blocks.", "patch_embed.")) for k in keys):
        return "The file looks like a timm ViT checkpoint: load it into vit768."
    block_key = r"^(?:blocks|transformer\.resblocks)\.(\d+)\."
    blocks = {int(m.group(1)) for k in network if (m := re.match(block_key, k))}
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
