"""What a run says on the console: its header, its data line, one line per finished cell."""
from __future__ import annotations

from typing import Any

from reidbench.harness.placement import RunData, TestData
from reidbench.harness.plan import RunPlan, cell_recipe
from reidbench.runtime.distributed import World
from reidbench.runtime.text import counted, seeds_text
from reidbench.schema import CellState, axis_text
from reidbench.variants.grid import Cell, Grid


def run_header(plan: RunPlan, root: Any, world: World) -> str:
    profile = plan.profile
    follows = ""
    if profile.follows:
        follows = f" (follows {profile.follows}" + (f"; departs in {counted(len(profile.departures), 'way')}, listed in the report)" if profile.departures else ")")
    return (
        f"run {root}: grid {plan.grid.name}, {len(plan.cells)} cell(s) x {plan.seeds} seed(s) ({seeds_text(plan.first_round_seeds)}){_auto_seeds(plan)}, profile {profile.name}"
        f"{follows}, device {plan.device}, dtype {plan.dtype}"
        + (f", {world.world_size} processes (DDP)" if world.distributed else "")
        + (", transformer blocks compiled" if plan.compile else "")
        + (", training steps replayed as CUDA graphs (--no-cuda-graphs: eager)" if plan.cuda_graphs else "")
        + "\nrecipes:\n" + "\n".join(recipe_lines(plan))
    )


def _auto_seeds(plan: RunPlan) -> str:
    auto = plan.auto_seeds
    if auto is None:
        return ""
    return (f" to start, then one more per round to each cell whose 95% interval of mAP is wider than ±{auto.precision:g} points, "
            f"up to {auto.max_seeds} (--seeds auto)")


def recipe_lines(plan: RunPlan) -> list[str]:
    """Which recipe the cells train with and why, one line per reason (the cells sharing it named)."""
    groups: dict[str, list[str]] = {}
    for cell in plan.cells:
        groups.setdefault(cell_recipe(plan, cell).why, []).append(cell.id)
    return [f"  {', '.join(cells)}: {why}" for why, cells in groups.items()]


def cells_line(grid: Grid, cells: list[Cell], seeds: int) -> str:
    """How many cells (and trainings) a command is about to run, said before anything runs."""
    backbones = len({c.backbone for c in cells})
    necks = len({c.neck for c in cells})
    axes = "".join(f" x {key} ({len({axis_text(dict(c.axes)[key]) for c in cells if key in dict(c.axes)})})" for key, _ in grid.axes)
    trainings = f" x {seeds} seed(s) = {len(cells) * seeds} trainings" if seeds > 1 else ""
    return f"grid {grid.name}: {len(cells)} cell(s) = {backbones} backbone(s) x {necks} neck(s){axes}{trainings}"


def data_line(data: RunData) -> str:
    """The images each split really uses, what was skipped and why, and the chance level."""
    info = data.info
    skipped = info.get("unreadable", {})

    def split(name: str, images: Any) -> str:
        lost = f" ({skipped[name]} unreadable, skipped)" if skipped.get(name) else ""
        return f"{name} {len(images)} images{lost}"

    unmatched = info.get("queries_without_match") or 0
    scored = f" — {len(data.query) - unmatched} of them scored, {unmatched} without a match in the gallery" if unmatched else ""
    incomplete = sum((info.get("incomplete") or {}).values())
    modal = (f"{'+'.join(data.dataset.modalities)} samples"
             + (f" ({incomplete} skipped: a modality's file missing)" if incomplete else "") + "; ") if data.dataset.multimodal else ""
    examples = info.get("unreadable_examples") or []
    first = f"; first unreadable: {examples[0]}" if examples else ""
    val = info.get("validation")
    carved = (f" (after {val['ids']} ids, {val['images']} images, went to a validation split of {val['query']} query and "
              f"{val['gallery']} gallery images)") if val else ""
    return (
        f"data: {data.dataset.name} — {modal}{split('train', data.train)} / {info['used']['train']['ids']} ids{carved}, "
        f"{split('query', data.query)}{scored}, {split('gallery', data.gallery)}, {data.dataset.num_cameras} cameras "
        f"(images from {info['cache']['location']}: {info['cache']['why']}); "
        f"chance level: mAP {info['chance']['mAP']:.1%}, rank-1 {info['chance']['rank1']:.1%} (a random ranking's expected score){first}"
    )


def test_data_line(test: TestData) -> str:
    """A cross-domain test set: what it holds and what a random model scores on it."""
    info, unmatched = test.info, test.info.get("queries_without_match") or 0
    scored = f" ({unmatched} without a match in the gallery)" if unmatched else ""
    return (f"test set {test.spec}: {test.name} — query {len(test.query)} images{scored}, gallery {len(test.gallery)}; "
            f"chance level: mAP {info['chance']['mAP']:.1%}, rank-1 {info['chance']['rank1']:.1%}")


def phase_breakdown(phases: dict[str, float]) -> str:
    """A record's `phase_seconds` as ' (probe 1 s, train 31 s, evaluate 2 s, measure 18 s)'; '' when it has none."""
    if not phases:
        return ""
    return " (" + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in phases.items()) + ")"


def _after_first_epoch(training: dict[str, Any]) -> str:
    """With a compile or a capture in the first epoch, the later epochs' speed is the one to compare."""
    steady = training.get("steady_img_per_s")
    if steady is None or not (training.get("compiled") or training.get("graphed")):
        return ""
    return f" ({steady:.0f} img/s after a first epoch of {training.get('first_epoch_seconds', 0):.0f} s)"


def summary_line(record: dict[str, Any]) -> str:
    """How a cell ended, in one line: its metrics, training speed and where its time went, or its error."""
    status = record["status"]
    if status == CellState.DONE and record.get("metrics"):
        m, t = record["metrics"], record.get("training") or {}
        return (
            f"done — mAP {m['mAP']:.1%}, rank-1 {m['rank1']:.1%}, mINP {m['mINP']:.1%}; "
            f"trained {t.get('seconds', 0):.0f} s at {t.get('img_per_s', 0):.0f} img/s" + _after_first_epoch(t)
            + f"; cell {record['wall_seconds']:.0f} s" + phase_breakdown(record.get("phase_seconds", {}))
        )
    return f"{status}" + (f" — {record['error']}" if record.get("error") else "")
