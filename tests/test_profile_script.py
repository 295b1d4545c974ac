"""scripts/profile_train_step.py, the tool that profiles the harness / bare-loop gap on a GPU, works before it meets one."""
from __future__ import annotations

from repo_scripts import load_script


def test_the_profile_script_labels_every_phase_of_both_steps(tmp_path, capsys):
    script = load_script("profile_train_step")
    script.main(["--depth", "1", "--img-size", "32", "16", "--batch", "8", "--num-classes", "8", "--steps", "1",
                 "--warmup", "1", "--device", "cpu", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    for name in ("harness", "bare"):
        regions = (tmp_path / f"{name}_regions.txt").read_text()
        phases = script.PHASES if name == "harness" else tuple(p for p in script.PHASES if p != "augment")
        assert all(f"\n{phase} " in regions for phase in phases), regions
        assert "aten::" in (tmp_path / f"{name}_ops.txt").read_text()
        assert (tmp_path / f"{name}_trace.json").stat().st_size > 0
    assert "forward" in printed and "harness" in printed
    step_row = next(line for line in printed.splitlines() if line.startswith(f"{script.STEP} "))
    wall_ms = float(step_row.split()[1].split("/")[0])
    assert wall_ms > 0  # the harness's wall ms per profiled step
    forward_host_ms = float(next(l for l in printed.splitlines() if l.startswith("forward ")).split()[1].split("/")[0])
    assert 0 < forward_host_ms <= wall_ms  # a phase's host time is part of the step's
