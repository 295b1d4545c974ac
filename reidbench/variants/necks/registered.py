"""The registered necks: a name in a grid file -> a builder taking (token width D, settings).

`ms` is the design under study, kept as it is; the others are the fixes and
controls that say what it costs and buys: `ms-auto` (its windows at the
backbone's width), `ms1d` (the public fork's module), `gap` (no window) and
`ms4` / `ms8` / `ms16` (one of its windows each).
"""
from __future__ import annotations

from typing import Callable

from reidbench.errors import UsageError
from reidbench.variants.necks.base import Neck
from reidbench.variants.necks.flat_windows import FlatMultiScaleNeck
from reidbench.variants.necks.grid_windows import MultiScaleWindowNeck
from reidbench.variants.necks.pooled import ClsNeck, MeanTokenNeck
from reidbench.variants.registry import Registry
from reidbench.variants.settings import VariantSettings

NECKS: Registry = Registry("neck")

NeckBuilder = Callable[[int, VariantSettings], Neck]


@NECKS.register("none", "CLS token -> head")
def none(in_dim: int, settings: VariantSettings) -> Neck:
    return ClsNeck(in_dim)


@NECKS.register("ms", "multi-scale sliding-window Conv2d extractor (768-d input, hard-wired), added to CLS")
def ms(in_dim: int, settings: VariantSettings) -> Neck:
    # in_dim is deliberately ignored: the studied design hard-wires 768 input channels.
    return MultiScaleWindowNeck(settings.neck_scales, settings.grid_size)


@NECKS.register("ms-auto", "ms with its width taken from the input tokens")
def ms_auto(in_dim: int, settings: VariantSettings) -> Neck:
    return MultiScaleWindowNeck(settings.neck_scales, settings.grid_size, width=in_dim, name="ms-auto", follows_input=True)


@NECKS.register("ms1d", "the public fork's module: Conv1d windows over the flattened tokens, MLP fusion, added to CLS")
def ms1d(in_dim: int, settings: VariantSettings) -> Neck:
    return FlatMultiScaleNeck(settings.neck_scales, settings.grid_size, width=in_dim)


@NECKS.register("gap", "mean of the patch tokens added to CLS; no parameters")
def gap(in_dim: int, settings: VariantSettings) -> Neck:
    return MeanTokenNeck(in_dim)


def _one_window(name: str, index: int) -> NeckBuilder:
    """One window of `ms` -- entry `index` of neck_scales -- with its clamping, notes and 768 input width."""

    def build(in_dim: int, settings: VariantSettings) -> Neck:
        scales = settings.neck_scales
        if index >= len(scales):
            raise UsageError(
                f"neck {name} is window {index + 1} of neck_scales, which has {len(scales)}: {list(scales)}; "
                f"give neck_scales at least {index + 1} entries."
            )
        return MultiScaleWindowNeck((scales[index],), settings.grid_size, name=name)

    return build


def _register_single_windows() -> None:
    """The controls that say what each of ms's windows buys on its own."""
    for index, (name, default) in enumerate((("ms4", 4), ("ms8", 8), ("ms16", 16))):
        description = f"one window of ms: entry {index + 1} of neck_scales ({default} by default), 768-d input, added to CLS"
        NECKS.register(name, description)(_one_window(name, index))


_register_single_windows()
