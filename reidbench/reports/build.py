"""`reidbench report`: from a run directory (and optionally a baseline run) to report.md, report.html,
results.csv and the PNGs, plus the outcome of the `--fail-on` gate.

Everything comes from the run directory alone, so a report can be rendered
on another machine, long after the run, from a copied folder.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from reidbench.data.records import distractors_text
from reidbench.errors import UsageError
from reidbench.harness.console import phase_breakdown
from reidbench.profiles.profile import STANDARD_RERANK
from reidbench.runtime.files import write_atomic
from reidbench.runtime.text import counted, printable
from reidbench.rundir import RESULTS_CSV, RESULTS_UNITS, RunDir
from reidbench.reports.compare import Comparison, Crossing, GateOutcome, Threshold, compare, gate
from reidbench.reports.comparisons import Family, comparisons_csv, family
from reidbench.reports.forest import comparisons_section, forest_plots
from reidbench.reports.axis_plots import axis_plots
from reidbench.reports.curves import curve_plots, validation_section
from reidbench.reports.load import LoadedRun, frame_units, load_run
from reidbench.reports.modalities import modality_section
from reidbench.reports.ranklists import rank_list_section
from reidbench.schema import is_number, units_document
from reidbench.reports.plots import all_plots
from reidbench.reports.render import BETTER, WORSE, ReportDoc, Section, table_markdown, to_html, to_markdown
from reidbench.reports.summary import CellSummary, below_chance, summarize
from reidbench.reports.tables import Table, compact_table, report_table
from reidbench.variants.settings import PATCH_SIZE


@dataclass
class ReportResult:
    out: Path
    files: list[Path]
    table: Table
    run: LoadedRun
    gate: GateOutcome = field(default_factory=GateOutcome)
    gated: bool = False
    """Whether --fail-on thresholds were checked."""
    comparisons: Family = field(default_factory=Family)
    compact: Optional[Table] = None
    """The short table printed first (cell, status, mAP, rank-1, GFLOPs, parameters, latency)."""
    below_chance: dict[str, str] = field(default_factory=dict)
    """Cell -> why its mAP is no better than chance."""

    @property
    def crossings(self) -> list[Crossing]:
        return self.gate.crossings

    @property
    def markdown_table(self) -> str:
        """What `reidbench report` prints: the short table (report.md holds both)."""
        return table_markdown(self.compact or self.table)


def make_report(
    run_root: Path, out: Optional[Path] = None, baseline_root: Optional[Path] = None,
    thresholds: Optional[list[Threshold]] = None, extra_comparisons: Optional[list[str]] = None, strict: bool = False,
    grid: Optional[str] = None, rank_lists: bool = True,
) -> ReportResult:
    """Read, summarize, compare, plot, render and write; returns what was written and the gate's outcome.

    `extra_comparisons`: `--compare A,B` texts added to the grid's declared family; `strict`: the gate
    compares plain means (`--fail-on-strict`); `grid`: the grid (name or file) whose [compare] declares the
    family, instead of the run's grid.toml (`--grid`, for an archived run that has none); `rank_lists`: draw the
    rank-list section (`--no-rank-lists` leaves it out, and the dataset unopened).
    """
    out = check_out(out if out is not None else RunDir(run_root).report_dir)
    run = load_run(run_root)
    summaries = summarize(run)
    found = family(run, summaries, extra_comparisons or [], grid)
    comparison = None
    if baseline_root is not None:
        baseline = load_run(baseline_root)
        comparison = compare(run, summaries, baseline, summarize(baseline))
    outcome = gate(run, summaries, comparison, thresholds, strict) if comparison and thresholds else GateOutcome()
    batch_sizes = run.batch_sizes()
    below = below_chance(summaries, run.chance())
    table = report_table(summaries, batch_sizes, comparison, below)
    plots = all_plots(summaries, run.logs, batch_sizes, run.chance().get("mAP")) + axis_plots(summaries, batch_sizes)
    doc = ReportDoc(
        banner=what_was_trained(run),
        title=f"reidbench report: {run.name}",
        header=header_items(run),
        table=table,
        compact=compact_table(summaries, batch_sizes, comparison, below),
        warnings=list(dict.fromkeys([f"{cell}: {why}" for cell, why in below.items()] + run.warnings + [
            f"baseline {comparison.baseline.root}: {w}" for w in (comparison.baseline.warnings if comparison else [])])),
        before_plots=_sections(run, comparison, thresholds, outcome) + [comparisons_section(found)] + [
            section for section in [modality_section(run), _cross_domain_section(run), validation_section(run)] if section is not None],
        plots=forest_plots(found) + plots + curve_plots(run, summaries),
        after_plots=[s for s in [rank_list_section(run) if rank_lists else None] if s is not None] + [_notes_section(summaries)]
        + [s for s in [_time_section(run)] if s.items],
    )
    try:
        files = write_report(doc, run, out, comparisons_csv(found))
    except OSError as exc:
        raise UsageError(f"cannot write the report into {out}: {exc.strerror or exc}.") from None
    return ReportResult(out, files, table, run, outcome, gated=bool(comparison and thresholds), comparisons=found,
                        compact=doc.compact, below_chance=below)


def check_out(out: Path) -> Path:
    """A report's folder: never a file, and never a run directory, whose results.csv the report's own would replace."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; name a folder for report.md, report.html, results.csv and the PNGs.")
    if RunDir(out).looks_like_run():
        raise UsageError(
            f"--out {out} is a run directory: the report's results.csv would replace the run's own. Name another folder, "
            f"e.g. {RunDir(out).report_dir} (the default for a run is RUN_DIR/report)."
        )
    return out


