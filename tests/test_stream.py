"""Streamed images (decoded per batch by DataLoader workers): the same pixels and labels as the cache, and a run on them."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from reidbench.cli import app
from reidbench.errors import UsageError
from reidbench.data import ImageRecord, load_dataset
from reidbench.data.images import load_images
from reidbench.data import stream
from reidbench.data.stream import stream_images
from tiny_run import ONE_CELL_GRID, run_args, write_inputs

SIZE = (32, 16)


@pytest.fixture(scope="module")
def train_records(tiny_synthetic: Path) -> list[ImageRecord]:
    return list(load_dataset(f"synthetic:{tiny_synthetic}").train)


def _assert_same_batches(streamed, cached) -> None:
    pairs = list(zip(streamed, cached, strict=True))
    assert pairs
    for (images, pids, cams), (c_images, c_pids, c_cams) in pairs:
        assert images.dtype == torch.uint8 and torch.equal(images, c_images)
        assert torch.equal(pids, c_pids) and torch.equal(cams, c_cams)


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_batches_are_the_cached_batches(train_records, workers):
    cached = load_images(train_records, SIZE)
    streamed = stream_images(train_records, SIZE, workers=workers)
    assert len(streamed) == len(cached) and streamed.paths == cached.paths
    assert streamed.decoded_nbytes == cached.decoded_nbytes and streamed.resized == cached.resized == len(cached)
    generator = torch.Generator().manual_seed(0)
    index_batches = torch.randperm(len(cached), generator=generator)[:24].view(3, 8)  # a sampler's epoch, in miniature
    _assert_same_batches(streamed.batches(index_batches), cached.batches(index_batches))
    _assert_same_batches(streamed.in_order(5), cached.in_order(5))  # evaluation: every image once, in order
    shard = slice(3, 11)
    _assert_same_batches(streamed.select(shard).in_order(4), cached.select(shard).in_order(4))


def test_unreadable_headers_are_skipped_and_broken_pixels_stop_with_the_file_named(train_records, tmp_path):
    good = Path(train_records[0].path).read_bytes()
    empty, truncated = tmp_path / "empty.jpg", tmp_path / "truncated.jpg"
    empty.write_bytes(b"")
    truncated.write_bytes(good[: len(good) // 2])  # the header reads, the pixels do not
    records = [*train_records[:4], ImageRecord(empty, 0, 0), ImageRecord(truncated, 1, 1)]
    streamed = stream_images(records, SIZE, workers=0)
    assert [path for path, _ in streamed.skipped] == [str(empty)] and len(streamed) == 5
    assert len(list(streamed.batches(torch.tensor([[0, 1], [2, 3]])))) == 2  # good files stream
    with pytest.raises(UsageError, match=r"could not be decoded.*truncated\.jpg.*--resume"):
        list(streamed.batches(torch.tensor([[0, 4]])))


def test_a_streamed_run_trains_and_scores_exactly_like_a_cached_one(tiny_synthetic, tmp_path):
    """Same decoder, same draws: on the CPU the losses and the metrics must be identical, not close."""
    inputs = write_inputs(tmp_path / "inputs", tiny_synthetic, grid=ONE_CELL_GRID, epochs=2)
    cli = CliRunner()
    records = {}
    for policy in ("host", "stream"):
        out = tmp_path / policy
        result = cli.invoke(app, run_args(inputs, out, "--device", "cpu", "--data-cache", policy))
        assert result.exit_code == 0, result.output
        records[policy] = json.loads((out / "cells/vit768-none/seed0/record.json").read_text())
        records[policy]["log"] = (out / "cells/vit768-none/seed0/train_log.jsonl").read_text().splitlines()
        records[policy]["run"] = json.loads((out / "run.json").read_text())
    host, stream = records["host"], records["stream"]
    assert stream["training"]["image_cache"].startswith("stream") and host["training"]["image_cache"] == "cpu"
    assert stream["run"]["dataset"]["cache"]["why"].endswith("--data-cache stream")
    assert [json.loads(line)["loss"] for line in stream["log"]] == [json.loads(line)["loss"] for line in host["log"]]
    assert stream["metrics"]["mAP"] == host["metrics"]["mAP"] and stream["metrics"]["cmc"] == host["metrics"]["cmc"]


def test_decoding_workers_share_the_cores_with_the_other_ranks_of_the_node(monkeypatch):
    monkeypatch.setattr(stream, "_default_workers", lambda: 16)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert stream.default_workers() == stream.MAX_WORKERS == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert stream.default_workers() == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "32")
    assert stream.default_workers() == 1


def test_the_workers_outlive_a_pass_and_an_abandoned_pass_leaves_no_stale_batch(train_records):
    """Epochs reuse the decoding processes; a pass left half-way (an error in a step) does not leak into the next."""
    cached = load_images(train_records, SIZE)
    streamed = stream_images(train_records, SIZE, workers=2)
    index_batches = torch.arange(24).view(6, 4)
    first = streamed.batches(index_batches)
    next(first)
    first.close()  # what a failing training step does to the epoch's generator
    loader = streamed._kept[0]
    workers = [w.pid for w in loader._iterator._workers]
    _assert_same_batches(streamed.in_order(5), cached.in_order(5))
    _assert_same_batches(streamed.batches(index_batches.flip(0)), cached.batches(index_batches.flip(0)))
    assert streamed._kept[0] is loader and [w.pid for w in loader._iterator._workers] == workers
