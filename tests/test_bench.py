"""bench on shallow models on the CPU: a record holds parameters, FLOPs, latency and memory, with consistent numbers."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from reidbench.bench.memory import measure_peak_memory
from reidbench.bench.options import BenchOptions
from reidbench.bench.suite import bench_cell
from reidbench.bench.timing import time_callable
from reidbench.variants import load_grid

CPU = torch.device("cpu")


def options(**kw) -> BenchOptions:
    base = dict(batch_sizes=[1, 2], train_batch_size=2, warmup=1, repeats=3, max_seconds=2.0)
    return BenchOptions.of(CPU, "fp32", **{**base, **kw})


@pytest.fixture(scope="module")
def shallow_settings():
    return load_grid("default").settings.with_overrides({"depth": 1})


def test_a_done_cell_has_params_flops_latency_and_memory(shallow_settings) -> None:
    grid = load_grid("default")
    record = bench_cell(grid.cell("vit768-ms"), shallow_settings, options(), lambda m: None).to_dict()
    assert record["status"] == "done" and record["error"] is None
    params = record["params"]
    assert params["total"] == params["backbone"] + params["neck"] + params["head"]
    assert params["neck"] > params["backbone"]
    assert record["gmacs"] > 0 and record["gflops"] == pytest.approx(2 * record["gmacs"], rel=0.005)
    assert record["flops"]["gmacs_by_part"]["neck"] > 0
    assert [e["batch_size"] for e in record["latency"]] == [1, 2]
    for entry in record["latency"]:
        assert 0 < entry["median_ms"] <= entry["p90_ms"]
        assert entry["img_per_s"] == pytest.approx(entry["batch_size"] / entry["median_ms"] * 1e3)
        assert entry["timer"] == "perf_counter" and entry["repeats"] >= 3
    assert record["memory"]["inference"]["batch_size"] == 2
    assert record["memory"]["inference"]["peak_rss_delta_mib"] >= 0 and record["memory"]["inference"]["peak_rss_mib"] > 0
    assert record["memory"]["inference"]["peak_tensor_mib"] > 0 and record["memory"]["inference"]["kind"] == "cpu-tensor-peak"
    assert record["memory"]["train_step"]["peak_tensor_mib"] > 4 * params["total"] / 2**20  # its gradients, at least
    assert any("clamped" in n for n in record["notes"])
    assert record["settings"]["depth"] == 1


def test_an_xfail_cell_keeps_pytorchs_message_and_its_parameter_count(shallow_settings) -> None:
    record = bench_cell(load_grid("default").cell("clip512-ms"), shallow_settings, options(), lambda m: None)
    assert record.status == "xfail"
    assert "to have 768 channels, but got 512 channels instead" in record.error
    assert record.params["neck"] > 100_000_000
    assert record.latency == [] and record.gmacs is None


def test_bare_reference_loop_stands_beside_the_harness(shallow_settings) -> None:
    record = bench_cell(load_grid("default").cell("vit768-none"), shallow_settings, options(batch_sizes=[2], reference=True), lambda m: None)
    (bare,) = record.reference
    assert bare["model"] == "timm vit_base_patch16_224" and bare["batch_size"] == 2
    assert bare["harness_over_bare"] == pytest.approx(record.latency[0]["median_ms"] / bare["mean_ms"])


def test_a_measurement_error_fails_the_cell_but_keeps_what_was_measured(shallow_settings, monkeypatch) -> None:
    from reidbench.bench import suite

    def explode(*args, **kwargs):
        raise RuntimeError("timer broke")

    monkeypatch.setattr(suite, "time_callable", explode)
    record = bench_cell(load_grid("default").cell("vit768-none"), shallow_settings, options(), lambda m: None)
    assert record.status == "failed" and "timer broke" in record.error and "Traceback" in record.traceback
    assert record.gmacs is not None and record.params["total"] > 0


def test_timing_takes_median_and_p90_of_the_repeats() -> None:
    calls = []
    timing = time_callable(lambda: calls.append(1), CPU, warmup=2, repeats=7, max_seconds=10)
    assert len(calls) == 9 and timing.repeats == 7 and timing.warmup == 2
    assert 0 <= timing.median_ms <= timing.p90_ms


def test_a_regions_cpu_peak_is_its_own_increase_over_where_it_started() -> None:
    """Two regions, one allocating 500 MiB more than the other, read at least 500 MiB apart: the process's
    resident baseline (models, images) is not what a region is charged with."""
    resident = torch.ones(300 * 2**20 // 4)  # already resident before either region: counts for neither

    def allocate(mib: int) -> None:
        torch.ones(mib * 2**20 // 4).add_(1)

    small, large = measure_peak_memory(lambda: allocate(16), CPU), measure_peak_memory(lambda: allocate(516), CPU)
    assert small["kind"] == large["kind"] == "cpu-tensor-peak"
    assert small["peak_tensor_mib"] == pytest.approx(16, abs=0.5) and large["peak_tensor_mib"] == pytest.approx(516, abs=0.5)
    assert large["peak_rss_delta_mib"] - small["peak_rss_delta_mib"] >= 500 * 0.98
    assert small["peak_rss_delta_mib"] < 300 and large["start_rss_mib"] >= 300
    del resident


def test_a_cpu_region_is_charged_for_what_it_allocates_even_into_memory_it_freed() -> None:
    """A region that frees 40 blocks of 1 MiB allocated before it and allocates 40 new ones (a training step
    replacing the last step's gradients) holds 40 MiB it allocated: the allocator hands it the freed pages, so its
    resident size barely moves and it read about nothing until the tensors it allocates were counted."""
    held = [torch.ones(2**20 // 4) for _ in range(40)]

    def replace() -> None:
        for index in range(len(held)):
            held[index] = None
            held[index] = torch.ones(2**20 // 4)
        held.clear()

    result = measure_peak_memory(replace, CPU)
    assert result.get("peak_tensor_mib", result["peak_rss_delta_mib"]) == pytest.approx(40, abs=1)


def test_a_larger_model_reads_more_cpu_memory_in_each_region() -> None:
    """The training step holds activations and gradients: vit768-ms, with twice vit768-none's parameters, reads at
    least its extra gradients more (it read less when the step's gradients landed in the pages the last step's had
    freed). Inference holds activations, which the parameters do not set: the model with the extra neck reads no
    less, and the same model on a 4x larger token grid reads more."""
    from reidbench.bench.suite import _inference_memory, _train_step_memory
    from reidbench.variants import create_variant

    opts = options(batch_sizes=[4], train_batch_size=4)
    small, large = (create_variant(cell, depth=1, img_size=(64, 32), neck_scales=[1, 2, 4]) for cell in ("vit768-none", "vit768-ms"))
    wider = create_variant("vit768-none", depth=1, img_size=(128, 64))
    extra_grads = 4 * (sum(p.numel() for p in large.parameters()) - sum(p.numel() for p in small.parameters())) / 2**20
    def mib(measured: dict) -> float:
        return measured.get("peak_tensor_mib", measured["peak_rss_delta_mib"])

    train = {name: mib(_train_step_memory(model, opts)) for name, model in (("small", small), ("large", large))}
    assert train["large"] - train["small"] >= 0.95 * extra_grads
    infer = {name: mib(_inference_memory(model.eval(), 4, opts))
             for name, model in (("small", small), ("large", large), ("wider", wider))}
    assert infer["large"] >= infer["small"] and infer["wider"] > infer["small"]


_REUSE_FREED_HEAP = """
import torch
from reidbench.bench.memory import measure_peak_memory
freed = torch.ones(600 * 2**20 // 4)
del freed  # with these allocator settings it stays resident in the heap
print(measure_peak_memory(lambda: torch.ones(516 * 2**20 // 4).add_(1), torch.device("cpu"))["peak_rss_delta_mib"])
"""


def test_a_region_reusing_freed_heap_memory_is_charged_for_it() -> None:
    """glibc told never to mmap nor trim: a freed 600 MiB block stays resident, and a region that reuses it
    raised neither the resident size nor its high-water mark -- it was charged 0 MiB until the free heap
    was handed back before the region. A fresh process, so the allocator's state is the test's own."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(2**30), "MALLOC_TRIM_THRESHOLD_": str(2**40), "MALLOC_TOP_PAD_": "0"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parents[1]), env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", _REUSE_FREED_HEAP], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.split()[-1]) >= 516 * 0.98


def test_without_a_resettable_high_water_mark_the_region_is_sampled(monkeypatch) -> None:
    from reidbench.bench import memory

    monkeypatch.setattr(memory, "reset_peak_rss", lambda: False)

    def hold() -> None:  # sampling sees what stays a few milliseconds; a busy machine may delay the sampling thread
        block = torch.ones(256 * 2**20 // 4).add_(1)
        time.sleep(0.2)
        del block

    result = measure_peak_memory(hold, CPU)
    assert "resident size sampled" in result["how"] and result["peak_rss_delta_mib"] >= 200
