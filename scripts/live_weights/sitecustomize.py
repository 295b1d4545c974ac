"""Evaluate each cell's last weights beside their moving average (train.ema_decay), in the same process.

Put this folder on PYTHONPATH and set LIVE_WEIGHTS_DIR: Python imports this module at start-up
(in `reidbench run` and in every job a launcher starts), and each cell that keeps a weight
average is then evaluated twice, with the average (what the record holds) and with the weights
of the last step, and LIVE_WEIGHTS_DIR/<cell>-seed<k>.json gets {"ema": mAP, "live": mAP}. The
average never feeds back into training, so "live" is the mAP the same run gives without it: a
paired measurement of what the average buys. `scripts/seed_spread.py RUN_DIR LIVE_WEIGHTS_DIR`
tabulates it. Without LIVE_WEIGHTS_DIR nothing changes.

  LIVE_WEIGHTS_DIR=/tmp/live PYTHONPATH=$PWD:$PWD/scripts/live_weights reidbench run --grid default
"""
import os

if os.environ.get("LIVE_WEIGHTS_DIR"):
    import json

    import torch

    import reidbench.harness.cell as cell_module
    import reidbench.training.average as average_module

    _state: dict = {}
    _copy, _train_evaluate_measure, _evaluate = (
        average_module.WeightAverage.copy_to_model, cell_module._train_evaluate_measure, cell_module.evaluate_model)

    def copy_to_model(self) -> None:
        _state["last"], _state["weights"] = [t.clone() for t in self.live], self.live
        _copy(self)

    def train_evaluate_measure(model, cell, seed, *args, **kwargs):
        _state.clear()
        _state["name"] = f"{cell.id}-seed{seed}"
        return _train_evaluate_measure(model, cell, seed, *args, **kwargs)

    def evaluate_model(model, *args, **kwargs):
        averaged = _evaluate(model, *args, **kwargs)
        if "last" in _state and not _state.get("done"):  # the test split only, not --test-data sets
            _state["done"] = True
            kept = [t.clone() for t in _state["weights"]]
            with torch.no_grad():
                torch._foreach_copy_(_state["weights"], _state["last"])
            last = _evaluate(model, *args, **kwargs)
            with torch.no_grad():
                torch._foreach_copy_(_state["weights"], kept)
            path = os.path.join(os.environ["LIVE_WEIGHTS_DIR"], _state["name"] + ".json")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                json.dump({"ema": averaged.metrics["mAP"], "live": last.metrics["mAP"]}, f)
        return averaged

    average_module.WeightAverage.copy_to_model = copy_to_model
    cell_module._train_evaluate_measure = train_evaluate_measure
    cell_module.evaluate_model = evaluate_model