def write_report(doc: ReportDoc, run: LoadedRun, out: Path, comparisons: str) -> list[Path]:
    """Each file atomically, so a report open in a browser is never half-replaced."""
    files = []
    for plot in doc.plots + [f for s in doc.before_plots + doc.after_plots for f in s.figures]:
        write_atomic(out / plot.filename, plot.png)
        files.append(out / plot.filename)
    frame = run.frame()
    units = json.dumps(units_document(frame_units([str(c) for c in frame.columns])), indent=2) + "\n"
    for name, text in (("report.md", to_markdown(doc)), ("report.html", to_html(doc)), (RESULTS_CSV, frame.to_csv(index=False)),
                       (RESULTS_UNITS, units), ("comparisons.csv", comparisons)):
        write_atomic(out / name, printable(text))
        files.append(out / name)
    return files


def header_items(run: LoadedRun) -> list[tuple[str, str]]:
    """The environment a reader needs to trust the numbers: device, versions, dtype, input, data, profile, FLOPs.

    Each line comes from run.json / environment.json, falling back to what the records hold; a
    line whose source is missing or malformed is left out rather than failing the report.
    """
    items: list[tuple[str, str]] = []
    builds = (_run_item, _grid_item, _device_item, _software_item, _input_item, _dataset_item,
              _initialisation_item, _profile_item, _recipes_item, _training_item, _stage1_item, _evaluation_item, _latency_item, _flops_item, _seeds_item, _commit_item)
    if run.archived is not None:  # the other lines would read an absent fact (no weights, no mode) as random or eager
        builds = (_run_item, _flops_item)
    for build in builds:
        try:
            item = build(run)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError):
            item = None
        if item is not None:
            items.append(item)
    return items


Item = Optional[tuple[str, str]]


def _options(run: LoadedRun) -> dict:
    return run.records[0].get("options") or {}


ARCHIVED = ("rebuilt from its results.csv alone (an archived run: no run.json, no cell records, no queries.npz), so the "
            "header, the training curves and the cells' notes are not available, and query-level intervals are unavailable: "
            "a one-seed cell shows its mean without an interval, and a comparison needs at least two seeds in each cell")
"""What a report of an archived run lacks, said in its header."""


def _run_item(run: LoadedRun) -> Item:
    if run.archived is not None:
        return "Run", f"{run.root} — {ARCHIVED}"
    meta = run.meta
    facts = [f"status {meta.get('status', 'unknown (no run.json)')}"]
    if meta.get("started"):
        facts.append(f"started {meta['started']}" + (f", finished {meta['finished']}" if meta.get("finished") else ""))
    return "Run", f"{run.root} — " + ", ".join(facts)


def _grid_item(run: LoadedRun) -> Item:
    grid = run.meta.get("grid") or {}
    return ("Grid", f"{grid.get('name')} ({grid.get('source')}), {len(grid.get('cells') or [])} cells") if grid else None


