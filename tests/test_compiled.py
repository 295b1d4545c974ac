"""Regional torch.compile and CUDA-graph replay: same numbers as eager, one compile for all blocks, bench records.

Shallow models (1-3 blocks, full width, 64x32 images). Plumbing uses the
aot_eager backend (traces like inductor, runs eager kernels, compiles in ~1 s);
one test runs real inductor on the CPU. CUDA-graph tests need a GPU.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from reidbench.bench.graphs import capture_cuda_graph, cuda_graph_unavailable
from reidbench.runtime.compile import TensorDropPath, compile_counters, compile_model, uncompile_model, unify_drop_paths
from reidbench.bench.options import BenchOptions
from reidbench.bench.suite import bench_cell, measure_model
from reidbench.cli import app
from reidbench.errors import UsageError
from reidbench.schema import CellRecord, MeasureMode
from reidbench.variants import BACKBONES, ReidModel, builtin_grids, create_variant, load_grid

EAGER, COMPILED, GRAPH, COMPILED_GRAPH = (m.value for m in MeasureMode if m != MeasureMode.ONNXRUNTIME)


def entry_mode(entry: dict) -> str:
    return MeasureMode.parse(entry.get("mode")).value


SMALL = {"img_size": (64, 32)}
BACKBONE_NAMES = [entry.name for entry in BACKBONES]
# 128x64 images give the ms neck an 8x4 token grid, on which its 4/8/16 windows are 4x4, 8x4 and 8x4
# (clamped) GEMMs; at 64x32 all three would be one 4x2 window.
def covering_cells() -> list:
    """Runnable cells of the built-in grids until every backbone and every neck has been seen once.

    Compilation covers the backbone's blocks and leaves the neck eager, and a CUDA
    graph records whatever both run: a part proven in one cell is proven for the
    others, and a cell per pair would cost minutes for no new evidence.
    """
    seen: set[str] = set()
    chosen = []
    for grid in builtin_grids():
        for cell in load_grid(grid).cells:
            if cell.expect is None and not {f"b:{cell.backbone}", f"n:{cell.neck}"} <= seen:
                seen |= {f"b:{cell.backbone}", f"n:{cell.neck}"}
                chosen.append(pytest.param(grid, cell.id, id=f"{grid}:{cell.id}"))
    return chosen


RUNNABLE_CELLS = covering_cells()
CELL_IMAGES = {"img_size": (128, 64)}
CUDA = torch.cuda.is_available()


def model(backbone: str, depth: int = 1, **settings) -> ReidModel:
    return create_variant(f"{backbone}-none", depth=depth, **{**SMALL, **settings})


def eager_and_compiled(backbone: str, backend: str = "aot_eager", **settings) -> tuple[ReidModel, ReidModel]:
    eager = model(backbone, **settings)
    compiled = copy.deepcopy(eager)
    compile_model(compiled, backend)
    return eager, compiled


@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_every_backbone_names_its_repeated_blocks(backbone: str) -> None:
    net = model(backbone, depth=2).backbone
    blocks = net.blocks()
    assert len(blocks) == 2 and type(blocks[0]) is type(blocks[1])
    inside = {id(m) for m in net.modules()}
    assert all(id(b) in inside for b in blocks)


@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_compiled_inference_equals_eager_and_keeps_parameter_names(backbone: str) -> None:
    eager, compiled = eager_and_compiled(backbone, depth=2)
    eager.eval(), compiled.eval()
    images = eager.example_input(2)
    with torch.inference_mode():
        torch.testing.assert_close(compiled(images), eager(images), rtol=1e-5, atol=1e-5)
    assert list(compiled.state_dict()) == list(eager.state_dict())
    assert all(b._compiled_call_impl is not None for b in compiled.backbone.blocks())
    assert all(b._compiled_call_impl is None for b in eager.backbone.blocks())


@pytest.mark.parametrize("grid, cell_id", RUNNABLE_CELLS)
def test_every_runnable_grid_cell_compiles_to_eagers_outputs_and_gradients(grid: str, cell_id: str) -> None:
    """The regional compile leaves the neck eager: the ms neck's GEMM windows must still see compiled blocks' tokens."""
    settings = load_grid(grid).settings.with_overrides({"depth": 1, "drop_path_rate": 0.0, **CELL_IMAGES})
    eager = create_variant(load_grid(grid).cell(cell_id), settings=settings)
    compiled = copy.deepcopy(eager)
    assert compile_model(compiled, "aot_eager").regions == 1
    images, cams, labels = eager.example_input(3), torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2])
    features = []
    for net in (eager, compiled):
        net.eval()
        with torch.inference_mode():
            features.append(net(images, cams))
        net.train()
        torch.manual_seed(0)  # the same dropout masks (ms1d fuses its scales through Dropout) in both runs
        out = net(images, cams)
        (torch.nn.functional.cross_entropy(out.logits, labels) + out.features.square().mean()).backward()
    torch.testing.assert_close(features[1], features[0], rtol=1e-5, atol=1e-5)
    grads = {n: p.grad for n, p in compiled.named_parameters()}
    trained = [(n, p) for n, p in eager.named_parameters() if p.requires_grad]  # the BNNeck bias is frozen
    assert len(trained) > 10
    for name, p in trained:
        assert grads[name] is not None, name
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")


def test_one_compiled_graph_serves_every_block_despite_per_block_drop_rates() -> None:
    """timm gives each block its own drop-path float; unified, three blocks are still one graph."""
    import torch._dynamo

    torch._dynamo.reset()  # count this model's compiles, not earlier tests' cache
    net = model("vit768", depth=3, drop_path_rate=0.1)
    info = compile_model(net, "aot_eager")
    assert info.regions == 3 and info.drop_paths_unified == 6 and info.region.endswith("vision_transformer.Block")
    images = net.example_input(2)
    for training in (False, True):
        net.train(training)
        before = compile_counters()["graphs_compiled"]
        with torch.set_grad_enabled(training):
            net(images)
        assert compile_counters()["graphs_compiled"] - before == 1, f"training={training}"


def test_tensor_drop_path_is_timms_stochastic_depth() -> None:
    from timm.layers import DropPath

    x = torch.randn(4000, 3, 8)
    path = TensorDropPath(0.25).train()
    y = path(x)
    kept = y[:, 0, 0] != 0
    assert kept.float().mean().item() == pytest.approx(0.75, abs=0.03)
    torch.testing.assert_close(y[kept], x[kept] / 0.75)
    assert not y[~kept].any()
    assert path.eval()(x) is x and TensorDropPath(0.0).train()(x).equal(x)
    blocks = model("vit768", depth=3, drop_path_rate=0.1).backbone.blocks()
    keys = [list(b.state_dict()) for b in blocks]
    rates = [b.drop_path1.drop_prob if isinstance(b.drop_path1, DropPath) else 0.0 for b in blocks]
    assert unify_drop_paths(blocks) == 6
    assert [1 - b.drop_path1.keep_prob.item() for b in blocks] == pytest.approx(rates)
    assert [list(b.state_dict()) for b in blocks] == keys  # the rate is not a checkpoint entry


def test_inductor_on_cpu_matches_eager() -> None:
    """The real compiler, once: ~12 s with a cold kernel cache on 2 cores, ~2 s warm."""
    eager, compiled = eager_and_compiled("vit768", backend="inductor")
    eager.eval(), compiled.eval()
    images = eager.example_input(2)
    with torch.inference_mode():
        torch.testing.assert_close(compiled(images), eager(images), rtol=1e-4, atol=1e-4)


def test_bad_compile_settings_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="unknown torch.compile backend 'nosuch'"):
        compile_model(model("vit768"), "nosuch")
    with pytest.raises(UsageError, match="one CUDA graph per block"):
        compile_model(model("vit768"), "aot_eager", mode="reduce-overhead")
    result = CliRunner().invoke(app, ["bench", "--device", "cpu", "--compile", "--compile-backend", "nosuch"])
    assert result.exit_code == 2 and "unknown torch.compile backend 'nosuch'" in result.output


def test_cuda_graphs_off_cuda_are_refused_with_the_reason() -> None:
    assert "CUDA device" in cuda_graph_unavailable(torch.device("cpu"))
    net = model("vit768").eval()
    with pytest.raises(UsageError, match="CUDA graphs need a CUDA device"):
        capture_cuda_graph(net, net.example_input(1))


def bench_json(tmp_path: Path, *extra: str) -> tuple[dict, str]:
    out = tmp_path / "bench.json"
    args = ["bench", "--only", "vit768-none", "--device", "cpu", "--set", "depth=1", "--set", "img_size=[64, 32]",
            "--batch-sizes", "1,2", "--repeats", "2", "--warmup", "1", "--train-batch-size", "2", "--json", str(out), *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (record,) = json.loads(out.read_text())
    return record, result.stdout


def test_bench_compile_records_compiled_entries_and_compile_time_and_skips_graphs_on_cpu(tmp_path: Path) -> None:
    record, stdout = bench_json(tmp_path, "--compile", "--compile-backend", "aot_eager", "--cuda-graphs")
    assert record["status"] == "done"
    by_mode = {}
    for entry in record["latency"]:
        by_mode.setdefault(entry_mode(entry), []).append(entry)
    assert set(by_mode) == {EAGER, COMPILED, GRAPH, COMPILED_GRAPH}
    assert [e["batch_size"] for e in by_mode[EAGER]] == [1, 2] and all("median_ms" in e for e in by_mode[EAGER])
    for entry in by_mode[COMPILED]:
        assert entry["median_ms"] > 0 and entry["first_call_s"] > 0 and entry["compile_s"] >= 0
        assert entry["img_per_s"] == pytest.approx(entry["batch_size"] / entry["median_ms"] * 1e3)
    for entry in by_mode[GRAPH] + by_mode[COMPILED_GRAPH]:
        assert "median_ms" not in entry and "CUDA device" in entry["skipped"]
    compiled = record["compile"]
    assert compiled["backend"] == "aot_eager" and compiled["regions"] == 1 and compiled["dynamic"] is False
    assert compiled["seconds"] == pytest.approx(sum(e["compile_s"] for e in by_mode[COMPILED]))
    assert record["options"]["compile"] is True and record["options"]["cuda_graphs"] is True
    assert record["memory"]["inference"]["batch_size"] == 2  # still the eager measurement
    for column in ("bs1 ms compiled", "bs2 img/s compiled", "bs1 ms graph", "compile s"):
        assert column in stdout
    assert "compiled+graph, graph: skipped (CUDA graphs need a CUDA device" in stdout


def test_bench_defaults_on_cpu_measure_eager_only(tmp_path: Path) -> None:
    record, stdout = bench_json(tmp_path)
    assert {entry_mode(e) for e in record["latency"]} == {EAGER} and record["compile"] == {}
    assert record["options"]["compile"] is False and record["options"]["cuda_graphs"] is False
    assert "compiled" not in stdout and "graph" not in stdout


def test_a_model_that_does_not_compile_keeps_its_eager_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    from reidbench.bench import modes

    def refuse(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(modes, "compile_model", refuse)
    settings = load_grid("default").settings.with_overrides({"depth": 1, **SMALL})
    options = BenchOptions.of(torch.device("cpu"), "fp32", batch_sizes=[1], train_batch_size=2, warmup=0, repeats=1, compile=True, compile_backend="aot_eager")
    record = bench_cell(load_grid("default").cell("vit768-none"), settings, options, lambda m: None)
    assert record.status == "done"
    (eager, compiled) = record.latency
    assert entry_mode(eager) == EAGER and "median_ms" in eager
    assert compiled["mode"] == COMPILED and "no compiler here" in compiled["error"] and "no compiler here" in record.compile["error"]


def test_a_model_compiled_for_training_is_measured_eager() -> None:
    """The training loop compiles in place; the bench's headline must still be eager."""
    net = model("vit768")
    compile_model(net, "aot_eager")
    record = CellRecord(cell="vit768-none", backbone="vit768", neck="none", status="done")
    options = BenchOptions.of(torch.device("cpu"), "fp32", batch_sizes=[1], train_batch_size=2, warmup=0, repeats=1)
    measure_model(net, record, options, lambda m: None)
    assert record.status == "done" and [entry_mode(e) for e in record.latency] == [EAGER]
    assert any("measured eager" in n for n in record.notes)
    assert all(b._compiled_call_impl is None for b in net.backbone.blocks()) and uncompile_model(net) == 0


