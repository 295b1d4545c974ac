"""Profiles: how hard to train, evaluate and measure, declared as TOML files beside this module."""
from reidbench.profiles.profile import (
    OPTIMIZERS, PROFILES_DIR, SET_ORIGIN, TRIPLETS, EvalConfig, MeasureConfig, Profile, Recipe, TrainConfig, builtin_profiles,
    builtin_recipes, load_profile, load_recipe, resolve_profile_name, split_sets, with_recipe, with_sets,
)

__all__ = [
    "OPTIMIZERS", "PROFILES_DIR", "SET_ORIGIN", "TRIPLETS", "EvalConfig", "MeasureConfig", "Profile", "Recipe", "TrainConfig",
    "builtin_profiles", "builtin_recipes", "load_profile", "load_recipe", "resolve_profile_name", "split_sets", "with_recipe",
    "with_sets",
]