def _device_item(run: LoadedRun) -> Item:
    env, options = run.environment, _options(run)
    device = str(env.get("device") or run.meta.get("device") or options.get("device") or "unknown")
    parts = [f"{device} ({env['device_name']})" if env.get("device_name") else device]
    dtype = env.get("dtype") or run.meta.get("dtype") or options.get("dtype")
    if dtype:
        parts.append(f"dtype {dtype}" + (" (autocast)" if env.get("autocast") else ""))
    if device.startswith("cuda"):
        parts += [f"CUDA {env.get('cuda')}", f"TF32 matmul {env.get('tf32_matmul')}",
                  f"cudnn.benchmark {options.get('cudnn_benchmark', env.get('cudnn_benchmark'))}"]
    elif env.get("torch_threads"):
        parts.append(counted(int(env["torch_threads"]), "torch thread"))
    return "Device", ", ".join(parts)


def _software_item(run: LoadedRun) -> Item:
    env = run.environment
    packages = env.get("packages") or {}
    parts = [f"python {env['python']}"] if env.get("python") else []
    parts += [f"{k} {packages[k]}" for k in ("torch", "timm", "open_clip_torch") if packages.get(k)]
    return ("Software", ", ".join(parts)) if parts else None


def _input_item(run: LoadedRun) -> Item:
    settings = run.meta.get("settings") or run.records[0].get("settings") or {}
    if not settings:
        return None
    text = _input_text(settings)
    per_cell = {_input_text(r["settings"]) for r in run.records if r.get("settings")}
    if len(per_cell) > 1 or (per_cell and text not in per_cell):
        return "Input", f"varies per cell ({'; '.join(sorted(per_cell))}); each record's settings say which"
    return "Input", text


def _input_text(settings: dict[str, Any]) -> str:
    (h, w), stride = settings["img_size"], settings["stride"]
    tokens = f" → {(h - PATCH_SIZE) // stride + 1}×{(w - PATCH_SIZE) // stride + 1} token grid"
    return f"{h}×{w}, stride {stride}{tokens}, depth {settings.get('depth')}"


def _dataset_item(run: LoadedRun) -> Item:
    """The images each split really used (unreadable files skipped) and the queries the protocol could score."""
    dataset = run.meta.get("dataset") or {}
    if not dataset.get("counts"):
        return ("Dataset", str(dataset["spec"])) if dataset.get("spec") else None
    counts, used, skipped = dataset["counts"], dataset.get("used") or {}, dataset.get("unreadable") or {}

    def split(name: str) -> str:  # the dataset's own counts (data info's) unless images were skipped
        found = counts[name]["images"]
        images = (used.get(name) or {}).get("images", found)
        ids = (used.get(name) or {}).get("ids", counts[name]["ids"]) if skipped.get(name) else counts[name]["ids"]
        lost = f" of {found} ({skipped[name]} unreadable, skipped)" if skipped.get(name) else ""
        return f"{name} {ids} ids / {images}{lost} images"

    unmatched = dataset.get("queries_without_match") or 0
    scored = f", {unmatched} queries without a gallery match (not scored)" if unmatched else ""
    text = (f"{dataset.get('name')} {dataset.get('version') or ''} — {split('train')}, {split('query')}{scored}, "
            f"{split('gallery')}{_distractors(counts['gallery'])}, {counts['train'].get('cameras')} cameras")
    modalities, incomplete = dataset.get("modalities") or ["rgb"], sum((dataset.get("incomplete") or {}).values())
    if len(modalities) > 1:
        text += (f"; each sample {' + '.join(modalities)}"
                 + (f" ({incomplete} samples skipped: a modality's file missing)" if incomplete else "")
                 + f"; gallery entries of the query's identity removed by {dataset.get('exclusion', 'camera')}")
    chance = run.chance()
    if len(chance) == 2:
        text += f"; chance level (a random ranking) mAP {chance['mAP']:.1%}, rank-1 {chance['rank1']:.1%}"
    return "Dataset", text


def _distractors(counts: dict[str, Any]) -> str:
    text = distractors_text(int(counts.get("distractors") or 0))
    return f" ({text})" if text else ""


def _profile_item(run: LoadedRun) -> Item:
    profile = run.meta.get("profile") or {}
    if not profile:
        return None
    train = profile.get("train") or {}
    epochs = counted(int(train["epochs"]), "epoch") if is_number(train.get("epochs")) else f"{train.get('epochs')} epoch(s)"
    text = (f"{profile.get('name')} — {profile.get('description', '')}; {epochs}, "
            f"batch {train.get('p')}×{train.get('k')} (P×K), {train.get('optimizer')} lr {train.get('lr')}")
    if profile.get("follows"):
        text += f". Follows {profile['follows']}"
        departures = profile.get("departures") or []
        text += (f", departing from it in {'this way' if len(departures) == 1 else 'these ways'}: " + "; ".join(departures)) if departures else ", with no departure"
    return "Profile", text