@pytest.mark.skipif(not CUDA, reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("grid, cell_id", RUNNABLE_CELLS)
def test_graph_replay_equals_eager_and_takes_new_inputs(grid: str, cell_id: str, compiled: bool) -> None:
    settings = load_grid(grid).settings.with_overrides({"depth": 1, **CELL_IMAGES})
    eager = create_variant(load_grid(grid).cell(cell_id), settings=settings).cuda().eval()
    net = copy.deepcopy(eager)
    if compiled:
        compile_model(net, "aot_eager")
    images = eager.example_input(2, "cuda")
    cams = torch.tensor([0, 1], device="cuda")
    graphed = capture_cuda_graph(net, images, cams, dtype="fp32")
    with torch.inference_mode():
        torch.testing.assert_close(graphed(images, cams), eager(images, cams), rtol=1e-4, atol=1e-4)
        other, other_cams = torch.randn_like(images), torch.tensor([2, 3], device="cuda")
        out = graphed(other, other_cams)
        assert out.data_ptr() == graphed.output.data_ptr()
        torch.testing.assert_close(graphed.images, other)
        torch.testing.assert_close(graphed.cam_ids, other_cams)
        torch.testing.assert_close(out, eager(other, other_cams), rtol=1e-4, atol=1e-4)
    with pytest.raises(UsageError, match="fixed shapes"):
        graphed(eager.example_input(3, "cuda"), cams)
    with pytest.raises(UsageError, match="with camera ids"):
        graphed(images)


@pytest.mark.skipif(not CUDA, reason="CUDA graphs need a CUDA device")
def test_bench_on_cuda_times_graph_replay_by_default(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", "--only", "vit768-none", "--device", "cuda", "--set", "depth=1",
                                      "--batch-sizes", "1", "--repeats", "5", "--train-batch-size", "2",
                                      "--train-batch-sizes", "none", "--json", str(out)])
    assert result.exit_code == 0, result.output
    (record,) = json.loads(out.read_text())
    (graph,) = [e for e in record["latency"] if entry_mode(e) == GRAPH]
    assert graph["median_ms"] > 0 and graph["capture_s"] > 0 and record["options"]["cuda_graphs"] is True
