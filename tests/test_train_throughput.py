"""The harness's training step as bench times it: the same step as training, beside a bare loop of the same network."""
from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from reidbench.bench.reference import BARE_MODELS, bare_train_loop
from reidbench.bench.training import harness_train_throughput, random_train_set, train_config_for
from reidbench.cli import app
from reidbench.training.sampler import PKSampler
from reidbench.training.step import StepOptions, TrainStep, build_optimizer, epoch_batches
from reidbench.variants.factory import create_variant
from reidbench.variants.settings import VariantSettings

TINY = VariantSettings(depth=1, img_size=(64, 32), num_classes=8, num_cameras=3)
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("backbone", sorted(BARE_MODELS))
def test_the_bare_loop_trains_the_same_network_as_the_harness(backbone):
    """Same parameter count as the harness backbone's library network: the ratio compares like with like."""
    model = create_variant(f"{backbone}-none", settings=TINY)
    library = model.backbone.vit if backbone == "vit768" else model.backbone.visual
    _, build, width = BARE_MODELS[backbone]
    assert sum(p.numel() for p in build(TINY).parameters()) == sum(p.numel() for p in library.parameters())
    result = bare_train_loop(backbone, TINY, 8, torch.device("cpu"), "fp32", steps=2, warmup=1)
    assert result["img_per_s"] > 0 and result["batch_size"] == 8 and result["steps"] == 2


def test_harness_throughput_runs_the_training_step_on_a_copy():
    model = create_variant("vit768-none", settings=TINY)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = harness_train_throughput(model, 8, torch.device("cpu"), "fp32", steps=3, warmup=1)
    assert result["mode"] == "eager" and result["img_per_s"] > 0 and result["compile_seconds"] is None
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # measuring never trains the caller's model


def test_training_batches_must_be_p_times_four():
    with pytest.raises(ValueError, match="P x 4"):
        train_config_for(6)
    assert train_config_for(64).p == 16


@pytest.mark.parametrize("value", ["6", "4", "abc"])
def test_bad_train_batch_sizes_exit_2(value):
    result = CliRunner().invoke(app, ["bench", "--only", "vit768-none", "--device", "cpu", "--train-batch-sizes", value])
    assert result.exit_code == 2 and "--train-batch-sizes" in result.output and "Traceback" not in result.output


def test_bench_reports_training_throughput_with_its_ratio_to_the_bare_loop(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, [
        "bench", "--only", "vit768-none", "--device", "cpu", "--set", "depth=1", "--set", "img_size=[64,32]",
        "--batch-sizes", "1", "--repeats", "1", "--warmup", "0", "--train-batch-sizes", "8", "--train-steps", "2",
        "--reference", "--json", str(out),
    ])
    assert result.exit_code == 0, result.output
    import json

    (record,) = json.loads(out.read_text())
    (entry,) = record["train_throughput"]
    assert entry["batch_size"] == 8 and entry["mode"] == "eager"
    assert entry["ratio_to_bare"] == pytest.approx(entry["img_per_s"] / entry["bare"]["img_per_s"])


@CUDA
def test_a_training_step_never_makes_the_host_wait_for_the_gpu():
    """Any synchronising call inside the step raises: the host must be free to queue the next step."""
    device = torch.device("cuda")
    model = create_variant("vit768-none", settings=TINY).to(device)
    cfg = train_config_for(8)
    train_set = random_train_set(model, 4, device)
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    step = TrainStep(model, cfg, optimizer, scheduler, torch.Generator().manual_seed(0), StepOptions(device, "bf16"))
    model.train()
    sampler = PKSampler(train_set.pids, p=cfg.p, k=cfg.k, seed=0)
    batches = epoch_batches(sampler, device)
    step.begin_epoch(batches)
    step(0, next(train_set.batches(batches)))  # first step: allocations, cuDNN/cuBLAS handles
    torch.cuda.set_sync_debug_mode("error")
    try:
        for number, batch in enumerate(train_set.batches(batches)):
            step(number, batch)
        sampler.set_epoch(1)  # a new epoch's indices and augmentation draws cross without a sync too
        batches = epoch_batches(sampler, device)
        step.begin_epoch(batches)
        for number, batch in enumerate(train_set.batches(batches)):
            step(number, batch)
    finally:
        torch.cuda.set_sync_debug_mode(0)
