"""scripts/gpu_check.sh runs only on a GPU machine, where time is scarce: a renamed option must fail here, not there."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reidbench.cli import app

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"


def _commands() -> list[list[str]]:
    """Each `python3 -m reidbench ...` / `python3 scripts/....py ...` line of the script, continuation lines joined."""
    text = SCRIPT.read_text().replace("\\\n", " ")
    lines = [line.split(" 2>")[0].split(" >")[0].split(" |")[0] for line in text.splitlines() if not line.lstrip().startswith("#")]
    return [shlex.split(line.strip())[1:] for line in lines if re.match(r"\s*python3 (-m reidbench|scripts/)", line)]


def test_the_script_is_valid_bash_and_runs_every_reidbench_command_it_names() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    commands = [c[2] if c[0] == "-m" else c[0] for c in _commands()]
    assert {"bench", "run", "scripts/profile_train_step.py"} <= set(commands)


@pytest.mark.parametrize("command", _commands(), ids=lambda c: " ".join(c[:3]))
def test_every_option_the_script_passes_exists(command: list[str]) -> None:
    options = [word.split("=")[0] for word in command if word.startswith("--")]
    if command[0] == "-m":
        result = CliRunner().invoke(app, [command[2], "--help"], terminal_width=400)
        assert result.exit_code == 0, result.output
    else:
        result = subprocess.run([sys.executable, str(SCRIPT.parents[1] / command[0]), "--help"], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    known = set(re.findall(r"--[a-z][a-z0-9-]*", result.output if command[0] == "-m" else result.stdout))
    assert set(options) <= known, f"{' '.join(command[:3])}: unknown option(s) {sorted(set(options) - known)}"
