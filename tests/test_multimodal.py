"""Multi-modal samples end to end below the run: decoding, augmentation, the model, missing-modality scoring."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reidbench.data.images import load_images
from reidbench.data.records import ImageRecord, View
from reidbench.errors import UsageError
from reidbench.evaluation.metrics import evaluate_rank
from reidbench.evaluation.modality_subsets import keep_modalities, modality_subsets, subset_record, subset_results
from reidbench.training.augment import normalize, train_augment
from reidbench.variants.factory import create_variant
from reidbench.variants.params import count_parameters
from reidbench.variants.settings import VariantSettings

THREE = ("rgb", "nir", "tir")
SMALL = dict(depth=1, img_size=(32, 16), neck_scales=(1, 2, 4), num_classes=5, num_cameras=3)


def _jpeg(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (16, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, quality=95)
    return path


def test_views_decode_side_by_side_on_the_channel_axis_and_strips_split_by_width(tmp_path: Path) -> None:
    rgb, nir, tir = (_jpeg(tmp_path / f"{m}/0001_c1.jpg", c) for m, c in zip(THREE, [(200, 0, 0), (90, 90, 90), (30, 30, 30)]))
    wide = tmp_path / "rgbir/0001_c1.png"
    wide.parent.mkdir(parents=True)
    strip = np.zeros((32, 48, 3), dtype=np.uint8)
    strip[:, :16], strip[:, 16:32], strip[:, 32:] = (200, 0, 0), (90, 90, 90), (30, 30, 30)
    Image.fromarray(strip).save(wide)
    records = [
        ImageRecord(rgb, 1, 0, views=(View(rgb), View(nir), View(tir))),
        ImageRecord(wide, 1, 0, views=tuple(View(wide, part, 3) for part in range(3))),
    ]
    images = load_images(records, (32, 16), workers=1)
    assert images.images.shape == (2, 9, 32, 16)
    means = images.images.float().mean(dim=(2, 3))
    for row in means:  # channel groups in view order: red, mid gray, dark gray
        assert row[0] > 150 and row[1] < 40 and abs(row[3] - 90) < 8 and abs(row[6] - 30) < 8
    assert images.resized == 0  # each strip is 16 wide: the model size


def test_a_sample_with_an_unreadable_modality_image_is_skipped_and_the_file_named(tmp_path: Path) -> None:
    good = [_jpeg(tmp_path / f"{m}/a.jpg", (10, 20, 30)) for m in THREE]
    bad = [_jpeg(tmp_path / f"{m}/b.jpg", (10, 20, 30)) for m in THREE]
    bad[1].write_bytes(b"")  # the NIR image of sample b is empty
    records = [ImageRecord(p[0], 1, 0, views=tuple(View(x) for x in p)) for p in (good, bad)]
    images = load_images(records, (32, 16), workers=1)
    assert images.paths == [str(good[0])]
    (path, reason), = images.skipped
    assert path == str(bad[0]) and str(bad[1]) in reason and "empty file" in reason
    with pytest.raises(UsageError, match="none of the 1 images"):
        load_images(records[1:], (32, 16), workers=1)


def test_every_modality_of_a_sample_gets_the_same_flip_crop_and_erasing() -> None:
    one = torch.randint(0, 256, (6, 3, 32, 16), dtype=torch.uint8)
    batch = one.repeat(1, 3, 1, 1)  # three identical modalities
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    for method in ("loop", "gather"):
        out = train_augment(batch, torch.Generator().manual_seed(1), mean, std, erase_p=1.0, method=method)
        assert out.shape == (6, 9, 32, 16)
        assert torch.equal(out[:, 0:3], out[:, 3:6]) and torch.equal(out[:, 0:3], out[:, 6:9])
        single = train_augment(one, torch.Generator().manual_seed(1), mean, std, erase_p=1.0, method=method)
        assert torch.equal(out[:, 0:3], single)
    assert torch.equal(normalize(batch, mean, std)[:, 6:9], normalize(one, mean, std))
    with pytest.raises(ValueError, match=r"\[B, 3M, H, W\]"):
        normalize(torch.zeros(1, 4, 8, 8, dtype=torch.uint8), mean, std)


@pytest.mark.parametrize("cell", ["vit768-ms", "clip512proj-none", "clip768-ms"])
def test_the_feature_is_the_modalities_features_side_by_side_each_computed_alone(cell: str) -> None:
    model = create_variant(cell, modalities=THREE, **SMALL).eval()
    images, cams = model.example_input(2), torch.tensor([0, 2])
    assert images.shape[1] == 9 and model.feature_dim == 3 * model.neck.out_dim
    with torch.no_grad():
        feature = model(images, cams)
        for i in range(3):
            alone = model.neck(model.backbone(images[:, 3 * i:3 * i + 3], cams, torch.full((2,), i)))
            torch.testing.assert_close(feature[:, i * model.neck.out_dim:(i + 1) * model.neck.out_dim], alone, atol=1e-4, rtol=1e-4)
    model.train()
    out = model(model.example_input(4), torch.tensor([0, 1, 2, 0]))
    assert out.logits.shape == (4, 5) and out.features.shape == (4, model.feature_dim)


def test_the_modality_embedding_tells_the_modalities_apart_through_a_shared_backbone() -> None:
    model = create_variant("vit768-none", modalities=THREE, **SMALL).eval()
    same = model.example_input(2)[:, :3].repeat(1, 3, 1, 1)  # one image given as all three modalities
    with torch.no_grad():
        blocks = model(same, torch.tensor([0, 1])).unflatten(1, (3, -1))
        assert not torch.allclose(blocks[:, 0], blocks[:, 1])
        model.backbone.modality_embed.zero_()
        blocks = model(same, torch.tensor([0, 1])).unflatten(1, (3, -1))
    torch.testing.assert_close(blocks[:, 0], blocks[:, 1])


def test_separate_weights_give_each_modality_its_own_backbone_and_neck() -> None:
    shared = create_variant("vit768-ms", modalities=THREE, **SMALL)
    separate = create_variant("vit768-ms", modalities=THREE, modality_weights="separate", **SMALL)
    single = create_variant("vit768-ms", **SMALL)
    counts = {name: count_parameters(m) for name, m in [("shared", shared), ("separate", separate), ("single", single)]}
    embedding = shared.backbone.modality_embed.numel()
    assert counts["shared"]["backbone"] == counts["single"]["backbone"] + embedding
    assert counts["separate"]["backbone"] == 3 * counts["single"]["backbone"]
    assert counts["separate"]["neck"] == 3 * counts["single"]["neck"] == 3 * counts["shared"]["neck"]
    assert len(separate.backbone.blocks()) == 3 * len(single.backbone.blocks())
    separate.eval()
    with torch.no_grad():
        x = separate.example_input(2)
        torch.testing.assert_close(separate(x)[:, 768:1536], separate.neck.copies[1](separate.backbone.copies[1](x[:, 3:6])))


def test_bad_modality_settings_are_refused_by_name() -> None:
    with pytest.raises(UsageError, match="modalities"):
        VariantSettings(modalities=("rgb", "depth"))
    with pytest.raises(UsageError, match="modality_weights"):
        VariantSettings(modality_weights="tied")


def test_the_seven_subsets_are_named_and_an_absent_modality_is_a_zero_block() -> None:
    assert [name for name, _ in modality_subsets(THREE)] == ["R", "N", "T", "RN", "RT", "NT", "RNT"]
    features = torch.arange(12.0).view(2, 6)  # two samples, three 2-wide blocks
    kept = keep_modalities(features, (0, 2), 3)
    assert kept.tolist() == [[0, 1, 0, 0, 4, 5], [6, 7, 0, 0, 10, 11]] and features[0, 2] == 2


def test_only_the_modality_that_carries_identity_scores_alone_and_all_together_equals_the_full_evaluation() -> None:
    generator = torch.Generator().manual_seed(0)
    pids = torch.arange(20).repeat(2)
    cams = torch.cat([torch.zeros(20), torch.ones(20)]).long()
    identity = torch.randn(20, 8, generator=generator)[pids]
    noise = lambda: torch.randn(40, 8, generator=generator)  # noqa: E731
    features = torch.cat([noise(), identity + 0.1 * noise(), 0.3 * noise()], dim=1)  # only N carries identity
    q, g = features[:20], features[20:]
    ids = (pids[:20], pids[20:], cams[:20], cams[20:])
    results = subset_results(q, g, ids, THREE, normalize=True, metric="euclidean")
    scores = subset_record(results)
    assert list(scores["N"]) == ["mAP", "rank1", "rank5", "rank10", "mINP"]
    assert scores["N"]["mAP"] > 0.95 and scores["R"]["mAP"] < 0.5 and scores["T"]["mAP"] < 0.5
    assert scores["NT"]["mAP"] > scores["RT"]["mAP"]
    full = evaluate_rank(torch.nn.functional.normalize(q, dim=1), torch.nn.functional.normalize(g, dim=1), *ids, metric="euclidean")
    assert scores["RNT"]["mAP"] == pytest.approx(full.mAP) and scores["RNT"]["rank1"] == pytest.approx(full.rank1)
    for name, result in results.items():  # each subset keeps its own per-query scores, in query order
        assert result.queries.pid.tolist() == pids[:20].tolist()
        assert np.nanmean(result.queries.ap) == pytest.approx(scores[name]["mAP"])
    np.testing.assert_allclose(results["RNT"].queries.ap, full.queries.ap, atol=1e-6)


def test_msvr310s_protocol_removes_same_identity_entries_of_the_querys_scene_not_its_camera() -> None:
    from reidbench.data.images import ImageSet

    def split(pids: list[int], cams: list[int], scenes: list[int] | None) -> ImageSet:
        n = len(pids)
        return ImageSet(torch.zeros(n, 9, 4, 4, dtype=torch.uint8), torch.tensor(pids), torch.tensor(cams), [f"{i}" for i in range(n)],
                        scenes=None if scenes is None else torch.tensor(scenes))

    # Query 0's nearest true match is from another camera of the same scene; its other match is another scene's.
    query, gallery = split([1, 2], [0, 0], [5, 6]), split([1, 1, 2], [1, 1, 1], [5, 7, 7])
    qf, gf = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [0.6, 0.1], [0.0, 1.0]])
    by_camera = evaluate_rank(qf, gf, query.pids, gallery.pids, query.camids, gallery.camids)
    by_scene = evaluate_rank(qf, gf, query.pids, gallery.pids, query.exclusion_ids, gallery.exclusion_ids)
    assert by_camera.mAP == 1.0  # both of query 0's matches count, ranked 1 and 2
    assert by_scene.mAP == 1.0 and by_scene.rank1 == 1.0  # the same-scene match is gone: the other is first
    assert by_camera.mINP == 1.0 and by_scene.num_skipped_queries == 0
    only_same_scene = evaluate_rank(qf, gf[[0, 2]], query.pids, gallery.pids[[0, 2]], query.exclusion_ids, gallery.exclusion_ids[[0, 2]])
    assert only_same_scene.num_skipped_queries == 1  # query 0 has no match outside its scene
    assert torch.equal(split([1], [0], None).exclusion_ids, torch.tensor([0]))
    assert torch.equal(gallery.select(slice(0, 2)).scenes, torch.tensor([5, 7]))


def test_the_settings_accept_exactly_the_modalities_the_data_layer_names() -> None:
    from reidbench.data.records import MODALITIES
    from reidbench.variants.settings import MODALITY_NAMES

    assert MODALITY_NAMES == MODALITIES  # variants cannot import data: the two layers must agree


def test_a_streamed_multimodal_set_decodes_the_same_pixels_as_the_cache(tmp_path: Path) -> None:
    from reidbench.data.stream import stream_images

    records = []
    for n, colour in enumerate([(200, 10, 10), (10, 200, 10), (10, 10, 200)]):
        paths = [_jpeg(tmp_path / f"{m}/{n}.jpg", tuple((c + 40 * i) % 256 for c in colour)) for i, m in enumerate(THREE)]
        records.append(ImageRecord(paths[0], n, 0, views=tuple(View(p) for p in paths)))
    cached = load_images(records, (32, 16), workers=1)
    streamed = stream_images(records, (32, 16), workers=0)
    assert streamed.decoded_nbytes == cached.decoded_nbytes == 3 * 9 * 32 * 16
    batches = list(streamed.in_order(2))
    assert torch.equal(torch.cat([b.images for b in batches]), cached.images)
    assert len(streamed.select(slice(1, 3)).views) == 2
