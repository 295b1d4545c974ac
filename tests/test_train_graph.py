"""Graph-replayed training steps: the graph-safe optimizer on any device; capture and replay on CUDA."""
from __future__ import annotations

import copy

import pytest
import torch
from typer.testing import CliRunner

from reidbench.bench.training import harness_train_step, random_train_set
from reidbench.cli import app
from reidbench.errors import UsageError
from reidbench.profiles import TrainConfig
from reidbench.training.sampler import PKSampler
from reidbench.training.step import StepOptions, TrainStep, build_optimizer, epoch_batches
from reidbench.runtime.distributed import World
from reidbench.harness.plan import check_cuda_graphs, default_cuda_graphs
from reidbench.training.graph_step import WARMUP_STEPS, GraphCaptureFailed, GraphedTrainStep, graph_capture_refusal
from reidbench.variants.factory import create_variant
from reidbench.variants.settings import VariantSettings

# No drop path: a graph draws its random numbers from other generator offsets than eager code.
TINY = VariantSettings(depth=1, img_size=(32, 16), num_classes=16, num_cameras=3, drop_path_rate=0.0)
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
FACTORS = [1.0, 0.5, 0.25, 2.0, 1.0, 0.0, 0.75, 0.5, 1.5, 1.0, 0.3, 0.8]


def _steps(device: torch.device, optimizer_name: str, graph_safe: bool, graphed: bool = False, compile_backend=None):
    """A tiny model's TrainStep (or its graphed wrapper) with a learning rate that changes every step, and its batches.

    With `compile_backend`, the model's blocks and the step's losses are compiled with it."""
    torch.manual_seed(0)
    model = create_variant("vit768-none", settings=TINY).to(device).train()
    if compile_backend is not None:
        from reidbench.runtime.compile import compile_model

        compile_model(model, compile_backend)
    cfg = TrainConfig(epochs=1, p=2, k=4, warmup_epochs=0, optimizer=optimizer_name, lr=0.01)
    train_set = random_train_set(model, TINY.num_classes, device)
    optimizer = build_optimizer(model, cfg, graph_safe_on=device if graph_safe else None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: FACTORS[step % len(FACTORS)])
    step = TrainStep(model, cfg, optimizer, scheduler, torch.Generator().manual_seed(0), StepOptions(device, "fp32", compile_backend))
    sampler = PKSampler(train_set.pids, p=cfg.p, k=cfg.k, seed=0)
    batches = epoch_batches(sampler, train_set.index_device)
    step.begin_epoch(batches)
    assert len(batches) == 8 > WARMUP_STEPS + 2  # eager warm-up, the capture, then replays
    return model, (GraphedTrainStep(step) if graphed else step), list(train_set.batches(batches))


@pytest.mark.parametrize("optimizer_name", ["sgd", "adamw"])
def test_the_graph_safe_optimizer_follows_the_schedule_like_the_plain_one(optimizer_name):
    """Learning rate as a device tensor the scheduler fills in place: the same trajectory as a float one."""
    cpu = torch.device("cpu")
    trained = {}
    for graph_safe in (False, True):
        model, step, batches = _steps(cpu, optimizer_name, graph_safe)
        stats = torch.stack([step(n, batch) for n, batch in enumerate(batches)])
        lr = step.optimizer.param_groups[0]["lr"]
        assert isinstance(lr, torch.Tensor) == graph_safe
        assert float(lr) == pytest.approx(0.01 * FACTORS[len(batches) % len(FACTORS)])
        trained[graph_safe] = (stats, model.state_dict())
    # AdamW amplifies rounding noise (see _assert_same_weights), and over 8 steps it reaches the losses.
    tolerance = 1e-5 if optimizer_name == "sgd" else 1e-2
    torch.testing.assert_close(trained[True][0], trained[False][0], rtol=tolerance, atol=tolerance)
    _assert_same_weights(trained[True][1], trained[False][1], optimizer_name, rtol=1e-5, atol=1e-6)


def _assert_same_weights(got: dict, expected: dict, optimizer_name: str, rtol: float, atol: float) -> None:
    """SGD's weights must agree. AdamW's need not: it divides each gradient by its own magnitude, so
    parameters whose true gradient is zero (attention's key bias) move by +-lr on rounding noise."""
    if optimizer_name != "sgd":
        return
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=rtol, atol=atol, msg=name)


def test_graphed_steps_are_refused_off_cuda_and_with_labelled_steps():
    _, step, _ = _steps(torch.device("cpu"), "sgd", graph_safe=True)
    assert "only on a CUDA device" in graph_capture_refusal(step)
    with pytest.raises(UsageError, match="only on a CUDA device"):
        GraphedTrainStep(step)
    model = create_variant("vit768-none", settings=TINY)
    with pytest.raises(ValueError, match="a profiler label is host work"):
        harness_train_step(model, 8, torch.device("cpu"), "fp32", regions=True, cuda_graph=True)


