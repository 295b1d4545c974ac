"""Profiles: how hard to train, evaluate and measure, declared as TOML files beside this module."""
from reidbench.profiles.profile import (
    OPTIMIZERS, PROFILES_DIR, TRIPLETS, EvalConfig, MeasureConfig, Profile, TrainConfig, builtin_profiles,
    load_profile, resolve_profile_name,
)

__all__ = [
    "OPTIMIZERS", "PROFILES_DIR", "TRIPLETS", "EvalConfig", "MeasureConfig", "Profile", "TrainConfig",
    "builtin_profiles", "load_profile", "resolve_profile_name",
]
