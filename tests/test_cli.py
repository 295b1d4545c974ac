"""The command line, through typer's CliRunner: exit codes, messages, JSON."""
from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from reidbench.cli import app

runner = CliRunner()
FAST = ["--device", "cpu", "--set", "depth=1", "--batch-sizes", "1", "--repeats", "2", "--warmup", "0", "--train-batch-size", "2"]


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_list_shows_grids_backbones_necks_and_settings() -> None:
    result = invoke("list")
    assert result.exit_code == 0
    for word in ("grid default", "clip512-ms", "expected xfail", "vit768", "clip512proj", "ms ", "stride=16", "img_size=[256, 128]"):
        assert word in result.output


DOCS = Path(__file__).parents[1] / "docs"


def test_the_cli_page_shows_what_list_prints_and_names_every_command() -> None:
    """docs/cli.md's `reidbench list --grid default` block is that command's output, line for line; its command list
    and its exit-code table name every command, export included."""
    page = (DOCS / "cli.md").read_text()
    shown = page.split("$ reidbench list --grid default\n", 1)[1].split("\n```", 1)[0]
    assert shown == invoke("list", "--grid", "default").output.rstrip("\n")
    commands = page.split("## Exit codes", 1)[0]
    for command in ("run", "bench", "report", "export", "status", "list", "weights", "data"):
        assert f"[`{command}`](#reidbench-{command})" in commands, command
    exit_codes = page.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    assert "| code | `run` and `bench` | `report` | `export` |" in exit_codes


def test_bench_json_has_the_promised_fields(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = invoke("bench", "--only", "vit768-none", "--only", "clip512-ms", *FAST, "--json", str(out))
    assert result.exit_code == 0, result.output
    records = json.loads(out.read_text())
    assert [r["cell"] for r in records] == ["vit768-none", "clip512-ms"]
    for key in ("cell", "backbone", "neck", "status", "error", "params", "gmacs", "gflops", "latency", "memory", "environment"):
        assert key in records[0]
    assert records[0]["environment"]["packages"]["torch"] == metadata.version("torch")
    assert records[0]["environment"]["dtype"] == "fp32" and records[0]["environment"]["device"] == "cpu"
    assert records[1]["status"] == "xfail"
    assert "clip512-ms [xfail]: Given groups=1" in result.stdout
    assert "vit768-none" in result.stdout


def test_list_profile_shows_every_resolved_value_and_its_origin() -> None:
    result = invoke("list", "--profile", "quick", "--recipe", "clipreid")
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split()[1:] for line in result.output.splitlines()[2:]}
    assert rows["train.lr"] == ["5e-06", "builtin-recipe:clipreid"] and rows["train.erase_p"] == ["0.0", "builtin:quick"]
    assert rows["train.momentum"] == ["0.9", "base"] and rows["model.depth"] == ["1", "builtin:quick"]
    assert "quick        CPU-sized" in invoke("list").output


def test_bench_help_states_the_measurement_defaults_of_the_options_module() -> None:
    import typer.main

    from reidbench.bench.options import CUDA_TRAIN_BATCH_SIZES, BenchOptions
    from reidbench.profiles import MeasureConfig

    helps = {param.name: param.help for param in typer.main.get_command(app).commands["bench"].params}
    cpu = MeasureConfig.for_device(torch.device("cpu"))
    assert helps["batch_sizes"].endswith(f"(default: {','.join(map(str, MeasureConfig().batch_sizes))} on CUDA, "
                                         f"{','.join(map(str, cpu.batch_sizes))} on CPU).")
    assert helps["train_batch_sizes"].endswith(f"(default: {','.join(map(str, CUDA_TRAIN_BATCH_SIZES))} on CUDA, none on CPU).")
    assert helps["repeats"].endswith(f"(default: {MeasureConfig().repeats}).")
    assert helps["train_steps"].endswith(f"(default: {BenchOptions.train_steps}).") and helps["reference"].endswith("(default: off).")


