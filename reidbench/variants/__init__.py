"""What is compared: backbones, necks, the head, the model joining them, and grids of them."""
from reidbench.variants.backbones import BACKBONES, Backbone
from reidbench.variants.factory import create_variant, split_cell_id
from reidbench.variants.grid import Cell, Expectation, Grid, builtin_grids, load_grid
from reidbench.variants.model import PARTS, ReidModel, TrainOutput
from reidbench.variants.necks import NECKS
from reidbench.variants.settings import VariantSettings

__all__ = [
    "BACKBONES",
    "NECKS",
    "PARTS",
    "Backbone",
    "Cell",
    "Expectation",
    "Grid",
    "ReidModel",
    "TrainOutput",
    "VariantSettings",
    "builtin_grids",
    "create_variant",
    "load_grid",
    "split_cell_id",
]
