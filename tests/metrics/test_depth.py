import math

import pytest
import torch

from pymtl.metrics.depth import DepthMetric


def _map(values: list[float]) -> torch.Tensor:
    return torch.tensor(values).view(1, 1, 1, -1)


def test_hand_computed():
    # pixels (pred, gt): (1, 2) (3, 0 → invalid) (2, 2) (0.6, 1) (5, NaN → invalid)
    # valid errors d − g: −1, 0, −0.4 (n = 3)
    #   abs = 1.4/3 = 0.466667            rmse = sqrt((1 + 0 + 0.16)/3) = 0.621825
    #   rel = (1/2 + 0 + 0.4/1)/3 = 0.3   sq_rel = (1/2 + 0 + 0.16/1)/3 = 0.22
    #   ln(d/g) = ln 0.5, 0, ln 0.6 = −0.693147, 0, −0.510826
    #   rmse_log = sqrt((0.480453 + 0.260943)/3) = 0.497124
    #   log10 = (0.301030 + 0 + 0.221849)/3 = 0.174293
    #   ratios max(d/g, g/d) = 2, 1, 1.666667: < 1.25 → 1/3; < 1.5625 → 1/3; < 1.953125 → 2/3
    m = DepthMetric()
    m.update(_map([1.0, 3.0, 2.0, 0.6, 5.0]), _map([2.0, 0.0, 2.0, 1.0, math.nan]))
    out = m.compute()
    expected = {
        "abs_err": 0.466667,
        "rel_err": 0.3,
        "sq_rel": 0.22,
        "rmse": 0.621825,
        "rmse_log": 0.497124,
        "log10": 0.174293,
        "delta1": 1 / 3,
        "delta2": 1 / 3,
        "delta3": 2 / 3,
    }
    assert out == pytest.approx(expected, abs=1e-6)


def test_non_positive_prediction_is_clamped_in_log_terms():
    # pred −1 → 1e-9 in the log terms: |log10(1e-9) − log10(1)| = 9; ratio huge → no δ
    m = DepthMetric()
    m.update(_map([-1.0]), _map([1.0]))
    out = m.compute()
    assert out["abs_err"] == 2.0
    assert out["log10"] == pytest.approx(9.0)
    assert out["rmse_log"] == pytest.approx(9 * math.log(10))
    assert out["delta3"] == 0.0


def test_perfect_prediction():
    target = torch.rand(2, 1, 4, 5) + 0.5
    m = DepthMetric()
    m.update(target.clone(), target)
    out = m.compute()
    for key in ("abs_err", "rel_err", "sq_rel", "rmse", "rmse_log", "log10"):
        assert out[key] == 0.0, key
    assert out["delta1"] == out["delta2"] == out["delta3"] == 1.0


def test_no_valid_pixel_is_nan():
    m = DepthMetric()
    m.update(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))
    assert all(math.isnan(v) for v in m.compute().values())


def test_custom_invalid_value():
    m = DepthMetric(invalid_value=255.0)
    m.update(_map([1.0, 7.0]), _map([2.0, 255.0]))
    assert m.compute()["abs_err"] == 1.0


# Two images: P = (pred 1, gt 2) and Q = (pred [2, 3], gt [2, 3]).
P = (_map([1.0]), _map([2.0]))
Q = (_map([2.0, 3.0]), _map([2.0, 3.0]))


def test_image_aggregation_averages_per_image_values():
    # pixel: abs (1 + 0 + 0)/3 = 1/3, rmse sqrt(1/3); image: abs (1 + 0)/2, rmse (1 + 0)/2
    pixel, image = DepthMetric(), DepthMetric(aggregation="image")
    for m in (pixel, image):
        m.update(*P)
        m.update(*Q)
    assert pixel.compute()["abs_err"] == pytest.approx(1 / 3)
    assert pixel.compute()["rmse"] == pytest.approx(math.sqrt(1 / 3))
    assert image.compute()["abs_err"] == pytest.approx(0.5)
    assert image.compute()["rmse"] == pytest.approx(0.5)


def test_mtan_compat_averages_batch_means():
    # batches P and Q: (1 + 0)/2 = 0.5, not the pixel mean 1/3
    m = DepthMetric(compat="mtan")
    m.update(*P)
    m.update(*Q)
    assert m.compute()["abs_err"] == pytest.approx(0.5)
    assert m.compute()["rel_err"] == pytest.approx(0.25)


def test_shape_errors():
    m = DepthMetric()
    with pytest.raises(ValueError, match=r"DepthMetric.update: target must be \[B, 1, H, W\]"):
        m.update(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2))
    with pytest.raises(ValueError, match=r"pred must be float of shape \(1, 1, 2, 2\)"):
        m.update(torch.zeros(1, 1, 2, 3), torch.zeros(1, 1, 2, 2))
