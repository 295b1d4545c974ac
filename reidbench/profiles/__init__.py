"""Profiles: how hard to train, evaluate and measure, declared as TOML files beside this module."""
from reidbench.profiles.profile import (
    OPTIMIZERS, PROFILES_DIR, TRIPLETS, EvalConfig, Init, MeasureConfig, Profile, Recipe, TrainConfig, builtin_profiles,
    builtin_recipes, load_profile, load_recipe, resolve_profile_name, with_recipe,
)

__all__ = [
    "OPTIMIZERS", "PROFILES_DIR", "TRIPLETS", "EvalConfig", "Init", "MeasureConfig", "Profile", "Recipe", "TrainConfig",
    "builtin_profiles", "builtin_recipes", "load_profile", "load_recipe", "resolve_profile_name", "with_recipe",
]
