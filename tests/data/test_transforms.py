"""Label-consistent augmentations: one test per rule of SPEC-data §1g."""

from typing import ClassVar

import attrs
import pytest
import torch

from pymtl.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    augment,
    hflip,
    normalize_image,
    resize,
    sample_generator,
    scale_crop,
)
from pymtl.tasks import (
    ClassificationTask,
    DepthTask,
    EdgeTask,
    NormalsTask,
    RegressionTask,
    SaliencyTask,
    SegmentationTask,
    Task,
)

H, W = 8, 12
TASKS = (
    SegmentationTask(name="seg", num_classes=4, ignore_index=-1),
    DepthTask(name="depth"),
    NormalsTask(name="normals"),
    EdgeTask(name="edges"),
    SaliencyTask(name="sal"),
    ClassificationTask(name="cls", num_classes=3),
)
# one unit normal per class (all with x > 0), so every target is a function of the label
VECTORS = torch.nn.functional.normalize(
    torch.tensor([[1.0, 0.2, 0.3], [0.5, -1.0, 0.1], [0.3, 0.4, -1.0], [0.8, 0.8, 0.8]]), dim=1
)


@attrs.frozen(kw_only=True)
class FlowTask(Task):
    """A dense kind the augmentations have no rule for."""

    kind: ClassVar[str] = "flow"

    @property
    def channels(self) -> int:
        return 2

    def valid_mask(self, target):
        return torch.ones_like(target, dtype=torch.bool)

    def elementwise_loss(self, pred, target):
        return (pred - target).abs()

    def metric(self):
        raise NotImplementedError


