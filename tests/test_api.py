"""The Python API: the notebook example in docs/extending.md runs as written, and its objects are what it says."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import reidbench
from reidbench.errors import UsageError
from tiny_run import ONE_CELL_GRID, profile_toml

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def api_example() -> str:
    """The fenced python block of the Python API section that runs a grid."""
    section = DOC.read_text().split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return next(block for block in blocks if "run_grid(" in block)


def test_the_documented_example_runs_and_loads_a_trained_cell(tiny_synthetic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("my_grid.toml").write_text(ONE_CELL_GRID)
    Path("my_profile.toml").write_text(profile_toml(epochs=3))
    Path("data").mkdir()
    Path("data/synthetic").symlink_to(tiny_synthetic)
    namespace: dict = {}
    exec(compile(api_example(), str(DOC), "exec"), namespace)  # noqa: S102 - the documented code, as a reader runs it
    run_dir, run, model, features = (namespace[k] for k in ("run_dir", "run", "model", "features"))
    assert Path(run_dir) == Path("runs/notebook") and (Path(run_dir) / "run.json").is_file()
    assert list(run.frame["cell"]) == ["vit768-none"] and list(run.frame["status"]) == ["done"]
    assert run.records[0]["recipe"]["train"]["epochs"] == 1
    assert json.loads((Path(run_dir) / "run.json").read_text())["overrides"] == {"train.epochs": 1, "train.warmup_epochs": 0}
    assert not model.training and features.ndim == 2 and features.shape[0] == 2
    saved = torch.load(Path(run_dir) / "cells" / "vit768-none" / "seed0" / "model.pt", weights_only=True)
    assert all(torch.equal(value, saved[key]) for key, value in model.state_dict().items())
    with pytest.raises(UsageError, match="no record of cell 'vit768-ms'"):
        reidbench.load_cell(run_dir, "vit768-ms")


def test_the_api_names_are_lazy_and_public() -> None:
    assert {"run_grid", "load_run", "load_cell"} <= set(reidbench.__all__)
    assert reidbench.load_run is reidbench.api.load_run
    with pytest.raises(AttributeError):
        reidbench.no_such_name  # noqa: B018
