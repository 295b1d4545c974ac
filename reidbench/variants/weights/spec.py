"""How a backbone declares the pretrained network it wraps, so that the loader needs to know no backbone.

A backbone class sets `pretrained_spec` to a `PretrainedSpec`, much as a timm
model carries a `pretrained_cfg` and a checkpoint filter function: the loader
(`reidbench.variants.weights.load_weights`) reads that declaration and nothing
else. This module imports no backbone and no loader, so backbones can import it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import torch
from torch import nn

if TYPE_CHECKING:
    from reidbench.variants.weights.checkpoint import Checkpoint

FORMATS = ("torch", "safetensors", "npz", "torchscript")
"""The readers a file can come from: PyTorch state dicts, safetensors, JAX ViT .npz, TorchScript CLIP archives."""

Split = Callable[[dict[str, torch.Tensor]], tuple[dict[str, torch.Tensor], dict[str, str]]]
"""File tensors -> (the pretrained network's tensors under its own names, {ignored file key: reason})."""

ActivationCheck = Callable[[nn.Module, "Checkpoint", Path], tuple[Optional[str], list[str]]]
"""(pretrained network, checkpoint, file) -> (the activation the weights run with, notes); raises when they differ."""


@dataclass(frozen=True)
class PositionTable:
    """Where the learned position embedding sits and how its rows are laid out.

    Rows are the CLS position first, then the patch grid row by row. timm keeps a
    leading batch axis ([1, 1 + H*W, C]), open_clip does not ([1 + H*W, C]). It is
    the one tensor whose shape may differ between file and model: a file's square
    grid is resized to the backbone's grid, which depends on image size and stride.
    """

    key: str
    """Its name inside the pretrained network."""
    batch_axis: bool


@dataclass(frozen=True)
class Misfit:
    """File keys that give away a checkpoint of another network, and the sentence saying where it belongs."""

    key_prefixes: tuple[str, ...]
    hint: str


@dataclass(frozen=True)
class Upstream:
    """Where a backbone's pretrained network comes from, in the names its library and the model hub use.

    Declared on the backbone registry: `--pretrained` gives every backbone its
    `default` weights, and `library` says which names it takes (timm tags for a
    timm network, open_clip pretrained tags of `architecture` for an open_clip one).
    """

    library: str
    """"timm" or "open_clip"."""
    architecture: str
    """The library's model name: timm's "vit_base_patch16_224", open_clip's "ViT-B-16"."""
    default: str
    """The weights name --pretrained loads (a timm tag, an open_clip tag)."""
    about: str
    """What those weights are, in words, for `reidbench list` and the docs."""

    def __post_init__(self) -> None:
        if self.library not in LIBRARIES:
            raise ValueError(f"{self.architecture}: unknown library {self.library!r}; known: {', '.join(LIBRARIES)}")


LIBRARIES = ("timm", "open_clip")
"""The libraries whose pretrained names reidbench resolves."""


@dataclass(frozen=True)
class PretrainedSpec:
    """How a backbone takes pretrained weights: which submodule they fill and which file keys belong to it."""

    network: str
    """What the file must hold, as error messages name it ("timm ViT-B/16")."""
    attribute: str
    """Dotted path of the pretrained network inside the backbone ("vit"); file keys are matched to its names."""
    formats: tuple[str, ...]
    """Readers (see FORMATS) whose files can hold this network; other files are refused before keys are compared."""
    split: Split
    """Separates the network's keys from parts of the file a ReID backbone has no use for (classifier, text
    tower), stripping the prefix the network's keys carry in a whole-model file."""
    position: Optional[PositionTable] = None
    """None: every tensor must match in shape."""
    activation: Optional[ActivationCheck] = None
    """Asks the file which activation its weights were trained with; None: the file is not asked."""
    misfits: tuple[Misfit, ...] = ()
    """Read only when a file does not fit, to tell the user which backbone the file is for."""

    def __post_init__(self) -> None:
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown:
            raise ValueError(f"{self.network}: unknown weights formats {unknown}; known: {', '.join(FORMATS)}")

    def network_of(self, backbone: nn.Module) -> nn.Module:
        """The pretrained network inside `backbone`."""
        return backbone.get_submodule(self.attribute)
