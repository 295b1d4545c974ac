"""Every registered backbone and neck builds and runs forward with the right shapes (shallow, CPU)."""
from __future__ import annotations

import pytest
import torch

from reidbench import create_variant
from reidbench.errors import UsageError
from reidbench.variants import BACKBONES, NECKS, TrainOutput, VariantSettings

# Token widths DESIGN.md specifies for the shipped backbones; a new backbone only needs the generic checks.
DOCUMENTED_WIDTHS = {"vit768": 768, "clip512": 512, "clip512proj": 768, "clip768": 768}
SHALLOW = dict(depth=1, num_classes=10)


@pytest.mark.parametrize("backbone", BACKBONES.names())
@pytest.mark.parametrize("stride, grid", [(16, (16, 8)), (12, (21, 10))])
def test_backbone_tokens_have_the_grid_and_width(backbone: str, stride: int, grid: tuple[int, int]) -> None:
    model = create_variant(f"{backbone}-none", stride=stride, **SHALLOW).eval()
    assert model.backbone.grid_size == grid
    with torch.no_grad():
        tokens = model.backbone(model.example_input(2), cam_ids=torch.tensor([0, 3]))
    assert tokens.shape == (2, 1 + grid[0] * grid[1], model.backbone.embed_dim)
    if backbone in DOCUMENTED_WIDTHS:
        assert model.backbone.embed_dim == DOCUMENTED_WIDTHS[backbone]
    assert torch.isfinite(tokens).all()


@pytest.mark.parametrize("backbone", BACKBONES.names())
def test_camera_embedding_changes_tokens_and_can_be_switched_off(backbone: str) -> None:
    model = create_variant(f"{backbone}-none", **SHALLOW).eval()
    images = model.example_input(2)
    with torch.no_grad():
        plain = model.backbone(images)
        cam0 = model.backbone(images, torch.tensor([0, 0]))
        cam1 = model.backbone(images, torch.tensor([1, 1]))
    assert not torch.allclose(cam0, cam1)
    assert not torch.allclose(plain, cam0)
    off = create_variant(f"{backbone}-none", num_cameras=0, **SHALLOW).eval()
    off.load_state_dict({k: v for k, v in model.state_dict().items() if "sie_embed" not in k and "cv_embed" not in k})
    with torch.no_grad():
        torch.testing.assert_close(off.backbone(images, torch.tensor([0, 1])), plain)


@pytest.mark.parametrize("neck", NECKS.names())
@pytest.mark.parametrize("backbone", BACKBONES.names())
def test_model_inference_and_training_outputs(backbone: str, neck: str) -> None:
    """Every pair, at 128x64 (an 8x4 grid): shapes and gradients do not need the full-size windows (test_necks has them)."""
    model = create_variant(f"{backbone}-{neck}", img_size=(128, 64), **SHALLOW)
    images = model.example_input(3)
    if model.neck.input_width not in (None, model.backbone.embed_dim):
        # A neck with a fixed input width fails on other widths with PyTorch's own error.
        with pytest.raises(RuntimeError, match=f"to have {model.neck.input_width} channels"):
            model(images)
        return
    model.train()
    out = model(images, torch.tensor([0, 1, 2]))
    assert isinstance(out, TrainOutput)
    assert out.logits.shape == (3, 10)
    assert out.features.shape == (3, model.feature_dim)
    out.logits.sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad and "embed" not in n)
    model.eval()
    with torch.no_grad():
        feature = model(images)
    assert feature.shape == (3, model.feature_dim)


def test_feature_after_bnneck_is_the_batch_normalized_feature() -> None:
    before = create_variant("vit768-none", **SHALLOW).eval()
    after = create_variant("vit768-none", feature="after", **SHALLOW).eval()
    after.load_state_dict(before.state_dict())
    images = before.example_input(2)
    with torch.no_grad():
        torch.testing.assert_close(after(images), before.head.bottleneck(before(images)))


def test_bnneck_bias_is_frozen_and_classifier_has_no_bias() -> None:
    head = create_variant("vit768-none", **SHALLOW).head
    assert head.bottleneck.bias.requires_grad is False
    assert head.classifier.bias is None


def test_unknown_names_list_the_valid_choices() -> None:
    with pytest.raises(UsageError, match="valid backbones are: vit768, clip512, clip512proj"):
        create_variant("resnet50-none")
    with pytest.raises(UsageError, match="valid necks are: none, ms"):
        create_variant("vit768-gem")
    with pytest.raises(UsageError, match="must be '<backbone>-<neck>'"):
        create_variant("vit768")
    with pytest.raises(UsageError, match="unknown setting 'dpeth'"):
        create_variant("vit768-none", dpeth=2)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(img_size=(250, 128)), "not divisible by the patch size 16"),
        (dict(stride=20), "stride 20 is impossible"),
        (dict(stride=0), "stride 0 is impossible"),
        (dict(depth=0), "depth 0 is impossible"),
        (dict(feature="middle"), "feature 'middle' is unknown"),
        (dict(neck_scales=()), "non-empty list"),
        (dict(num_cameras=-1), "num_cameras -1 is negative"),
        (dict(depth="2"), "has the wrong type"),
        (dict(img_size=(256,)), "has the wrong type"),
    ],
)
def test_impossible_settings_are_refused_before_building(overrides: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        VariantSettings().with_overrides(overrides)


def test_weights_load_into_every_backbone_and_the_report_stays_on_the_model(tmp_path) -> None:
    """Each registered backbone takes its own pretrained network back from a file (tests/test_weights.py: the formats)."""
    for backbone in BACKBONES.names():
        source = create_variant(f"{backbone}-none", **SHALLOW)
        prefix = "backbone.vit." if hasattr(source.backbone, "vit") else "backbone.visual."
        path = tmp_path / f"{backbone}.pth"
        torch.save({k[len(prefix):]: v for k, v in source.state_dict().items() if k.startswith(prefix)}, path)
        model = create_variant(f"{backbone}-none", weights=path, **SHALLOW)
        loaded = model.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in source.state_dict().items() if k.startswith(prefix))
        assert model.weights_report.path == str(path.resolve()) and model.weights_report.resized == {}
        assert create_variant(f"{backbone}-none", **SHALLOW).weights_report is None
    with pytest.raises(UsageError, match="does not exist"):
        create_variant("vit768-none", weights=tmp_path / "missing.pth", **SHALLOW)
