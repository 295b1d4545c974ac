"""The run directory's files: one home for each name, one policy for a missing or damaged file, typed epoch entries."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from reidbench.errors import UsageError
from reidbench.rundir import DIR_NAMES, FILE_NAMES, CellDir, RunDir
from reidbench.schema import EpochEntry, GridRef, RunMeta, RunState, SchemaError

ENTRY = EpochEntry(3, loss=4.25, id_loss=3.0, triplet_loss=1.25, accuracy=0.5, lr=3.5e-4, seconds=2.0, img_per_s=64.0)


def _named_paths(obj: object) -> set[str]:
    """The names of the paths an object's properties give (its folder itself aside)."""
    kinds = type(obj).__dict__.items()
    paths = [getattr(obj, name) for name, value in kinds if isinstance(value, property) and name not in ("path", "events")]
    return {p.name for p in paths if isinstance(p, Path)}


def test_every_name_of_the_layout_is_a_path_of_run_dir_or_cell_dir(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    cell = run.cell("vit768-ms@stride=12", 2)
    assert cell.path == tmp_path / "cells" / "vit768-ms@stride=12" / "seed2" == run.cell_dir("vit768-ms@stride=12", 2)
    assert cell.record == run.record_path("vit768-ms@stride=12", 2)
    assert _named_paths(run) | _named_paths(cell) == set(FILE_NAMES) | set(DIR_NAMES)


def test_cell_folders_on_disk_are_found_with_or_without_a_record(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert not run.looks_like_run() and run.slots_on_disk() == [] and run.record_paths() == []
    run.cell("a-none", 0).path.mkdir(parents=True)
    run.cell("b-ms", 1).path.mkdir(parents=True)
    run.cell("b-ms", 1).record.write_text("{}")
    (run.cells_dir / "a-none" / "seedx").mkdir()
    assert run.looks_like_run()
    assert sorted(run.slots_on_disk()) == [("a-none", 0), ("b-ms", 1)]
    assert run.record_paths() == [run.cell("b-ms", 1).record]


def _meta() -> RunMeta:
    return RunMeta(status=RunState.FINISHED, grid=GridRef("tiny", "tiny.toml", ["vit768-none"]), seeds=[0], device="cpu", dtype="fp32")


def test_run_json_missing_is_none_or_a_clear_error_for_those_that_need_it(tmp_path: Path) -> None:
    for root in (tmp_path, tmp_path / "absent"):
        assert RunDir(root).read_meta() is None
        with pytest.raises(UsageError, match="is not a reidbench run directory: it has no run.json") as caught:
            RunDir(root).meta()
        assert not isinstance(caught.value, SchemaError)
    (tmp_path / "file").write_text("")
    assert RunDir(tmp_path / "file").read_meta() is None


@pytest.mark.parametrize("content, says", [
    ("{not json", "is damaged and cannot be read"),
    ("[]", "expected a JSON object"),
    ("{}", "lacks the field 'status'"),
    ('{"status": "done"}', "status is 'done'; expected one of running"),
])
def test_a_damaged_or_wrongly_shaped_run_json_names_the_file(tmp_path: Path, content: str, says: str) -> None:
    run = RunDir(tmp_path)
    run.run_json.write_text(content)
    for read in (run.read_meta, run.meta):
        with pytest.raises(SchemaError) as caught:
            read()
        assert str(run.run_json) in str(caught.value) and says in str(caught.value)
        assert "Restore it from a backup" in str(caught.value)


def test_run_json_round_trips(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.run_json.write_text(json.dumps(_meta().to_dict()))
    assert run.meta() == run.read_meta() == _meta()


def test_environment_json_follows_the_same_policy(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert run.read_environment() is None
    run.environment_json.write_text('["not", "a", "table"]')
    with pytest.raises(SchemaError, match=r"environment.json is \[.*expected a table"):
        run.read_environment()
    run.environment_json.write_text('{"torch": "2.14.1"}')
    assert run.read_environment() == {"torch": "2.14.1"}


def test_an_epoch_entry_round_trips_through_the_train_log(tmp_path: Path) -> None:
    cell = CellDir(tmp_path / "cell")
    assert cell.read_train_log().entries == [] and cell.read_train_log().last_epoch == 0
    first = EpochEntry.from_dict({**ENTRY.to_dict(), "epoch": 1, "grad_norm": 0.5}, "test")
    assert first.extra == {"grad_norm": 0.5} and first.to_dict()["grad_norm"] == 0.5  # another version's field stays
    cell.write_train_log([first])
    cell.append_epoch(ENTRY)
    log = cell.read_train_log()
    assert log.entries == [first, ENTRY] and log.skipped == 0 and log.last_epoch == 3
    assert json.loads(cell.train_log.read_text().splitlines()[1]) == {
        "epoch": 3, "loss": 4.25, "id_loss": 3.0, "triplet_loss": 1.25, "accuracy": 0.5, "lr": 3.5e-4, "seconds": 2.0,
        "img_per_s": 64.0,
    }


def test_a_train_log_line_that_is_not_an_entry_is_skipped_and_counted(tmp_path: Path) -> None:
    cell = CellDir(tmp_path)
    cell.write_train_log([ENTRY])
    with cell.train_log.open("a") as f:
        f.write('{"epoch": 4, "loss": "high"}\n[1]\n{"epoch": 5, "lo')  # wrong shape, not an object, torn
    log = cell.read_train_log()
    assert log.entries == [ENTRY] and log.skipped == 3 and log.last_epoch == 3


def test_an_epoch_entry_is_checked_field_by_field() -> None:
    with pytest.raises(SchemaError, match="line 7 lacks the field 'seconds'"):
        EpochEntry.from_dict({k: v for k, v in ENTRY.to_dict().items() if k != "seconds"}, "line 7")
    with pytest.raises(SchemaError, match="epoch is 1.5; expected a whole number"):
        EpochEntry.from_dict({**ENTRY.to_dict(), "epoch": 1.5}, "line 7")
    diverged = EpochEntry.from_dict(json.loads(json.dumps({**ENTRY.to_dict(), "loss": math.nan})))
    assert math.isnan(diverged.loss)
