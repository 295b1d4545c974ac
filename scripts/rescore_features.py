"""Score a run's trained cells again with other test-time features: before or after the BNNeck's BN, with or without flip.

Reads each done cell's model.pt and the run's own dataset (reopened and checked against the
fingerprint run.json holds), and prints each seed's test mAP four ways, then per cell the mean
and standard deviation over seeds for each. The run's record is the "before" column (the
profile's own feature and no flip); the other three say whether a test-time change alone would
move a cell's mean or its spread over seeds. Usage (repository root):

  python scripts/rescore_features.py RUN_DIR
"""
from __future__ import annotations

import statistics
import sys
from dataclasses import replace

import torch

from reidbench.api import load_cell, load_run
from reidbench.data.reopen import reopen
from reidbench.harness.evaluate import evaluate_model
from reidbench.harness.placement import HOST, decode_splits
from reidbench.profiles import EvalConfig
from reidbench.runtime.progress import Progress

WAYS = [(feature, flip) for feature in ("before", "after") for flip in (False, True)]


def way_name(feature: str, flip: bool) -> str:
    return feature + (" + flip" if flip else "")


def main(run_root: str) -> None:
    run = load_run(run_root)
    dataset, quiet = reopen(run.meta["dataset"]), Progress(lambda line: None, bars=False)
    splits, scores = None, {}
    for record in (r for r in run.records if r["status"] == "done"):
        model = load_cell(run.path, record["cell"], record["seed"])
        if splits is None:
            splits = decode_splits(dataset, ("query", "gallery"), model.settings, HOST, torch.device("cpu"), quiet)
        row = {}
        for feature, flip in WAYS:
            model.settings = replace(model.settings, feature=feature)
            scored = evaluate_model(model, splits["query"], splits["gallery"], EvalConfig(flip=flip), torch.device("cpu"), "fp32", quiet)
            row[way_name(feature, flip)] = 100 * float(scored.metrics["mAP"])
        scores.setdefault(record["cell"], []).append(row)
        print(record["cell"], "seed", record["seed"], ", ".join(f"{k} {v:.1f}" for k, v in row.items()), flush=True)
    print("| cell | features | mAP % per seed | mean ± sd |\n|---|---|---|---|")
    for cell, rows in scores.items():
        for feature, flip in WAYS:
            values = [r[way_name(feature, flip)] for r in rows]
            spread = f"{statistics.stdev(values):.1f}" if len(values) > 1 else "–"
            print(f"| {cell} | {way_name(feature, flip)} | {', '.join(f'{v:.1f}' for v in values)} | {statistics.mean(values):.1f} ± {spread} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
