#!/usr/bin/env bash
# The GPU measurements behind docs/benchmarks/: one call of the device tool, well under 10 minutes.
# Run from the repository root with the wheels of ../shared/device/prepare-wheels.sh in .whl/:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
#   PYTHONPATH=/tmp/site:$PWD bash scripts/gpu_check.sh
# Results land in $OUT (default /tmp/reidbench-gpu); each step runs even if an earlier one failed.
set -uo pipefail
OUT=${OUT:-/tmp/reidbench-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 REIDBENCH_CACHE=/tmp/reidbench-cache

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, timm, open_clip, fvcore; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'timm', timm.__version__, 'open_clip', open_clip.__version__)"
  nproc
} 2>&1 | tee "$OUT/machine.txt"

# 1. The CUDA-only unit tests (augmentation and metrics on the GPU agree with the CPU).
python3 -m pytest -q -p no:cacheprovider tests/test_augment.py tests/test_metrics.py -k cuda 2>&1 | tail -3 | tee "$OUT/cuda_tests.txt"

# 2. bench: the default grid, full size, bf16, cudnn.benchmark on, bare library loops beside the neck-less cells.
python3 -m reidbench bench --grid default --device cuda --batch-sizes 1,64,256 --reference \
  --json "$OUT/bench_default_cuda.json" 2> "$OUT/bench_default_cuda.log" | tee "$OUT/bench_default_cuda.txt"
echo "bench exit code: ${PIPESTATUS[0]}"

# 3. run: the full profile's default grid on the synthetic data (train, evaluate, measure every cell).
python3 -m reidbench run --grid default --profile full --device cuda --out /tmp/run-full --no-progress \
  > "$OUT/run_full.log" 2>&1
echo "run exit code: $?"
tail -12 "$OUT/run_full.log"
cp /tmp/run-full/results.csv "$OUT/run_full_results.csv" 2>/dev/null
cp /tmp/run-full/run.json "$OUT/run_full_run.json" 2>/dev/null
python3 - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1]); rows = []
for p in sorted(pathlib.Path("/tmp/run-full/cells").glob("*/seed*/record.json")):
    r = json.loads(p.read_text())
    rows.append({k: r.get(k) for k in ("cell", "status", "error", "metrics", "training", "wall_seconds", "gmacs", "latency", "memory", "params")})
    rows[-1]["train_log"] = [json.loads(l) for l in (p.parent / "train_log.jsonl").read_text().splitlines()] if (p.parent / "train_log.jsonl").exists() else []
(out / "run_full_records.json").write_text(json.dumps(rows, indent=1, default=str))
for r in rows:
    m, t = r["metrics"] or {}, r["training"] or {}
    print(f"{r['cell']:18} {r['status']:7} mAP {m.get('mAP', float('nan')):.3f} r1 {m.get('rank1', float('nan')):.3f} "
          f"train {t.get('seconds', 0):.0f}s {t.get('img_per_s', 0):.0f} img/s wall {r['wall_seconds'] or 0:.0f}s")
PY