def what_was_trained(run: LoadedRun) -> str:
    """The banner: where the backbones' weights came from (random initialisation, or pretrained and from what) and
    whether the data are synthetic, said in plain words. An archived run's results.csv records neither."""
    if run.archived is not None:
        return ("This report was rebuilt from a results.csv alone, which records neither where the backbones' weights came "
                "from (random initialisation or pretrained) nor which dataset was used: the page that keeps this run says.")
    random = sorted({r["backbone"] for r in run.records if not r.get("weights") and r.get("status") not in ("xfail",)})
    pretrained = {r["backbone"]: _weights_origin(r["weights"], short=True) for r in run.records if r.get("weights")}
    spec = str((run.meta.get("dataset") or {}).get("spec") or "")
    synthetic = spec.startswith("synthetic") or (run.meta.get("dataset") or {}).get("name") == "synthetic"
    if not random and not synthetic and not pretrained:
        return ""
    parts = []
    if random:
        parts.append(f"{'the backbones' if len(random) > 1 else 'the backbone'} {', '.join(random)} started from random "
                     "initialisation, not from pretrained weights")
    if pretrained:
        parts.append(f"{'the backbones' if len(pretrained) > 1 else 'the backbone'} {', '.join(sorted(pretrained))} started "
                     "from pretrained weights (" + "; ".join(f"{b} from {pretrained[b]}" for b in sorted(pretrained)) + ")")
    if synthetic:
        parts.append("the data are reidbench's synthetic set, not a real ReID dataset")
    text = "; ".join(parts)
    if random:
        text += (". These numbers compare architectures trained from scratch" + (" on that data" if synthetic else "")
                 + ": they are neither ReID results nor a comparison of CLIP and ImageNet pretraining (a 'clip' cell is "
                 "CLIP's architecture, not CLIP's weights)")
    elif synthetic:
        text += ": these numbers are not ReID results"
    return text[0].upper() + text[1:] + "."


def _weights_origin(weights: dict[str, Any], short: bool = False) -> str:
    """A record's weights: the name, revision and file it resolved to, or the local file; with its SHA-256 unless short."""
    hub = weights.get("hub")
    if hub:
        origin = f"{hub['spec']} ({hub['repo']}@{hub['revision'][:12] if short else hub['revision']}, {hub['file']}"
    else:
        origin = f"{weights.get('path')} ({weights.get('format', '?')}"
    return origin + (")" if short else f", SHA-256 {weights.get('sha256', '?')})")


def _initialisation_item(run: LoadedRun) -> Item:
    """Each backbone's starting weights: random, or the name (revision, file) or local file, with its SHA-256."""
    found: dict[str, str] = {}
    for record in run.records:
        weights = record.get("weights") or {}
        found.setdefault(record["backbone"], _weights_origin(weights) if weights else "random initialisation")
    return ("Initialisation", "; ".join(f"{b}: {t}" for b, t in found.items())) if found else None


def _recipes_item(run: LoadedRun) -> Item:
    """Which recipe each cell trained with and why (its record's recipe section): a recipe is chosen per cell from its
    initialisation, and a grid's per-backbone recipe or a [train] axis makes it differ from the profile's."""
    base = (run.meta.get("profile") or {}).get("name")
    used: dict[tuple[str, str], tuple[dict[str, Any], list[str]]] = {}
    for record in run.records:
        recipe = record.get("recipe") or {}
        if recipe.get("why") or (recipe.get("profile") and recipe["profile"] != base):
            used.setdefault((recipe.get("profile"), recipe.get("why") or ""), (recipe, []))[1].append(record["cell"])
    if not used:
        return None
    parts = [
        f"{name} for {', '.join(dict.fromkeys(cells))}" + (f" ({why})" if why else "")
        + ("" if name == base else f": follows {recipe.get('follows') or 'no upstream recipe'}"
           + (f", departing in {'this way' if len(recipe['departures']) == 1 else 'these ways'}: {'; '.join(recipe['departures'])}" if recipe.get("departures") else ""))
        for (name, why), (recipe, cells) in used.items()
    ]
    return "Recipes", " | ".join(parts)


