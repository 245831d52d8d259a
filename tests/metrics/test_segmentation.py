import math

import pytest
import torch

from pymtl.metrics.segmentation import SegmentationMetric

# One 2×3 image, 3 classes, one ignored pixel (-1).
TARGET = torch.tensor([[[0, 0, 1], [1, 2, -1]]])
LABELS = torch.tensor([[[0, 1, 1], [2, 2, 0]]])
# Valid (gt, pred) pairs: (0,0) (0,1) (1,1) (1,2) (2,2). Confusion (rows gt):
#   g0: [1, 1, 0]   g1: [0, 1, 1]   g2: [0, 0, 1]
# TP = [1, 1, 1]; union = row + col − TP = [2+1−1, 2+2−1, 1+2−1] = [2, 3, 2]
# IoU = [1/2, 1/3, 1/2] → mIoU = 4/9; pixel accuracy = 3/5.


def _logits(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return 5.0 * torch.nn.functional.one_hot(labels.clamp_min(0), num_classes).permute(0, 3, 1, 2)


def test_hand_computed_from_logits_and_labels():
    for pred in (_logits(LABELS, 3).float(), LABELS):
        m = SegmentationMetric(num_classes=3)
        m.update(pred, TARGET)
        out = m.compute()
        assert out["miou"] == pytest.approx(4 / 9)
        assert out["pixel_acc"] == pytest.approx(3 / 5)
        assert torch.allclose(
            m.class_iou(), torch.tensor([1 / 2, 1 / 3, 1 / 2], dtype=torch.float64)
        )


def test_absent_class_skipped_or_zero():
    # class 3 is in neither gt nor prediction: skipped → 4/9; counted as 0 → (1/2+1/3+1/2+0)/4 = 1/3
    skip = SegmentationMetric(num_classes=4)
    zero = SegmentationMetric(num_classes=4, absent="zero")
    for m in (skip, zero):
        m.update(LABELS, TARGET)
    assert skip.compute()["miou"] == pytest.approx(4 / 9)
    assert zero.compute()["miou"] == pytest.approx(1 / 3)
    assert math.isnan(skip.class_iou()[3])


def test_perfect_prediction():
    target = torch.randint(0, 5, (2, 6, 7))
    m = SegmentationMetric(num_classes=5)
    m.update(target.clone(), target)
    assert m.compute() == {"miou": 1.0, "pixel_acc": 1.0}


def test_no_valid_pixel_is_nan():
    m = SegmentationMetric(num_classes=3)
    m.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), -1))
    out = m.compute()
    assert math.isnan(out["miou"])
    assert math.isnan(out["pixel_acc"])
    assert torch.isnan(m.class_iou()).all()


# Two 1×2 images for the aggregation modes:
#   A: gt [0, 1], pred [0, 0] → IoU0 = 1/2, IoU1 = 0 → mIoU_A = 1/4, acc_A = 1/2
#   B: gt [1, 1], pred [1, 1] → class 0 absent, IoU1 = 1 → mIoU_B = 1,  acc_B = 1
#   C: gt [0, 0], pred [0, 0] → mIoU_C = 1, acc_C = 1
A = (torch.tensor([[[0, 0]]]), torch.tensor([[[0, 1]]]))
B = (torch.tensor([[[1, 1]]]), torch.tensor([[[1, 1]]]))
C = (torch.tensor([[[0, 0]]]), torch.tensor([[[0, 0]]]))


def test_pixel_versus_image_aggregation():
    pred, target = torch.cat([A[0], B[0]]), torch.cat([A[1], B[1]])
    pixel = SegmentationMetric(num_classes=2)
    image = SegmentationMetric(num_classes=2, aggregation="image")
    for m in (pixel, image):
        m.update(pred, target)
    # pooled confusion: g0 [1, 0], g1 [1, 2] → IoU = [1/2, 2/3] → mIoU 7/12, acc 3/4
    assert pixel.compute()["miou"] == pytest.approx(7 / 12)
    assert pixel.compute()["pixel_acc"] == pytest.approx(3 / 4)
    # per image: mIoU (1/4 + 1)/2 = 5/8, acc (1/2 + 1)/2 = 3/4
    assert image.compute()["miou"] == pytest.approx(5 / 8)
    assert image.compute()["pixel_acc"] == pytest.approx(3 / 4)


def test_mtan_legacy_mode_depends_on_batches():
    """compat='mtan' + aggregation='image' = legacy MTAN: per-image mIoU, batch means, mean of
    batches. (A, B) + (C): (5/8 + 1)/2 = 13/16; (A) + (B, C): (1/4 + 1)/2 = 5/8."""
    results = []
    for batches in (((A, B), (C,)), ((A,), (B, C))):
        m = SegmentationMetric(num_classes=2, aggregation="image", compat="mtan")
        for batch in batches:
            m.update(torch.cat([p for p, _ in batch]), torch.cat([t for _, t in batch]))
        results.append(m.compute()["miou"])
    assert results == pytest.approx([13 / 16, 5 / 8])
    exact = SegmentationMetric(num_classes=2, aggregation="image")
    for p, t in (A, B, C):
        exact.update(p, t)
    assert exact.compute()["miou"] == pytest.approx((1 / 4 + 1 + 1) / 3)


def test_require_foreground_skips_background_only_images():
    m = SegmentationMetric(num_classes=2, require_foreground=True)
    m.update(torch.cat([A[0], C[0]]), torch.cat([A[1], C[1]]))  # C is all background
    only_a = SegmentationMetric(num_classes=2)
    only_a.update(*A)
    assert m.compute() == only_a.compute()


def test_labelled_mask_skips_samples():
    pred = torch.cat([A[0], B[0], C[0]])
    target = torch.cat([A[1], B[1], C[1]])
    m = SegmentationMetric(num_classes=2)
    m.update(pred, target, labelled=torch.tensor([True, False, True]))
    ref = SegmentationMetric(num_classes=2)
    ref.update(torch.cat([A[0], C[0]]), torch.cat([A[1], C[1]]))
    assert m.compute() == ref.compute()


def test_invalid_inputs_are_named():
    m = SegmentationMetric(num_classes=3)
    with pytest.raises(ValueError, match=r"target holds 5 .*\[0, 3\) or ignore_index=-1"):
        m.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 5))
    with pytest.raises(ValueError, match=r"pred must be \[B, 3, H, W\] logits"):
        m.update(torch.zeros(1, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"pred labels must lie in \[0, 3\) \(got \[7\]\)"):
        m.update(torch.full((1, 2, 2), 7), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"absent must be 'skip' or 'zero'"):
        SegmentationMetric(num_classes=3, absent="nan")
    with pytest.raises(ValueError, match=r"aggregation must be one of 'pixel', 'image'"):
        SegmentationMetric(num_classes=3, aggregation="batch")
    with pytest.raises(ValueError, match=r"class_iou: needs aggregation='pixel'"):
        SegmentationMetric(num_classes=3, aggregation="image").class_iou()
