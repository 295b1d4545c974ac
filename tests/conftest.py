"""Shared fixtures. Unit tests use shallow models (depth 1-2, full width) to stay fast on 2 cores."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from reidbench.data import generate_synthetic


RUN_SLOW_ENV = "REIDBENCH_RUN_SLOW_BENCHMARKS"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help=f"also run tests marked slow (or set {RUN_SLOW_ENV}=1)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: many minutes on 2 cores (MSMT17-sized data); opt in with --run-slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow tests are opt-in, so a plain `pytest` (CI's command) stays within its time on 2 cores."""
    if config.getoption("--run-slow") or os.environ.get(RUN_SLOW_ENV) == "1":
        return
    skip = pytest.mark.skip(reason=f"slow: opt in with --run-slow or {RUN_SLOW_ENV}=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _no_model_hub(tmp_path_factory: pytest.TempPathFactory):
    """No test reaches a model hub or the user's Hugging Face cache: offline, with an empty cache of its own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf-home")))
        patch.delenv("HF_HUB_CACHE", raising=False)
        patch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
        yield


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic set small enough for end-to-end runs: 8 train ids, 6 test ids, 3 cameras, 64x32 JPEGs."""
    return generate_synthetic(
        tmp_path_factory.mktemp("tiny") / "synthetic", num_ids_train=8, num_ids_test=6, num_cameras=3,
        images_per_id_per_camera=2, num_distractors=4, num_junk=2, size=(64, 32),
    )