def make_item(labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Targets that are all functions of the label map; label −1 is invalid everywhere."""
    valid = labels >= 0
    safe = labels.clamp_min(0)
    normals = VECTORS[safe].permute(2, 0, 1) * valid
    return {
        "image": torch.stack(
            [safe / 4.0, valid.float(), torch.full_like(safe, 1, dtype=torch.float)]
        ),
        "seg": labels,
        "depth": ((safe + 1.0) * valid)[None],
        "normals": normals,
        "edges": (safe % 2 == 1).float()[None],
        "sal": (safe >= 2).float()[None],
        "cls": torch.tensor(2),
        "seg.mask": torch.tensor(True),
    }


def block_labels() -> torch.Tensor:
    labels = torch.zeros(H, W, dtype=torch.int64)
    labels[:, 4:8] = 1
    labels[4:, :] = 2
    labels[:2, 8:] = 3
    labels[6:, 10:] = -1
    return labels


def assert_consistent(out: dict[str, torch.Tensor], depth_factor: float) -> None:
    """Every target still agrees with the label map, pixel by pixel."""
    labels = out["seg"]
    valid = labels >= 0
    safe = labels.clamp_min(0)
    torch.testing.assert_close(out["depth"][0], (safe + 1.0) * valid * depth_factor)
    assert torch.equal(out["edges"][0], (safe % 2 == 1).float())
    assert torch.equal(out["sal"][0], (safe >= 2).float())
    assert torch.equal(out["normals"].norm(dim=0) > 0, valid)


def test_hflip_mirrors_every_target_and_negates_normal_x():
    item = make_item(block_labels())
    out = hflip(item, TASKS)
    assert torch.equal(out["seg"], item["seg"].flip(-1))
    assert torch.equal(out["depth"], item["depth"].flip(-1))
    assert torch.equal(out["image"], item["image"].flip(-1))
    assert torch.equal(out["normals"][0], -item["normals"][0].flip(-1))
    assert torch.equal(out["normals"][1:], item["normals"][1:].flip(-1))
    assert out["cls"] is item["cls"]
    assert out["seg.mask"] is item["seg.mask"]
    again = hflip(out, TASKS)
    assert all(torch.equal(again[k], item[k]) for k in item)


def test_hflip_keeps_a_normals_sentinel():
    task = NormalsTask(name="normals", ignore_value=255.0)
    normals = torch.full((3, H, W), 255.0)
    normals[:, :, :3] = torch.tensor([0.6, 0.0, 0.8]).view(3, 1, 1)
    out = hflip({"image": torch.zeros(3, H, W), "normals": normals}, [task])
    assert (out["normals"][:, :, :-3] == 255).all()
    torch.testing.assert_close(out["normals"][0, :, -3:], torch.full((H, 3), -0.6))


@pytest.mark.parametrize("scale", [1.2, 1.5, 2.0])
def test_zoom_in_divides_depth_and_keeps_labels_consistent(scale):
    item = make_item(block_labels())
    out = scale_crop(item, TASKS, scale=scale, generator=torch.Generator().manual_seed(3))
    assert out["seg"].shape == (H, W)
    assert out["seg"].dtype == torch.int64
    assert set(out["seg"].unique().tolist()) <= {-1, 0, 1, 2, 3}
    assert_consistent(out, 1.0 / scale)


def test_disparity_is_multiplied_by_the_zoom():
    item = make_item(block_labels())
    out = scale_crop(
        item, TASKS, scale=1.5, generator=torch.Generator().manual_seed(3), disparity={"depth"}
    )
    assert_consistent(out, 1.5)


def test_zoom_out_pads_with_each_tasks_ignore_value():
    labels = torch.zeros(H, W, dtype=torch.int64)  # class 0 everywhere: no ignore pixel inside
    item = make_item(labels)
    out = scale_crop(item, TASKS, scale=0.5, generator=torch.Generator().manual_seed(0))
    inside = out["seg"] == 0
    assert inside.sum() == (H // 2) * (W // 2)  # the image shrank to a quarter
    outside = ~inside
    assert (out["seg"][outside] == -1).all()
    assert (out["depth"][0][outside] == 0).all()
    assert (out["normals"][:, outside] == 0).all()
    assert (out["edges"][0][outside] == 255).all()
    assert (out["sal"][0][outside] == 255).all()
    assert (out["image"][:, outside] == 0).all()
    torch.testing.assert_close(out["depth"][0][inside], torch.full((24,), 2.0))  # 1 / 0.5


def test_255_label_ignore_is_used_for_padding():
    task = SegmentationTask(name="seg", num_classes=21, ignore_index=255)
    item = {"image": torch.zeros(3, H, W), "seg": torch.zeros(H, W, dtype=torch.int64)}
    out = scale_crop(item, [task], scale=0.5, generator=torch.Generator().manual_seed(1))
    assert set(out["seg"].unique().tolist()) == {0, 255}


def test_normals_are_renormalised_after_interpolation():
    gen = torch.Generator().manual_seed(0)
    normals = torch.nn.functional.normalize(torch.randn(3, H, W, generator=gen), dim=0)
    normals[:, :2, :2] = 0  # invalid corner
    item = {"image": torch.zeros(3, H, W), "normals": normals}
    out = scale_crop(item, TASKS, scale=1.7, generator=gen)
    norms = out["normals"].norm(dim=0)
    valid = norms > 0
    assert valid.any()
    torch.testing.assert_close(norms[valid], torch.ones(int(valid.sum())))


def test_identity_window_returns_the_targets_unchanged():
    item = make_item(block_labels())
    item["normals"] = item["normals"] * 0.9  # not unit: untouched since nothing is interpolated
    out = scale_crop(item, TASKS, scale=1.0, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(out[k], item[k]) for k in item)


def test_resize_uses_nearest_labels_and_keeps_depth_values():
    item = make_item(block_labels())
    out = resize(item, TASKS, size=(16, 24), image_mode="bicubic")
    assert out["seg"].shape == (16, 24)
    assert out["depth"].shape == (1, 16, 24)
    assert torch.equal(out["seg"][::2, ::2], item["seg"])  # exact 2× nearest upsampling
    assert_consistent(out, 1.0)
    assert out["image"].min() >= 0
    assert out["image"].max() <= 1


def test_augment_is_a_function_of_the_generator_state():
    item = make_item(block_labels())
    a = augment(item, TASKS, generator=sample_generator(0, 0, 5), scales=(1.0, 1.5, 2.0))
    b = augment(item, TASKS, generator=sample_generator(0, 0, 5), scales=(1.0, 1.5, 2.0))
    assert all(torch.equal(a[k], b[k]) for k in a)
    draws = [
        augment(item, TASKS, generator=sample_generator(0, e, 5), scales=(1.0, 1.5, 2.0))
        for e in range(8)
    ]
    assert any(not torch.equal(d["seg"], a["seg"]) for d in draws)


def test_augment_with_scale_one_and_no_flip_is_identity():
    item = make_item(block_labels())
    out = augment(item, TASKS, generator=torch.Generator(), scales=(1.0,), flip=False)
    assert all(torch.equal(out[k], item[k]) for k in item)


def test_unknown_dense_kind_is_refused():
    task = RegressionTask(name="reg")  # image-level: passed through
    out = hflip({"image": torch.zeros(3, H, W), "reg": torch.ones(1)}, [task])
    assert torch.equal(out["reg"], torch.ones(1))

    with pytest.raises(ValueError, match="no augmentation rule for task kind 'flow'"):
        scale_crop(
            {"image": torch.zeros(3, H, W), "f": torch.zeros(2, H, W)},
            [FlowTask(name="f")],
            scale=2.0,
            generator=torch.Generator(),
        )


def test_wrong_target_layout_names_the_key():
    item = make_item(block_labels())
    item["depth"] = item["depth"][0]
    with pytest.raises(ValueError, match=r"item 'depth' .*got \(8, 12\).*expected \(1, 8, 12\)"):
        hflip(item, TASKS)


def test_normalize_image():
    image = torch.rand(3, 2, 2)
    assert normalize_image(image, "none") is image
    torch.testing.assert_close(normalize_image(image, "signed"), image * 2 - 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(normalize_image(image, "imagenet"), (image - mean) / std)
    with pytest.raises(ValueError, match="unknown image normalisation 'zscore'"):
        normalize_image(image, "zscore")


def test_bad_scales_are_refused():
    item = make_item(block_labels())
    with pytest.raises(ValueError, match="'scales' is empty"):
        augment(item, TASKS, generator=torch.Generator(), scales=())
    with pytest.raises(ValueError, match=r"scale must be > 0 \(got 0.0\)"):
        scale_crop(item, TASKS, scale=0.0, generator=torch.Generator())
