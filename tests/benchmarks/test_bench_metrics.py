"""Speed and memory of evaluate_rank at the sizes of the real benchmarks.

Random features make the accuracy meaningless but the work realistic: with
random features the correct matches are spread over the whole ranking, the
worst case for the evaluator. Targets on a 2-core CPU: Market-1501 size in
3 s or less; MSMT17 size within 2 GB of extra memory (asserted here, as it
does not depend on the machine's speed).

    python3 -m pytest tests/benchmarks/test_bench_metrics.py --benchmark-only -m "slow or not slow"
"""
from __future__ import annotations

import pytest
import torch

from reidbench.evaluation.metrics import evaluate_rank

MSMT_EXTRA_MEMORY_LIMIT_MB = 2048

DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    ),
]


def make_eval_set(num_q: int, num_g: int, dim: int, num_ids: int, num_cams: int, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return dict(
        qf=torch.randn(num_q, dim, generator=generator),
        gf=torch.randn(num_g, dim, generator=generator),
        q_pids=torch.randint(1, num_ids + 1, (num_q,), generator=generator),
        # 0 = distractor, as in the real galleries.
        g_pids=torch.randint(0, num_ids + 1, (num_g,), generator=generator),
        q_camids=torch.randint(0, num_cams, (num_q,), generator=generator),
        g_camids=torch.randint(0, num_cams, (num_g,), generator=generator),
    )


@pytest.fixture(scope="module")
def market_sized() -> dict:
    return make_eval_set(3_368, 15_913, 768, num_ids=751, num_cams=6, seed=1501)


@pytest.fixture(scope="module")
def msmt_sized() -> dict:
    return make_eval_set(11_659, 82_161, 768, num_ids=3_060, num_cams=15, seed=17)


def on_device(data: dict, device: str) -> dict:
    return {name: tensor.to(device) for name, tensor in data.items()}


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> int | None:
    """Reset the kernel's peak-RSS mark; returns the current RSS in kB, or None if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return _status_kb("VmRSS")
    except OSError:
        return None


@pytest.mark.parametrize("device", DEVICES)
def test_bench_market_sized(benchmark, market_sized, device):
    data = on_device(market_sized, device)
    benchmark.extra_info.update(size="3368 x 15913 x 768", threads=torch.get_num_threads())
    result = benchmark.pedantic(
        evaluate_rank, kwargs=dict(data, metric="euclidean"), rounds=5, iterations=1, warmup_rounds=1
    )
    assert result.num_valid_queries > 0


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_bench_msmt_sized(benchmark, msmt_sized, device):
    data = on_device(msmt_sized, device)
    benchmark.extra_info.update(size="11659 x 82161 x 768", threads=torch.get_num_threads())
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    rss_before_kb = reset_peak_rss()

    result = benchmark.pedantic(
        evaluate_rank, kwargs=dict(data, metric="euclidean"), rounds=1, iterations=1
    )

    assert result.num_valid_queries > 0
    if device == "cuda":
        extra_gpu_mb = (torch.cuda.max_memory_allocated() - before) / 2**20
        benchmark.extra_info["peak_extra_gpu_memory_mb"] = round(extra_gpu_mb, 1)
        assert extra_gpu_mb <= MSMT_EXTRA_MEMORY_LIMIT_MB
    if rss_before_kb is None:
        benchmark.extra_info["peak_extra_rss_mb"] = "unavailable (/proc/self/clear_refs not writable)"
        return
    extra_rss_mb = (_status_kb("VmHWM") - rss_before_kb) / 1024
    benchmark.extra_info["peak_extra_rss_mb"] = round(extra_rss_mb, 1)
    assert extra_rss_mb <= MSMT_EXTRA_MEMORY_LIMIT_MB