def _training_item(run: LoadedRun) -> Item:
    """How the cells were trained (eager, graph-replayed, compiled): their train img/s and drop-path draws depend on it."""
    ways: dict[str, int] = {}
    for record in run.records:
        training = record.get("training")
        if not isinstance(training, dict):
            continue
        replay = "steps replayed as CUDA graphs" if training.get("graphed") else ""
        way = ", ".join(filter(None, ("compiled blocks" if training.get("compiled") else "", replay))) or "eager steps"
        if (training.get("world_size") or 1) > 1:
            way += f", DDP over {training['world_size']} processes"
        if training.get("image_cache"):
            way += f", images from {training['image_cache']}"
        ways[way] = ways.get(way, 0) + 1
    if not ways:
        return None
    return "Training", "; ".join(f"{way} ({n} cell{'s' if n != 1 else ''})" for way, n in ways.items())


def _stage1_item(run: LoadedRun) -> Item:
    """CLIP-ReID's prompt-learning stage, where cells ran it before training: its cost is not in the train seconds."""
    parts = []
    for record in run.records:
        stage1 = (record.get("training") or {}).get("stage1")
        if isinstance(stage1, dict) and is_number(stage1.get("seconds")) and is_number(stage1.get("final_loss")):
            parts.append(f"{record['cell']} seed {record.get('seed')}: {stage1.get('epochs_done')} epochs, "
                         f"final loss {stage1['final_loss']:.3f}, {stage1['seconds']:.1f} s")
    if not parts:
        return None
    return "Stage 1 (CLIP-ReID identity prompts, before training)", "; ".join(parts)


def _evaluation_item(run: LoadedRun) -> Item:
    ev = (run.meta.get("profile") or {}).get("eval") or {}
    if not ev:
        return None
    text = (f"{ev.get('metric')} distance, features {'L2-normalized' if ev.get('normalize') else 'not normalized'}, "
            f"flip test {'on' if ev.get('flip') else 'off'}")
    if ev.get("rerank"):
        setting = (ev.get("rerank_k1"), ev.get("rerank_k2"), ev.get("rerank_lambda"))
        standard = "the standard setting" if setting == STANDARD_RERANK else (
            "NOT the standard k1 20, k2 6, λ 0.3: re-ranked numbers are comparable only to runs with this setting")
        text += f"; k-reciprocal re-ranking (columns 're-ranked') with k1 {setting[0]}, k2 {setting[1]}, λ {setting[2]} — {standard}"
    return "Evaluation", text


def _latency_item(run: LoadedRun) -> Item:
    entry = next((e for r in run.records for e in r.get("latency") or [] if "median_ms" in e), None)
    if entry is None:
        return None
    repeats = _options(run).get("repeats", entry.get("repeats"))
    warmup = counted(int(entry["warmup"]), "warm-up call") if is_number(entry.get("warmup")) else "? warm-up calls"
    return "Latency", f"{entry.get('timer')} timer, {warmup}, up to {repeats} repeats per batch size; median and p90"


def _flops_item(run: LoadedRun) -> Item:
    convention = run.environment.get("flop_convention") or "1 MAC = 2 FLOPs; gmacs by fvcore, gflops by torch FlopCounterMode"
    return "FLOPs", f"{convention}; counted at batch 1, inference"


def _seeds_item(run: LoadedRun) -> Item:
    seeds = run.meta.get("seeds") or run.environment.get("seeds")
    return ("Seeds", ", ".join(str(s) for s in seeds)) if seeds else None


def _commit_item(run: LoadedRun) -> Item:
    commit = run.environment.get("git_commit")
    return ("Commit", str(commit)) if commit else None


def _sections(
    run: LoadedRun, comparison: Optional[Comparison], thresholds: Optional[list[Threshold]], outcome: GateOutcome,
) -> list[Section]:
    sections = []
    if run.issues:
        sections.append(Section(
            "Missing or damaged cells",
            "These cells have no readable record: the table shows them with their status, and each plot "
            "lists them among the cells it could not draw.",
            [f"{i.cell} seed {i.seed}: {i.kind} — {i.detail}" for i in run.issues], tone="warn",
        ))
    if comparison is not None:
        items = [f"Settings differ — {d}" for d in comparison.differences]
        items += [f"Only in this run: {', '.join(comparison.only_in_run)}"] if comparison.only_in_run else []
        items += [f"Only in the baseline: {', '.join(comparison.only_in_baseline)}"] if comparison.only_in_baseline else []
        items += [f"{cell}: {old} in the baseline, {new} now" for cell, old, new in comparison.status_changes]
        if not items:
            items.append("Same cells, same statuses and the same settings as the baseline.")
        sections.append(Section(
            f"Against the baseline {comparison.baseline.name}",
            f"Baseline: {comparison.baseline.root}. Under each number, its change against the baseline: {BETTER} improved, "
            f"{WORSE} regressed (accuracy in percentage points, costs relative, means over seeds).",
            items, tone="warn" if comparison.differences else "",
        ))
    if thresholds:
        spec = ",".join(t.text for t in thresholds)
        if comparison is None:
            return sections
        crossings = outcome.crossings
        verdict = f"FAILED: {len(crossings)} regression(s)" if crossings else "passed"
        items = [f"{c.cell}: {c.what}" for c in crossings] + outcome.passes + outcome.notes
        rules = "; ".join(t.describe() for t in thresholds)
        sections.append(Section(f"Regression gate (--fail-on {spec}): {verdict}", rules + ". A change fails only when "
                                "its whole 95 % interval lies beyond the threshold; each line names the rule that made "
                                "the interval. A cell done in the baseline and not done now is a regression too.",
                                items, tone="bad" if crossings else "good"))
    return sections


