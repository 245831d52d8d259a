import math

import pytest
import torch

from pymtl.metrics.saliency import DEFAULT_THRESHOLDS, SaliencyMetric


def _row(values: list[float]) -> torch.Tensor:
    return torch.tensor(values).view(1, 1, 1, -1)


LOGIT = {0.9: math.log(9.0), 0.6: math.log(1.5), 0.1: math.log(1 / 9)}

# Image 1: probabilities [0.9, 0.6, 0.1, 0.9], gt [1, 1, 1, 0]
# Image 2: probabilities [0.1, 0.1],           gt [0, 0]
PRED = [_row([LOGIT[p] for p in (0.9, 0.6, 0.1, 0.9)]), _row([LOGIT[0.1]] * 2)]
GT = [_row([1.0, 1.0, 1.0, 0.0]), _row([0.0, 0.0])]


def test_pixel_aggregation_hand_computed():
    # t = 0.5: predicted [1, 1, 0, 1] → TP 2, FP 1, FN 1 → P = R = 2/3, F = 2/3, IoU = 2/4
    # t = 0.7: predicted [1, 0, 0, 1] → TP 1, FP 1, FN 2 → P = 1/2, R = 1/3, F = 2/5, IoU = 1/4
    # image 2 adds nothing at either threshold.
    m = SaliencyMetric(thresholds=[0.5, 0.7])
    for p, g in zip(PRED, GT, strict=True):
        m.update(p, g)
    assert m.compute() == pytest.approx({"maxF": 2 / 3, "max_iou": 1 / 2})


def test_beta2_weights_precision():
    # image 1 at t = 0.7: P = 1/2, R = 1/3;
    # F_0.3 = 1.3·(1/2)(1/3) / (0.3·(1/2) + 1/3) = 0.216667/0.483333 = 0.448276 (β² = 1: 0.4)
    m = SaliencyMetric(thresholds=[0.7], beta2=0.3)
    m.update(PRED[0], GT[0])
    assert m.compute()["maxF"] == pytest.approx(0.448276, abs=1e-6)


def test_image_aggregation_follows_mtl_pytorch():
    # t = 0.5: image 1 P = 2/3, R = 2/3, IoU = 1/2; image 2 has no positive anywhere:
    #          P = R = 0 (empty denominators), IoU = 1 by convention.
    #          mean P = mean R = 1/3 → F = 1/3; mean IoU = 3/4
    # t = 0.7: image 1 P = 1/2, R = 1/3, IoU = 1/4; image 2 as above
    #          mean P = 1/4, mean R = 1/6 → F = 2·(1/24)/(5/12) = 1/5; mean IoU = 5/8
    m = SaliencyMetric(thresholds=[0.5, 0.7], aggregation="image")
    m.update(
        torch.cat([PRED[0], torch.cat([PRED[1]] * 2, dim=3)]),
        torch.cat([GT[0], torch.cat([GT[1]] * 2, dim=3)]),
    )
    assert m.compute() == pytest.approx({"maxF": 1 / 3, "max_iou": 3 / 4})


def test_perfect_prediction():
    gt = (torch.rand(2, 1, 5, 5) > 0.5).float()
    m = SaliencyMetric()
    m.update(torch.where(gt > 0, 6.0, -6.0), gt)
    assert m.compute() == {"maxF": 1.0, "max_iou": 1.0}


def test_ignored_pixels_are_left_out():
    m = SaliencyMetric(thresholds=[0.5])
    m.update(_row([LOGIT[0.9], LOGIT[0.9]]), _row([1.0, 255.0]))
    assert m.compute() == {"maxF": 1.0, "max_iou": 1.0}


def test_nothing_valid_is_nan():
    for aggregation in ("pixel", "image"):
        m = SaliencyMetric(aggregation=aggregation)
        m.update(torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 255.0))
        assert all(math.isnan(v) for v in m.compute().values())


def test_image_aggregation_skips_images_without_valid_pixels():
    both = SaliencyMetric(thresholds=[0.5], aggregation="image")
    both.update(torch.cat([PRED[0], PRED[0]]), torch.cat([GT[0], torch.full_like(GT[0], 255.0)]))
    alone = SaliencyMetric(thresholds=[0.5], aggregation="image")
    alone.update(PRED[0], GT[0])
    assert both.compute() == alone.compute()


def test_default_thresholds_are_astmt():
    assert len(DEFAULT_THRESHOLDS) == 15
    assert DEFAULT_THRESHOLDS[0] == pytest.approx(0.2)
    assert DEFAULT_THRESHOLDS[-1] == pytest.approx(0.9)


def test_invalid_arguments():
    with pytest.raises(ValueError, match=r"beta2 must be > 0"):
        SaliencyMetric(beta2=0.0)
    with pytest.raises(ValueError, match=r"pred must be float logits of shape \(1, 1, 2, 2\)"):
        SaliencyMetric().update(torch.zeros(1, 1, 2, 3), torch.zeros(1, 1, 2, 2))
