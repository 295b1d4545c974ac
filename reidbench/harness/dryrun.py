"""`reidbench run --dry-run`: the whole plan resolved -- cells, seeds, initialisation, recipe and why, every
setting -- without training, decoding an image or creating a run directory.

Which recipe a cell trains with depends on its initialisation, the profile,
the grid and the dataset; before a GPU is spent on a grid, this shows what
each cell will do and where each value comes from.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from reidbench.data import ReidDataset
from reidbench.harness.plan import RunPlan, cell_profile, cell_recipe, cell_settings
from reidbench.profiles.profile import BASE
from reidbench.runtime.text import counted, seeds_text


def describe_plan(plan: RunPlan, dataset: ReidDataset) -> dict[str, Any]:
    """The plan as data (`--dry-run --json`): the run's facts and, per cell, everything it trains with."""
    follow = plan.grid.follow_dataset_size
    return {
        "grid": {"name": plan.grid.name, "source": plan.grid.source},
        "profile": {"name": plan.profile.name, "source": plan.profile.source, "written_for": plan.profile.init.describe()},
        "dataset": {"spec": plan.dataset, "name": dataset.name, "native_size": list(dataset.native_size),
                    "follow_dataset_size": plan.profile.follow_dataset_size if follow is None else follow},
        "device": str(plan.device), "dtype": plan.dtype, "seeds": plan.first_round_seeds,
        "auto_seeds": None if plan.auto_seeds is None else {"max_seeds": plan.auto_seeds.max_seeds, "precision": plan.auto_seeds.precision},
        "cells": [_cell(plan, cell, dataset) for cell in plan.cells],
        "eval": asdict(plan.profile.eval), "measure": {**asdict(plan.profile.measure), "batch_sizes": list(plan.profile.measure.batch_sizes)},
    }


def _cell(plan: RunPlan, cell: Any, dataset: ReidDataset) -> dict[str, Any]:
    choice, profile = cell_recipe(plan, cell), cell_profile(plan, cell)
    train = asdict(profile.train)
    return {
        "id": cell.id, "backbone": cell.backbone, "neck": cell.neck, "axes": dict(cell.axes),
        "expect": None if cell.expect is None else cell.expect.status,
        "init": choice.init, "weights": choice.weights or None,
        "recipe": {**choice.to_dict(), "profile": profile.name, "follows": profile.follows, "departures": list(profile.departures)},
        "settings": cell_settings(plan, cell, dataset).to_dict(),
        "train": {**train, "milestones": list(profile.train.milestones)},
        "origins": {key: origin for key, _, origin in profile.resolved() if origin != BASE and key.split(".")[0] in ("model", "train")},
    }


def plan_text(described: dict[str, Any]) -> str:
    """The plan for a reader: one block per cell, its recipe and why, then every setting it trains with."""
    data, auto = described["dataset"], described["auto_seeds"]
    seeds = seeds_text(described["seeds"]) + (f" to start (--seeds auto: up to {auto['max_seeds']} per cell)" if auto else "")
    lines = [
        f"dry run: grid {described['grid']['name']}, profile {described['profile']['name']} (written for "
        f"{described['profile']['written_for']}), {len(described['cells'])} cell(s) x {seeds}, "
        f"device {described['device']}, dtype {described['dtype']}",
        f"data: {data['spec']} ({data['name']}, native input {_size(data['native_size'])}; "
        f"{'the input size follows it' if data['follow_dataset_size'] else 'the input size does not follow it'})",
    ]
    for cell in described["cells"]:
        recipe, settings = cell["recipe"], cell["settings"]
        lines += [
            f"cell {cell['id']}" + (f" (expected {cell['expect']})" if cell["expect"] else "") + f": {recipe['why']}",
            f"  initialisation: {cell['init']}" + (f" ({cell['weights']})" if cell["weights"] else "")
            + f"; recipe {recipe['recipe']}, follows {recipe['follows'] or 'no upstream recipe'}"
            + (f", {counted(len(recipe['departures']), 'departure')}" if recipe["departures"] else ""),
            f"  input {_size(settings['img_size'])}, depth {settings['depth']}, stride {settings['stride']}",
            "  train: " + ", ".join(f"{k}={v}" for k, v in cell["train"].items()),
            "  model: " + ", ".join(f"{k}={v}" for k, v in settings.items()),
        ]
    lines.append("eval: " + ", ".join(f"{k}={v}" for k, v in described["eval"].items()))
    lines.append("measure: " + ", ".join(f"{k}={v}" for k, v in described["measure"].items()))
    lines.append("nothing was trained and no run directory was created (drop --dry-run to run it)")
    return "\n".join(lines)


def _size(size: list[int]) -> str:
    return f"{size[0]}x{size[1]}"
