"""Which recipe a cell trains with, and why: a recipe belongs to the initialisation it was written for.

A grid gives a backbone a recipe per profile (`recipe = { full = "clipreid" }`),
and every recipe and profile declares the initialisation it was written for
(`Init`). A fine-tuning recipe run from random initialisation measures the
recipe, not the architecture: CLIP-ReID's 60 epochs of Adam at 5e-6 barely move
random weights while TransReID's SGD at 0.008 trains them. So a cell whose
initialisation differs from its recipe's trains with its profile's own recipe
instead -- the same for every backbone of the grid -- and its record, the run
header and the report say which recipe it trained with and why.

A cell starts from pretrained weights when the run gives its backbone any
(--weights, --pretrained, the grid's [weights]); they are the recipe's own when
their name, or the file's name, is the one the recipe declares.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from reidbench.profiles import Init, Profile, load_recipe, with_recipe


@dataclass(frozen=True)
class RecipeChoice:
    """What a cell trains with: the resolved profile, the recipe laid over it (if any) and the reason."""

    profile: Profile
    asked: Optional[str]
    """The recipe the grid gives the cell's backbone under this profile (None: none)."""
    used: Optional[str]
    """The recipe laid over the profile (None: the profile's own recipe)."""
    init: str
    """The cell's initialisation: 'scratch' or 'pretrained'."""
    weights: str
    """The cell's weights value ('' for random initialisation)."""
    why: str
    """One sentence: which recipe, for what initialisation, and why this one."""

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.used or f"{self.profile.name} (the profile's own)", "asked": self.asked, "init": self.init,
                "weights": self.weights or None, "written_for": self.profile.init.describe(), "why": self.why}


def choose_recipe(profile: Profile, asked: Optional[str], weights: Optional[str], dataset_kind: str) -> RecipeChoice:
    """The recipe a cell trains with: `asked` (laid over `profile`, as its upstream runs on `dataset_kind`) when it
    was written for the cell's initialisation, else the profile's own."""
    init = "pretrained" if weights else "scratch"
    start = _start(weights)
    if asked is not None:
        recipe = load_recipe(asked).for_dataset(dataset_kind)
        if recipe.init.kind == init:
            return RecipeChoice(with_recipe(profile, recipe), asked, recipe.name, init, weights or "",
                                f"the {recipe.name} recipe, written for {recipe.init.describe()}: this cell starts from "
                                + _own_or_other(recipe.init, weights))
        why = (f"{recipe.name} recipe not used: it {_purpose(recipe.init)} and this cell starts from {start}; it trains with "
               f"profile {profile.name}'s own recipe, {_profile_fit(profile, init, weights)}")
        return RecipeChoice(profile, asked, None, init, weights or "", why)
    return RecipeChoice(profile, None, None, init, weights or "",
                        f"profile {profile.name}'s own recipe, {_profile_fit(profile, init, weights)}")


def _start(weights: Optional[str]) -> str:
    return f"pretrained weights ({weights})" if weights else "random initialisation"


def _purpose(init: Init) -> str:
    return f"fine-tunes {init.describe()}" if init.pretrained else "is written for random initialisation"


def _own_or_other(init: Init, weights: Optional[str]) -> str:
    if not init.pretrained:
        return "random initialisation"
    return "them" if init.owns(weights or "") else f"other pretrained weights ({weights}), not the recipe's own"


def _profile_fit(profile: Profile, init: str, weights: Optional[str]) -> str:
    """How the profile's own recipe fits a cell: as written, run from scratch, or run on other weights."""
    written = profile.init
    if written.kind != init:
        return (f"written for {written.describe()} and run here from random initialisation (the profile's from-scratch "
                "recipe: the same for every backbone)" if init == "scratch"
                else f"written for random initialisation and run here on {_start(weights)}")
    return f"written for {written.describe()}: this cell starts from " + _own_or_other(written, weights)
