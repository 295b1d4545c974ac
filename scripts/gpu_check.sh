#!/usr/bin/env bash
# The GPU measurements behind docs/benchmarks/: one call of the device tool, well under 6 minutes.
# Run from the repository root with the wheels of ../shared/device/prepare-wheels.sh in .whl/:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
#   PYTHONPATH=/tmp/site:$PWD bash scripts/gpu_check.sh
# Results land in $OUT (default /tmp/reidbench-gpu); the last lines printed are the table.
set -uo pipefail
OUT=${OUT:-/tmp/reidbench-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, timm, open_clip, fvcore; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'timm', timm.__version__, 'open_clip', open_clip.__version__)"
  nproc
} 2>&1 | tee "$OUT/machine.txt"

# Issue 2: the default grid, full size (depth 12, 256x128), bf16 autocast, with bare library loops beside the neck-less cells.
python3 -m reidbench bench --grid default --device cuda --batch-sizes 1,64,256 --reference \
  --json "$OUT/bench_default_cuda.json" 2> "$OUT/bench_default_cuda.log" | tee "$OUT/bench_default_cuda.txt"
echo "bench exit code: ${PIPESTATUS[0]}"