def test_bench_records_graphed_training_as_skipped_without_cuda(tmp_path):
    import json

    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, [
        "bench", "--only", "vit768-none", "--device", "cpu", "--set", "depth=1", "--set", "img_size=[64,32]",
        "--batch-sizes", "1", "--train-batch-sizes", "8", "--train-steps", "1", "--repeats", "1", "--cuda-graphs",
        "--compile", "--compile-backend", "eager", "--json", str(out),
    ])
    assert result.exit_code == 0, result.output
    (record,) = json.loads(out.read_text())
    eager, compiled, graphed, both = record["train_throughput"]
    assert eager["mode"] == "eager" and eager["img_per_s"] > 0
    assert compiled["mode"] == "compiled" and compiled["img_per_s"] > 0 and compiled["ratio_to_eager"] > 0
    for entry in (graphed, both):
        assert "CUDA graphs need a CUDA device" in entry["skipped"] and "img_per_s" not in entry
        assert f"train bs8 {entry['mode']}: CUDA graphs need a CUDA device" in result.output
    assert (graphed["mode"], both["mode"]) == ("graph", "compiled+graph")  # the one vocabulary of inference and training


@CUDA
@pytest.mark.parametrize("optimizer_name", ["sgd", "adamw"])
def test_graph_replayed_steps_train_like_eager_steps(optimizer_name):
    """fp32, no drop path: replaying the captured update gives the eager trajectory, schedule included."""
    device = torch.device("cuda")
    eager_model, eager, batches = _steps(device, optimizer_name, graph_safe=True)
    graph_model, graphed, same = _steps(device, optimizer_name, graph_safe=True, graphed=True)
    expected = torch.stack([eager(n, batch) for n, batch in enumerate(batches)])
    got = torch.stack([graphed(n, batch) for n, batch in enumerate(same)])
    assert graphed.graph is not None and graphed.capture_seconds is not None
    assert graphed.replays == len(batches) - WARMUP_STEPS
    tolerance = 1e-3 if optimizer_name == "sgd" else 1e-2
    torch.testing.assert_close(got, expected, rtol=tolerance, atol=tolerance)
    _assert_same_weights(graph_model.state_dict(), eager_model.state_dict(), optimizer_name, rtol=1e-3, atol=1e-5)


@CUDA
def test_compiled_steps_replayed_as_graphs_train_like_compiled_eager_steps():
    """The compiled blocks and losses are compiled in the warm-up steps, then recorded and replayed."""
    device = torch.device("cuda")
    trained = {}
    for graphed in (False, True):
        model, step, batches = _steps(device, "sgd", graph_safe=True, graphed=graphed, compile_backend="aot_eager")
        trained[graphed] = (torch.stack([step(n, batch) for n, batch in enumerate(batches)]), model.state_dict())
    assert step.replays == len(batches) - WARMUP_STEPS and step.capture_seconds is not None
    torch.testing.assert_close(trained[True][0], trained[False][0], rtol=1e-3, atol=1e-3)
    _assert_same_weights(trained[True][1], trained[False][1], "sgd", rtol=1e-3, atol=1e-5)


@CUDA
def test_a_replayed_step_reads_the_learning_rate_from_the_device_and_never_syncs():
    device = torch.device("cuda")
    model, graphed, batches = _steps(device, "sgd", graph_safe=True, graphed=True)
    zero_lr_step = FACTORS.index(0.0)
    assert zero_lr_step > WARMUP_STEPS  # a replay, not a warm-up step or the capture
    for n in range(zero_lr_step):
        graphed(n, batches[n])
    assert float(graphed.step.optimizer.param_groups[0]["lr"]) == 0.0  # the scheduler filled the device tensor
    before = copy.deepcopy({k: v for k, v in model.state_dict().items() if v.is_floating_point() and "bottleneck" not in k})
    torch.cuda.set_sync_debug_mode("error")
    try:  # the copies in, the replay, the clone out and the scheduler's step: none may wait for the GPU
        graphed(zero_lr_step, batches[zero_lr_step])
    finally:
        torch.cuda.set_sync_debug_mode(0)
    after = model.state_dict()
    for name, value in before.items():  # lr 0: SGD moves nothing (BN running statistics do move)
        torch.testing.assert_close(after[name], value, rtol=0, atol=0, msg=name)


def test_a_run_with_cuda_graphs_needs_one_process_per_cell():
    from types import SimpleNamespace

    plan = SimpleNamespace(compile=False, device=torch.device("cuda"))
    with pytest.raises(UsageError, match="this run has 2: torchrun --nproc-per-node or --gpus-per-cell > 1"):
        check_cuda_graphs(plan, World(rank=0, world_size=2))
    check_cuda_graphs(plan, World())  # one process on a GPU: fine


