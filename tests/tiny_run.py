"""The test-sized grid and profiles shared by the end-to-end tests (run, launch, status, distributed)."""
from __future__ import annotations

from pathlib import Path

GRID = """
backbones = ["vit768", "clip512"]
necks = ["none", "ms"]
[expect.clip512-ms]
status = "xfail"
match = "to have 768 channels, but got 512 channels instead"
"""

ONE_CELL_GRID = """
backbones = ["vit768"]
necks = ["none"]
"""

_PROFILE = """
description = "test-sized"
[model]
depth = 1
img_size = [{height}, {width}]
[train]
epochs = {epochs}
p = 4
k = 2
optimizer = "adamw"
lr = 0.001
warmup_epochs = 1
checkpoint_minutes = 0  # a checkpoint after every epoch: the tests interrupt runs after the first
[eval]
batch_size = {eval_batch}
[measure]
batch_sizes = [2]
train_batch_size = 2
repeats = 1
warmup = 0
max_seconds = 0.5
"""


def profile_toml(epochs: int, img_size: tuple[int, int] = (32, 16), eval_batch: int = 64) -> str:
    """Depth 1, tiny images, P x K = 4 x 2, AdamW: seconds per cell on 2 cores."""
    return _PROFILE.format(epochs=epochs, height=img_size[0], width=img_size[1], eval_batch=eval_batch)


def write_inputs(
    folder: Path, data: Path, *, epochs: int = 3, grid: str = GRID, img_size: tuple[int, int] = (32, 16), eval_batch: int = 64,
) -> dict[str, Path]:
    """grid.toml, an `epochs` profile and a 200-epoch one (for a cell still running when looked at)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "grid.toml").write_text(grid)
    (folder / "profile.toml").write_text(profile_toml(epochs, img_size, eval_batch))
    (folder / "long.toml").write_text(profile_toml(200, img_size, eval_batch))
    return {"data": data, "grid": folder / "grid.toml", "profile": folder / "profile.toml", "long": folder / "long.toml"}


def run_args(inputs: dict[str, Path], out: Path, *extra: str, profile: str = "profile") -> list[str]:
    """`reidbench run` on the inputs of `write_inputs`, into `out`, without progress bars."""
    return ["run", "--grid", str(inputs["grid"]), "--profile", str(inputs[profile]), "--data", f"synthetic:{inputs['data']}",
            "--out", str(out), "--no-progress", *extra]
