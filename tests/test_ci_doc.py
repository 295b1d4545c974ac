"""The GitHub Actions workflow in docs/ci.md: valid YAML, and every reidbench command it runs exists with the
options it passes (a renamed option would break every team that copied the file)."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml
from typer.testing import CliRunner

from reidbench.cli import app
from reidbench.reports.compare import parse_fail_on

DOC = Path(__file__).resolve().parents[1] / "docs" / "ci.md"
cli = CliRunner()


def workflow() -> dict:
    block = re.search(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S)
    assert block, "docs/ci.md holds no yaml block"
    return yaml.safe_load(block.group(1))


def reidbench_commands(flow: dict) -> list[list[str]]:
    """Every `reidbench ...` invocation in the workflow's run steps, as argument lists."""
    commands = []
    for job in flow["jobs"].values():
        for step in job["steps"]:
            for part in re.split(r"&&|\n", step.get("run", "")):
                words = shlex.split(part)
                if words and words[0] == "reidbench":
                    commands.append(words[1:])
    return commands


def test_the_workflow_runs_the_grid_on_both_branches_and_gates() -> None:
    flow = workflow()
    assert "pull_request" in flow.get("on", flow.get(True))  # YAML 1.1 reads the key `on` as true
    commands = reidbench_commands(flow)
    runs = [c for c in commands if c[0] == "run"]
    outs = sorted(c[c.index("--out") + 1] for c in runs)
    assert outs == ["../runs/base", "../runs/pr"]
    assert len({tuple(w for w in c if w not in outs) for c in runs}) == 1  # the same run on both branches
    gate = next(c for c in commands if c[0] == "report")
    assert gate[1] == "runs/pr" and gate[gate.index("--baseline") + 1] == "runs/base" and "--fail-on" in gate
    assert parse_fail_on(flow["env"]["FAIL_ON"])


def test_every_command_and_option_in_the_workflow_exists() -> None:
    commands = reidbench_commands(workflow())
    assert {c[0] for c in commands} == {"run", "report"}
    for command in commands:
        result = cli.invoke(app, [command[0], "--help"], env={"COLUMNS": "400", "TERM": "dumb"})
        assert result.exit_code == 0, result.output
        for option in (word for word in command if word.startswith("--")):
            assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", result.output), f"reidbench {command[0]} has no {option}"