def test_graph_replay_is_the_default_only_where_it_can_run():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert default_cuda_graphs(cuda, world=World()) is True  # with or without --compile: the graph records compiled code too
    assert default_cuda_graphs(cpu, world=World()) is False
    assert default_cuda_graphs(cuda, world=World(rank=0, world_size=2)) is False  # DDP


def test_a_failed_capture_fails_the_cell_naming_the_eager_way_out(monkeypatch):
    """A module that waits for the host inside the step cannot be recorded: the error says so and names --no-cuda-graphs."""
    _, step, batches = _steps(torch.device("cpu"), "sgd", graph_safe=True)
    graphed = object.__new__(GraphedTrainStep)  # its constructor refuses the CPU; the capture path is what is tested
    graphed.step, graphed.graph, graphed.replays = step, None, 0

    class RefusingCapture:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore detail")

    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: object())
    monkeypatch.setattr(torch.cuda, "graph", RefusingCapture)
    with pytest.raises(GraphCaptureFailed, match=r"\(CUDA error: operation not permitted when stream is capturing\).*--no-cuda-graphs") as caught:
        graphed._capture(step.inputs(0, batches[0]))
    assert "more detail" not in str(caught.value) and graphed.replays == 0

    class OutOfMemoryCapture(RefusingCapture):
        def __exit__(self, *exc):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(torch.cuda, "graph", OutOfMemoryCapture)
    with pytest.raises(torch.cuda.OutOfMemoryError):  # left to the runner's advice: a smaller batch
        graphed._capture(step.inputs(0, batches[0]))


def _cuda_run(tiny_synthetic, tmp_path, *options: str):
    """`reidbench run` of one tiny vit768-none cell for 3 epochs on CUDA: (CLI result, run folder)."""
    from tiny_run import ONE_CELL_GRID, run_args, write_inputs

    inputs = write_inputs(tmp_path / "inputs", tiny_synthetic, grid=ONE_CELL_GRID, epochs=3)
    out = tmp_path / "run"
    return CliRunner().invoke(app, run_args(inputs, out, "--device", "cuda", *options)), out


def _replayed_training(out) -> dict:
    """The cell's training record, once the cell is known done with its steps replayed as graphs."""
    import json

    from reidbench.rundir import RunDir

    record = RunDir(out).read_record("vit768-none", 0).to_dict()
    training = record["training"]
    assert record["status"] == "done" and 0 < record["metrics"]["mAP"] <= 1
    assert training["graphed"] is True and training["graph_replayed_steps"] > 0
    assert training["capture_seconds"] > 0 and training["first_epoch_seconds"] > 0
    assert json.loads((out / "run.json").read_text())["cuda_graphs"] is True
    return training


@CUDA
def test_a_run_trains_a_cell_with_graph_replayed_steps(tiny_synthetic, tmp_path):
    result, out = _cuda_run(tiny_synthetic, tmp_path)  # on by default on CUDA
    assert result.exit_code == 0, result.output
    _replayed_training(out)


@CUDA
def test_a_compiled_run_on_cuda_replays_its_compiled_steps_by_default(tiny_synthetic, tmp_path):
    """--compile alone on a GPU: the blocks are compiled in the warm-up steps, then the steps replay as graphs."""
    result, out = _cuda_run(tiny_synthetic, tmp_path, "--compile")
    assert result.exit_code == 0, result.output
    assert "transformer blocks compiled, training steps replayed as CUDA graphs" in result.output
    assert _replayed_training(out)["compiled"] is True


@CUDA
def test_a_graph_replayed_run_interrupted_after_an_epoch_resumes_with_replays(tiny_synthetic, tmp_path, monkeypatch):
    """The checkpoint holds the graph-safe optimizer (learning rate as a device tensor); resuming captures anew."""
    from reidbench.harness import runner as runner_module

    original = runner_module.execute

    def stop_after_first_epoch(cell: str, seed: int, epoch: int) -> None:
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(
        runner_module, "execute", lambda *args, **kw: original(*args, **{**kw, "on_epoch": stop_after_first_epoch})
    )
    interrupted, out = _cuda_run(tiny_synthetic, tmp_path)
    monkeypatch.undo()
    assert interrupted.exit_code == 130, interrupted.output
    resumed = CliRunner().invoke(app, ["run", "--resume", str(out), "--no-progress"])
    assert resumed.exit_code == 0, resumed.output
    assert _replayed_training(out)["resumed_from_epoch"] == 1


@CUDA
def test_a_streamed_run_on_cuda_replays_its_steps_while_workers_decode(tiny_synthetic, tmp_path):
    """DataLoader workers pin batches in a thread of their own during the capture: thread-local capture allows it."""
    result, out = _cuda_run(tiny_synthetic, tmp_path, "--data-cache", "stream")
    assert result.exit_code == 0, result.output
    assert _replayed_training(out)["image_cache"].startswith("stream")
