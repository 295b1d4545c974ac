"""Google's JAX ViT .npz (vit_jax or big_vision naming) under timm's VisionTransformer names.

Layouts: Flax dense kernels are (in, out) and are transposed; attention q/k/v
kernels are (width, heads, head_dim) and are fused into timm's qkv; the output
kernel is (heads, head_dim, width); the patch kernel is HWIO and becomes OIHW.
big_vision numbers the sub-layers of a block differently (attention _0, MLP _0,
second LayerNorm _1 instead of _1, _3, _2), keeps the position embedding at the
top level and may stack all blocks along a leading axis (`encoderblock/...`,
"scanned").
"""
from __future__ import annotations

import re
from typing import Any, Callable, NamedTuple, Optional

import torch

_PREFIXES = ("", "opt/target/", "params/", "params/img/")
"""Where the parameters sit: vit_jax's release, a Flax optimizer's target, big_vision's params (of a ViT, or
of a two-tower model's image tower)."""

BlockReader = Callable[[str], Optional[torch.Tensor]]
"""A block's array by its name inside the block; None when the file lacks it."""


class _SubLayers(NamedTuple):
    """The numbers of a block's sub-layers in a naming."""

    attention: int
    mlp: int
    norm2: int


_VIT_JAX = _SubLayers(attention=1, mlp=3, norm2=2)
_BIG_VISION = _SubLayers(attention=0, mlp=0, norm2=1)


def _dense(kernel: torch.Tensor) -> torch.Tensor:
    """A Flax (in, out) kernel as a torch (out, in) weight."""
    return kernel.T


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

    def block(self, prefix: str, layer: Optional[int] = None) -> BlockReader:
        """Reads one block's arrays: `prefix + name`, at index `layer` of blocks stacked along a leading axis."""
        return lambda name: self.get(prefix + name, layer)

    def put(self, timm_key: str, value: Any, convert: Callable[[Any], torch.Tensor] = lambda t: t) -> None:
        """Store `convert(value)` under `timm_key`, unless a source array was missing (value None)."""
        if value is not None and not (isinstance(value, list) and None in value):
            self.out[timm_key] = convert(value)
            self.sources[timm_key] = list(self._read)
        self._read.clear()

    def unused(self) -> list[str]:
        used = {name for names in self.sources.values() for name in names}
        return [name for name in self.arrays if name not in used]


def jax_vit_to_timm(arrays: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str], dict[str, list[str]]]:
    """Map a Google ViT .npz onto timm's VisionTransformer names.

    Returns the timm-named tensors, the .npz names that map to nothing, and for
    each timm name the .npz names it was made from (for messages). Every block in
    the file is converted, whatever the variant's depth, so that a depth mismatch
    shows up as unexpected keys.
    """
    p = next((p for p in _PREFIXES if f"{p}embedding/kernel" in arrays), "")
    big_vision = p.startswith("params/") or f"{p}pos_embedding" in arrays
    npz = _JaxArrays(arrays)
    _put_outside_blocks(npz, p, big_vision)
    for i, get in _blocks(npz, p):
        _put_block(npz, f"blocks.{i}.", get, _BIG_VISION if big_vision else _VIT_JAX)
    return npz.out, npz.unused(), npz.sources


def _put_outside_blocks(npz: _JaxArrays, p: str, big_vision: bool) -> None:
    """Patch embedding, CLS token, position embedding, final norm and the ImageNet head."""
    npz.put("patch_embed.proj.weight", npz.get(f"{p}embedding/kernel"), lambda t: t.permute(3, 2, 0, 1))
    npz.put("patch_embed.proj.bias", npz.get(f"{p}embedding/bias"))
    npz.put("cls_token", npz.get(f"{p}cls"))
    npz.put("pos_embed", npz.get(f"{p}pos_embedding" if big_vision else f"{p}Transformer/posembed_input/pos_embedding"))
    npz.put("norm.weight", npz.get(f"{p}Transformer/encoder_norm/scale"))
    npz.put("norm.bias", npz.get(f"{p}Transformer/encoder_norm/bias"))
    npz.put("head.weight", npz.get(f"{p}head/kernel"), _dense)
    npz.put("head.bias", npz.get(f"{p}head/bias"))
    npz.put("pre_logits.fc.weight", npz.get(f"{p}pre_logits/kernel"), _dense)
    npz.put("pre_logits.fc.bias", npz.get(f"{p}pre_logits/bias"))


def _blocks(npz: _JaxArrays, p: str) -> list[tuple[int, BlockReader]]:
    """Each block's number and reader, whether the blocks are stacked ("scanned") or stored one by one."""
    scanned = f"{p}Transformer/encoderblock/"
    if f"{scanned}LayerNorm_0/scale" in npz.arrays:
        depth = npz.arrays[f"{scanned}LayerNorm_0/scale"].shape[0]
        return [(i, npz.block(scanned, layer=i)) for i in range(depth)]
    numbered = re.escape(p) + r"Transformer/encoderblock_(\d+)/"
    numbers = sorted({int(m.group(1)) for k in npz.arrays if (m := re.match(numbered, k))})
    return [(i, npz.block(f"{p}Transformer/encoderblock_{i}/")) for i in numbers]


def _put_block(npz: _JaxArrays, b: str, get: BlockReader, layers: _SubLayers) -> None:
    attn = f"MultiHeadDotProductAttention_{layers.attention}/"
    npz.put(b + "norm1.weight", get("LayerNorm_0/scale"))
    npz.put(b + "norm1.bias", get("LayerNorm_0/bias"))
    npz.put(b + "attn.qkv.weight", [get(f"{attn}{n}/kernel") for n in ("query", "key", "value")],
            lambda ws: torch.cat([w.flatten(1).T for w in ws]))
    npz.put(b + "attn.qkv.bias", [get(f"{attn}{n}/bias") for n in ("query", "key", "value")],
            lambda bs: torch.cat([v.reshape(-1) for v in bs]))
    npz.put(b + "attn.proj.weight", get(f"{attn}out/kernel"), lambda t: t.flatten(0, 1).T)
    npz.put(b + "attn.proj.bias", get(f"{attn}out/bias"))
    npz.put(b + "norm2.weight", get(f"LayerNorm_{layers.norm2}/scale"))
    npz.put(b + "norm2.bias", get(f"LayerNorm_{layers.norm2}/bias"))
    for r in (0, 1):
        npz.put(f"{b}mlp.fc{r + 1}.weight", get(f"MlpBlock_{layers.mlp}/Dense_{r}/kernel"), _dense)
        npz.put(f"{b}mlp.fc{r + 1}.bias", get(f"MlpBlock_{layers.mlp}/Dense_{r}/bias"))
