#!/usr/bin/env bash
# The GPU checks and measurements behind docs/benchmarks/, run on a machine with an NVIDIA GPU.
# From the repository root, with reidbench importable (python3 -m pip install -e ".[dev]", or PYTHONPATH=$PWD
# with torch, timm, open_clip, fvcore, pytest and, for `reidbench run`'s launcher module, submitit and cloudpickle
# installed):
#   bash scripts/gpu_check.sh [PART...]
# PARTs (default: train infer run -- about 5.5 min from the parts' measured times, not yet timed together;
# `tests profile` on request. The times below were measured on one NVIDIA H200 on 2026-11-27,
# docs/benchmarks/README.md):
#   tests  CUDA-only tests: no host sync in a training step, host cache == device cache,
#          GPU augmentation == CPU, CUDA-graph replay == eager, graphed resume and streaming,
#          compiled runs replaying graphs, every runnable grid cell's graph replay == eager (142 s measured
#          for 66 tests, before the 10 per-cell graph tests; ~30 s for test_train_graph.py alone)
#   train  training img/s of vit768-none and clip512-none at batch 64 and 128: harness vs bare
#          loop, eager vs compiled vs graph-replayed vs compiled+graph-replayed steps (109 s measured
#          with batch-1 inference only), and their inference at batch 1 and 256 in every mode
#   profile  torch.profiler of the harness's step and the bare loop's at batch 64, phase by phase
#          (host and device ms), for vit768 and clip512: where the harness / bare gap comes from (55 s measured)
#   infer  inference of the other cells at batch 1 and 256: eager, compiled, CUDA graph (63 s
#          measured for these four cells with 2-second windows; this part uses 1-second windows.
#          A profile's [measure] compile / cuda_graphs / reference would make a run time the same modes per cell.)
#   run    the full profile's default grid on the synthetic data, as `reidbench run` trains on CUDA by
#          default: graph-replayed steps (159 s measured on a fresh machine, synthetic set generated)
#   runeager  the same grid with --no-cuda-graphs, eager training steps (213 s measured)
# Results land in $OUT (default /tmp/reidbench-gpu); each part runs even if an earlier one failed.
set -uo pipefail
PARTS=${*:-train infer run}  # tests, profile, runeager: on request
OUT=${OUT:-/tmp/reidbench-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 REIDBENCH_CACHE=/tmp/reidbench-cache
SECONDS=0
want() { [[ " $PARTS " == *" $1 "* ]]; }

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, timm, open_clip, fvcore; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'timm', timm.__version__, 'open_clip', open_clip.__version__)"
  nproc
} 2>&1 | tee "$OUT/machine.txt"

if want tests; then
  python3 -m pytest -q -p no:cacheprovider tests/test_train_throughput.py tests/test_data_cache.py tests/test_augment.py \
    tests/test_compiled.py tests/test_train_graph.py > "$OUT/cuda_tests.txt" 2>&1
  tail -3 "$OUT/cuda_tests.txt"; echo "[$SECONDS s] tests done"
fi

if want train; then
  python3 -m reidbench bench --only vit768-none --only clip512-none --device cuda --batch-sizes 1,256 \
    --train-batch-sizes 64,128 --train-steps 30 --reference --compile --cuda-graphs --max-seconds 1 --repeats 20 \
    --json "$OUT/bench_train.json" 2> "$OUT/bench_train.log" | tee "$OUT/bench_train.txt" | grep -E "train|bare"
  echo "[$SECONDS s] bench (training) exit code: ${PIPESTATUS[0]}"
fi

if want profile; then
  # Two files go to $OUT: the phase tables and the operator tables; the Chrome traces stay in /tmp/profile_*.
  : > "$OUT/profile_ops.txt"
  for backbone in vit768 clip512; do
    python3 scripts/profile_train_step.py --backbone "$backbone" --batch 64 --out "/tmp/profile_$backbone" 2>&1 \
      | grep -v -i "warn" | tee -a "$OUT/profile.txt"
    for name in harness bare; do
      { echo "=== $backbone $name"; cat "/tmp/profile_$backbone/${name}_ops.txt"; } >> "$OUT/profile_ops.txt" 2>&1
    done
  done
  echo "[$SECONDS s] profile done"
fi

if want infer; then
  python3 -m reidbench bench --grid default --only vit768-ms --only clip512-ms --only clip512proj-none --only clip512proj-ms \
    --device cuda --batch-sizes 1,256 --train-batch-sizes none --reference --compile --cuda-graphs --max-seconds 1 \
    --json "$OUT/bench_infer.json" 2> "$OUT/bench_infer.log" | tee "$OUT/bench_infer.txt"
  echo "[$SECONDS s] bench (inference) exit code: ${PIPESTATUS[0]}"
fi

if want run; then
  python3 -m reidbench run --grid default --profile full --device cuda --out /tmp/run-full --no-progress \
    > "$OUT/run_full.log" 2>&1
  echo "[$SECONDS s] run exit code: $?"
  grep -E "^\[|^data:" "$OUT/run_full.log" | tail -14
  cp /tmp/run-full/results.csv /tmp/run-full/run.json /tmp/run-full/environment.json "$OUT/" 2>/dev/null
  # Every cell's record (latency per batch, memory, training epochs), as one archive in $OUT.
  (cd /tmp/run-full && tar czf "$OUT/run_records.tgz" cells/*/seed*/record.json)
fi
if want runeager; then
  python3 -m reidbench run --grid default --profile full --device cuda --no-cuda-graphs --out /tmp/run-eager --no-progress \
    > "$OUT/run_eager.log" 2>&1
  echo "[$SECONDS s] run --no-cuda-graphs exit code: $?"
  grep -E "^\[|^data:" "$OUT/run_eager.log" | tail -14
  mkdir -p "$OUT/eager" && cp /tmp/run-eager/results.csv /tmp/run-eager/run.json "$OUT/eager/" 2>/dev/null
fi
echo "[$SECONDS s] done"