def _cross_domain_section(run: LoadedRun) -> Optional[Section]:
    """Train -> test: each cell's accuracy on the other test sets (--test-data), mean over the seeds that have it."""
    scores: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for record in run.records:
        for spec, metrics in (record.get("cross_domain") or {}).items():
            if is_number(metrics.get("mAP")) and is_number(metrics.get("rank1")):
                scores.setdefault((record["cell"], spec), []).append((metrics["mAP"], metrics["rank1"]))
    if not scores:
        return None
    trained_on = (run.meta.get("dataset") or {}).get("spec", "the run's dataset")
    items = [
        f"{cell} → {spec}: mAP {100 * sum(m for m, _ in v) / len(v):.1f} %, R-1 {100 * sum(r for _, r in v) / len(v):.1f} %"
        + (f" (mean of {len(v)} seeds)" if len(v) > 1 else "")
        for (cell, spec), v in scores.items()
    ]
    return Section(f"Cross-domain: trained on {trained_on}, tested on other sets",
                   "Each test set under its own protocol (Market-1501 rules, its own query and gallery).", items)


def _notes_section(summaries: list[CellSummary]) -> Section:
    """The cells' notes (clamped windows, weights) and warnings, each once, and why an expected failure is expected."""
    items: list[str] = []
    for s in summaries:
        if s.expected_reason:
            items.append(f"{s.cell} is expected to fail: {s.expected_reason}")
    for text in dict.fromkeys(n for s in summaries for n in s.notes + [f"warning: {w}" for w in s.warnings]):
        items.append(text)
    return Section("Notes", "", items)


def _time_section(run: LoadedRun) -> Section:
    """Each record's wall time by phase, and its slowest measurements: what to trim when a grid is too slow."""
    items = []
    for record in run.records:
        phases = record.get("phase_seconds") or {}
        if not phases or not is_number(record.get("wall_seconds")):
            continue
        line = f"{record.get('cell')} seed {record.get('seed')}: {record['wall_seconds']:.0f} s" + phase_breakdown(phases)
        slowest = sorted((record.get("measure_seconds") or {}).items(), key=lambda kv: -kv[1])[:2]
        if slowest:
            line += "; slowest measurements: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in slowest)
        items.append(line)
    return Section("Where the time went", "Wall time of each cell by phase (its record's phase_seconds and measure_seconds).", items)


def summary_lines(result: ReportResult) -> list[str]:
    """What `reidbench report` prints to stderr besides the table."""
    banner = what_was_trained(result.run)
    lines = [f"read this first: {banner}"] if banner else []
    lines += [f"warning: {cell}: {why}" for cell, why in result.below_chance.items()]
    lines += [f"warning: {w}" for w in result.run.warnings]
    lines += [f"{i.kind}: {i.cell} seed {i.seed} — {i.detail}" for i in result.run.issues]
    plots = sum(1 for f in result.files if f.suffix == ".png")
    lines.append(f"report: wrote {result.out}/report.md, report.html, {RESULTS_CSV} (units in {RESULTS_UNITS}), comparisons.csv and {plots} plots")
    return lines


def gate_lines(result: ReportResult, spec: str) -> list[str]:
    if not result.gated:
        return []
    outcome = result.gate
    head = (f"regression gate --fail-on {spec}: FAILED, {len(outcome.crossings)} regression(s)" if outcome.crossings
            else f"regression gate --fail-on {spec}: passed")
    return ([head] + [f"  {c.cell}: {c.what}" for c in outcome.crossings] + [f"  ok {p}" for p in outcome.passes]
            + [f"  note: {n}" for n in outcome.notes])
