import math

import numpy as np
import pytest
import torch

from pymtl.metrics.normals import NormalsMetric


def _pixels(vectors: list[list[float]]) -> torch.Tensor:
    """[1, 3, 1, N] from N vectors."""
    return torch.tensor(vectors, dtype=torch.float32).T.reshape(1, 3, 1, -1)


def test_hand_computed():
    # target up (0, 0, 1) — the last one (0, 0, 2) is re-normalised; the 6th is invalid (norm 0)
    # pred (0,0,1) → 0°; (1,0,1) → 45°; (0,1,0) → 90°; (0,1,2) → atan(1/2) = 26.565051°;
    # (0, 0, 5) vs (0, 0, 2) → 0°.   Errors: 0, 45, 90, 26.565051, 0 (n = 5)
    #   mean = 161.565051/5 = 32.313010;  median = 26.565051 (odd n)
    #   rmse = sqrt((2025 + 8100 + 705.688)/5) = sqrt(2166.138) = 46.541787
    #   within 11.25: 2/5; 22.5: 2/5; 30: 3/5
    pred = _pixels([[0, 0, 1], [1, 0, 1], [0, 1, 0], [0, 1, 2], [0, 0, 5], [1, 0, 0]])
    target = _pixels([[0, 0, 1]] * 4 + [[0, 0, 2], [0, 0, 0]])
    m = NormalsMetric()
    m.update(pred, target)
    out = m.compute()
    atan_half = math.degrees(math.atan(0.5))
    assert out["mean"] == pytest.approx((45 + 90 + atan_half) / 5)
    assert out["median"] == pytest.approx(atan_half, abs=0.005)
    assert out["rmse"] == pytest.approx(math.sqrt((45**2 + 90**2 + atan_half**2) / 5))
    assert (out["within_11.25"], out["within_22.5"], out["within_30"]) == (0.4, 0.4, 0.6)


def test_even_count_median_is_mean_of_middle_pair():
    # errors 0, 45, 90, 26.565 → median (26.565 + 45)/2
    m = NormalsMetric()
    m.update(_pixels([[0, 0, 1], [1, 0, 1], [0, 1, 0], [0, 1, 2]]), _pixels([[0, 0, 1]] * 4))
    assert m.compute()["median"] == pytest.approx(
        (math.degrees(math.atan(0.5)) + 45) / 2, abs=0.005
    )


def test_median_within_documented_resolution():
    """The histogram median is within bin_width/2 = 0.005° of numpy's exact median."""
    gen = torch.Generator().manual_seed(1)
    for n in (101, 100):
        pred = torch.randn(1, 3, 1, n, generator=gen)
        target = torch.nn.functional.normalize(torch.randn(1, 3, 1, n, generator=gen), dim=1)
        m = NormalsMetric()
        m.update(pred, target)
        p = torch.nn.functional.normalize(pred.double(), dim=1)
        cos = (p * target.double()).sum(dim=1).clamp(-1, 1)
        exact = float(np.median(np.degrees(np.arccos(cos.numpy()))))
        assert abs(m.compute()["median"] - exact) <= 0.005 + 1e-9
        assert m.compute()["mean"] == pytest.approx(
            float(np.degrees(np.arccos(cos.numpy())).mean())
        )


def test_perfect_prediction_is_exactly_zero():
    target = torch.nn.functional.normalize(torch.randn(2, 3, 4, 4), dim=1)
    m = NormalsMetric()
    m.update(target.clone(), target)
    out = m.compute()
    assert (out["mean"], out["median"], out["rmse"]) == (0.0, 0.0, 0.0)
    assert out["within_11.25"] == out["within_30"] == 1.0
    scaled = NormalsMetric()  # the prediction is normalised: only float32 rounding remains
    scaled.update(3.0 * target, target)
    assert scaled.compute()["mean"] < 1e-4
    assert scaled.compute()["within_11.25"] == 1.0


def test_hflip_equivariance():
    """Flipping pred and target left-right and negating x leaves every value unchanged."""
    pred, target = (
        torch.randn(2, 3, 5, 6),
        torch.nn.functional.normalize(torch.randn(2, 3, 5, 6), dim=1),
    )
    sign = torch.tensor([-1.0, 1.0, 1.0]).view(1, 3, 1, 1)
    a, b = NormalsMetric(), NormalsMetric()
    a.update(pred, target)
    b.update(pred.flip(-1) * sign, target.flip(-1) * sign)
    for key, value in a.compute().items():
        assert b.compute()[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


def test_no_valid_pixel_is_nan():
    m = NormalsMetric()
    m.update(torch.randn(1, 3, 2, 2), torch.zeros(1, 3, 2, 2))
    assert all(math.isnan(v) for v in m.compute().values())


def test_ignore_value_marks_invalid_pixels():
    m = NormalsMetric(ignore_value=255.0)
    m.update(_pixels([[0, 0, 1], [0, 1, 0]]), _pixels([[0, 0, 1], [255, 255, 255]]))
    assert m.compute()["mean"] == 0.0


def test_mtan_compat_is_mean_of_batch_medians():
    # batch 1 errors [0, 45, 90] → median 45; batch 2 [26.565] → median 26.565
    m = NormalsMetric(compat="mtan")
    m.update(_pixels([[0, 0, 1], [1, 0, 1], [0, 1, 0]]), _pixels([[0, 0, 1]] * 3))
    m.update(_pixels([[0, 1, 2]]), _pixels([[0, 0, 1]]))
    assert m.compute()["median"] == pytest.approx(
        (45 + math.degrees(math.atan(0.5))) / 2, abs=0.005
    )


def test_bin_width_must_divide_180():
    with pytest.raises(ValueError, match=r"bin_width must divide 180 degrees"):
        NormalsMetric(bin_width=0.07)
