"""Shared fixtures. Unit tests use shallow models (depth 1-2, full width) to stay fast on 2 cores."""
from __future__ import annotations

import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long-running (large data or full-size models); deselect with -m 'not slow'")


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)