@pytest.mark.parametrize(
    "args, message",
    [
        (["bench", "--grid", "nosuch"], "unknown grid 'nosuch'; built-in grids are: default"),
        (["bench", "--only", "vit768-gem"], "has no cell 'vit768-gem'"),
        (["bench", "--set", "stride=20"], "stride 20 is impossible"),
        (["bench", "--set", "depth"], "must look like key=value"),
        (["bench", "--batch-sizes", "0"], "comma-separated list of positive integers"),
        (["bench", "--device", "tpu"], "unknown device 'tpu'"),
        (["bench", "--dtype", "fp8"], "unknown dtype 'fp8'"),
        (["bench", "--train-batch-size", "1"], "at least 2"),
        (["list", "--grid", "nosuch"], "unknown grid"),
        (["list", "--profile", "nosuch"], "unknown profile 'nosuch'"),
        (["list", "--recipe", "clipreid"], "add --profile"),
        (["bench", "--train-steps", "0"], "--train-steps 0 must be at least 1"),
        (["bench", "--runtime", "tensorrt"], "--runtime 'tensorrt' is unknown"),
        (["bench", "--train-batch-sizes", "6"], "multiple of 4"),
    ],
)
def test_usage_errors_exit_2_with_one_paragraph_and_no_traceback(args: list[str], message: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_a_gpu_is_a_usage_error() -> None:
    result = invoke("bench", "--device", "cuda")
    assert result.exit_code == 2 and "sees no CUDA device" in result.output


def test_malformed_grid_file_exits_2_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("backbones = [")
    result = invoke("bench", "--grid", str(path))
    assert result.exit_code == 2 and str(path) in result.output and "not valid TOML" in result.output


def test_an_unexpected_pass_exits_non_zero(tmp_path: Path) -> None:
    path = tmp_path / "xpass.toml"
    path.write_text('backbones = ["vit768"]\nnecks = ["none"]\n[expect.vit768-none]\nstatus = "xfail"\nmatch = "x"\n')
    result = invoke("bench", "--grid", str(path), *FAST)
    assert result.exit_code == 1
    assert "xpass" in result.output and "not as expected: vit768-none (xpass)" in result.output


def test_python_dash_m_reidbench_works() -> None:
    result = subprocess.run([sys.executable, "-m", "reidbench", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "bench" in result.stdout


def test_data_synth_writes_a_market_layout_set_and_info_reads_it(tmp_path: Path) -> None:
    out = tmp_path / "synthetic"
    result = invoke("data", "synth", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert (out / "bounding_box_train").is_dir() and (out / "query").is_dir() and (out / "bounding_box_test").is_dir()
    info = invoke("data", "info", f"synthetic:{out}", "--json")
    assert info.exit_code == 0, info.output
    counts = json.loads(info.stdout)["counts"]
    assert counts["train"]["ids"] == 100 and counts["query"]["cameras"] == 6
    again = invoke("data", "synth", "--out", str(out))
    assert again.exit_code == 2 and "already holds a synthetic dataset" in again.output


def test_data_info_on_a_missing_dataset_names_the_folder(tmp_path: Path) -> None:
    result = invoke("data", "info", f"market1501:{tmp_path / 'nope'}")
    assert result.exit_code == 2 and str(tmp_path / "nope") in result.output and "Traceback" not in result.output


def _timm_checkpoint(path: Path, depth: int = 1) -> Path:
    import timm

    torch.save(timm.create_model("vit_base_patch16_224", pretrained=False, depth=depth).state_dict(), path)
    return path


def test_bench_records_the_weights_file_and_its_sha256(tmp_path: Path) -> None:
    import hashlib

    ckpt = _timm_checkpoint(tmp_path / "jx_vit.pth")
    out = tmp_path / "bench.json"
    result = invoke("bench", "--only", "vit768-none", *FAST, "--weights", f"vit768={ckpt}", "--json", str(out))
    assert result.exit_code == 0, result.output
    weights = json.loads(out.read_text())[0]["weights"]
    assert weights["path"] == str(ckpt) and weights["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()


def test_weights_of_the_wrong_network_or_a_corrupt_file_exit_2(tmp_path: Path) -> None:
    clip_as_vit = tmp_path / "clip_visual.pth"
    from open_clip.transformer import VisionTransformer

    torch.save(VisionTransformer(224, 16, 768, 1, 12, 4.0, output_dim=512).state_dict(), clip_as_vit)
    wrong = invoke("bench", "--only", "vit768-none", *FAST, "--weights", f"vit768={clip_as_vit}")
    assert wrong.exit_code == 2, wrong.output
    assert str(clip_as_vit) in wrong.output and "Traceback" not in wrong.output

    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x80\x02not really a checkpoint" * 10)
    broken = invoke("bench", "--only", "vit768-none", *FAST, "--weights", f"vit768={corrupt}")
    assert broken.exit_code == 2 and str(corrupt) in broken.output and "Traceback" not in broken.output

    hub = invoke("bench", "--only", "clip512-none", *FAST, "--weights", "clip512=openai")  # offline, not cached
    assert hub.exit_code == 2 and "reidbench weights pull" in hub.output and "local path" in hub.output


def _commands(group, prefix=()):
    """Every command path of the typer app: ('run',), ('weights', 'pull'), ..."""
    import typer.main

    click_group = typer.main.get_command(group) if not hasattr(group, "commands") else group
    for name, command in click_group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))
        else:
            yield (*prefix, name)


@pytest.mark.parametrize("path", sorted(_commands(app)), ids=" ".join)
def test_every_commands_help_renders(path: tuple[str, ...]) -> None:
    """Help text is rich markup: a literal [x] in it must be escaped, or --help itself fails."""
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
