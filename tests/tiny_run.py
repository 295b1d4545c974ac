"""The test-sized grid and profiles shared by the end-to-end tests (run, launch, status, distributed)."""
from __future__ import annotations

import signal
import subprocess
import time
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


LONG_EPOCHS = 100_000
"""Epochs of the `long` profile: more than any machine trains while a test looks at, interrupts or kills the run,
so that no test depends on how fast the machine is."""


def write_inputs(
    folder: Path, data: Path, *, epochs: int = 3, grid: str = GRID, img_size: tuple[int, int] = (32, 16), eval_batch: int = 64,
) -> dict[str, Path]:
    """grid.toml, an `epochs` profile and a `LONG_EPOCHS` one (for a cell still running when looked at)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "grid.toml").write_text(grid)
    (folder / "profile.toml").write_text(profile_toml(epochs, img_size, eval_batch))
    (folder / "long.toml").write_text(profile_toml(LONG_EPOCHS, img_size, eval_batch))
    return {"data": data, "grid": folder / "grid.toml", "profile": folder / "profile.toml", "long": folder / "long.toml"}


def run_args(inputs: dict[str, Path], out: Path, *extra: str, profile: str = "profile") -> list[str]:
    """`reidbench run` on the inputs of `write_inputs`, into `out`, without progress bars."""
    return ["run", "--grid", str(inputs["grid"]), "--profile", str(inputs[profile]), "--data", f"synthetic:{inputs['data']}",
            "--out", str(out), "--no-progress", *extra]


def shorten_long_profile(run_root: Path, epochs: int) -> None:
    """Make a run of the `long` profile end after `epochs`: --resume reads the profile stored in the run directory."""
    stored = run_root / "profile.toml"
    stored.write_text(stored.read_text().replace(f"epochs = {LONG_EPOCHS}", f"epochs = {epochs}"))


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_interruptible(args: list[str], **kwargs) -> subprocess.Popen:
    """A child process that Ctrl-C (SIGINT) interrupts, however the test itself was started.

    A shell starts background jobs with SIGINT ignored, and a child inherits that:
    Python then installs no KeyboardInterrupt handler, and the signal a test sends
    does nothing (seen: `bash .ci/run &` -- the child trained to the end and exited 0).
    """
    return subprocess.Popen(args, preexec_fn=_default_sigint, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def wait_for(path: Path, process: subprocess.Popen, timeout_s: float = 600) -> None:
    """Block until `path` exists; fail (with the process's output) if the process ends or `timeout_s` passes first."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                process.kill()
            output, _ = process.communicate(timeout=60)
            raise AssertionError(f"{path} did not appear (exit code {process.returncode}):\n{output}")
        time.sleep(0.1)
