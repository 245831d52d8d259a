import math

import numpy as np
import pytest
import torch
from scipy.ndimage import label

from pymtl._thinning import THIN_LUTS, thin_maps, thin_maps_reference
from pymtl.metrics._matching import disc_offsets, match_counts, match_counts_reference
from pymtl.metrics.edge import DEFAULT_THRESHOLDS, EdgeMetric

# 16×16 images: diagonal 22.63 px, so tolerance 0.05 → r = 1.13 px, 0.02 → r = 0.45 px.
NEAR, FAR = 0.05, 0.02


def _logits(mask: torch.Tensor, on: float = 5.0) -> torch.Tensor:
    return torch.where(mask > 0, on, -5.0)


def _line(column: int) -> torch.Tensor:
    target = torch.zeros(1, 1, 16, 16)
    target[0, 0, 2:14, column] = 1.0
    return target


def test_perfect_prediction():
    gt = _line(5)
    m = EdgeMetric()
    m.update(_logits(gt), gt)
    assert m.compute() == {"odsF": 1.0, "oisF": 1.0}


def test_shift_by_one_pixel_within_and_beyond_tolerance():
    gt, shifted = _line(5), _line(6)
    near, far = EdgeMetric(tolerance=NEAR), EdgeMetric(tolerance=FAR)
    for m in (near, far):
        m.update(_logits(shifted), gt)
    assert near.compute()["odsF"] == 1.0
    assert far.compute()["odsF"] == 0.0  # P = R = 0 at every threshold with predictions


def test_matching_is_one_to_one():
    # one gt pixel at (5, 5); predictions at (5, 4) and (5, 6), both within 1.13 px:
    # matched 1, predicted 2, gt 1 → P = 1/2, R = 1 → F = 2·(1/2)·1/(3/2) = 2/3
    gt = torch.zeros(1, 1, 16, 16)
    gt[0, 0, 5, 5] = 1
    pred = torch.zeros(1, 1, 16, 16)
    pred[0, 0, 5, 4] = pred[0, 0, 5, 6] = 1
    m = EdgeMetric(tolerance=NEAR)
    m.update(_logits(pred), gt)
    assert m.compute()["odsF"] == pytest.approx(2 / 3)


def test_counts_pool_over_the_split_and_ois_picks_per_image():
    """Thresholds 0.3 and 0.7; r = 1.13 px.

    Image 1: gt = 4-px line, predicted at p = 0.9, plus 2 far spurious pixels at p = 0.5.
    Image 2: gt = 4-px line, predicted at p = 0.5 only.
      t = 0.3: matched 4 + 4, predicted 6 + 4, gt 8 → P = 0.8, R = 1 → F = 1.6/1.8 = 8/9
      t = 0.7: matched 4 + 0, predicted 4 + 0, gt 8 → P = 1, R = 0.5 → F = 2/3
      odsF = 8/9. OIS: image 1 is best at 0.7 (F = 1), image 2 at 0.3 (F = 1) → oisF = 1.
    """
    gt = torch.zeros(2, 1, 16, 16)
    gt[:, 0, 3, 3:7] = 1
    logits = torch.full((2, 1, 16, 16), -5.0)
    logits[0, 0, 3, 3:7] = math.log(9)  # sigmoid = 0.9
    logits[0, 0, 12, 12] = logits[0, 0, 12, 3] = 0.0  # sigmoid = 0.5
    logits[1, 0, 3, 3:7] = 0.0
    m = EdgeMetric(tolerance=NEAR, thresholds=[0.3, 0.7])
    m.update(logits, gt)
    assert m.compute() == pytest.approx({"odsF": 8 / 9, "oisF": 1.0})


def test_ignored_pixels_are_dropped():
    gt = _line(5)
    gt[0, 0, :, 10:] = 255.0  # predictions there do not count
    pred = _line(5)
    pred[0, 0, :, 12] = 1
    m = EdgeMetric()
    m.update(_logits(pred), gt)
    assert m.compute()["odsF"] == 1.0


def test_no_edges_anywhere_is_nan():
    m = EdgeMetric()
    m.update(torch.full((1, 1, 8, 8), -6.0), torch.zeros(1, 1, 8, 8))  # sigmoid < 0.01
    out = m.compute()
    assert math.isnan(out["odsF"])
    assert math.isnan(out["oisF"])


def test_thinning_turns_a_thick_line_into_a_thin_one():
    gt = _line(6)
    thick = _line(5) + _line(6) + _line(7)
    m = EdgeMetric(tolerance=NEAR)
    m.update(_logits(thick), gt)
    unthinned = EdgeMetric(tolerance=NEAR, thin=False)
    unthinned.update(_logits(thick), gt)
    assert m.compute()["odsF"] > 0.9
    assert unthinned.compute()["odsF"] == pytest.approx(2 * (1 / 3) / (1 / 3 + 1))  # P 1/3, R 1


@pytest.mark.parametrize("scale", [2.0, 40.0])  # 40: saturated, most thresholds share a map
def test_matches_brute_force_reference(scale):
    """Per image and threshold, EdgeMetric's counts are those of the reference thinning and
    SciPy's Hopcroft–Karp applied threshold by threshold; odsF is the best pooled F."""
    gen = torch.Generator().manual_seed(3)
    gt = (torch.rand(3, 1, 12, 12, generator=gen) < 0.15).float()
    logits = scale * torch.randn(3, 1, 12, 12, generator=gen) + 2 * gt
    thresholds = DEFAULT_THRESHOLDS[::7]
    m = EdgeMetric(tolerance=0.15, thresholds=thresholds)  # r = 2.55 px
    stats = m._statistics(logits, gt, per_image=True)  # [3, K] per key
    m.update(logits, gt)
    prob = torch.sigmoid(logits.double())[:, 0].numpy()
    truth = gt[:, 0].numpy() > 0
    best = -1.0
    for k, t in enumerate(thresholds):
        maps = thin_maps_reference(prob >= t)
        matched = match_counts_reference(maps, np.arange(3), truth, 0.15 * math.hypot(12, 12))
        assert stats["match_pred"][:, k].tolist() == matched.tolist()
        assert stats["pred"][:, k].tolist() == maps.sum(axis=(1, 2)).tolist()
        p, r = matched.sum() / max(maps.sum(), 1), matched.sum() / truth.sum()
        best = max(best, 2 * p * r / (p + r) if p + r > 0 else 0.0)
    assert m.compute()["odsF"] == pytest.approx(best, abs=1e-12)


@pytest.mark.parametrize("radius", [0.5, 1.0, 1.5, 2.9])
def test_matching_kernel_equals_hopcroft_karp(radius):
    rng = np.random.default_rng(int(radius * 10))
    maps = rng.random((20, 10, 11)) < 0.3
    truth = rng.random((4, 10, 11)) < 0.25
    image = rng.integers(0, 4, size=20)
    expected = match_counts_reference(maps, image, truth, radius)
    assert np.array_equal(match_counts(maps, image, truth, radius), expected)


def test_disc_offsets():
    assert disc_offsets(0.9).tolist() == [[0, 0]]
    assert len(disc_offsets(1.0)) == 5
    assert len(disc_offsets(1.5)) == 9
    assert disc_offsets(2.0).tolist()[0] == [0, 0]  # nearest first


def test_thinning_kernel_equals_reference():
    rng = np.random.default_rng(0)
    maps = rng.random((30, 12, 13)) < 0.6
    maps[:5] = True  # full blobs take many iterations
    assert np.array_equal(thin_maps(maps), thin_maps_reference(maps))


def test_thinning_reproduces_the_documented_bwmorph_example():
    """The 7×7 example of scikit-image's ``thin`` / pyEdgeEval's ``bwmorph_thin`` docs: a 3×5
    block with a diagonal spur thins to the spur plus a 3-px vertical stroke."""
    square = np.zeros((1, 7, 7), dtype=bool)
    square[0, 1:-1, 2:-2] = True
    square[0, 0, 1] = True
    expected = np.zeros((7, 7), dtype=bool)
    expected[[0, 1, 2, 3, 4], [1, 2, 3, 3, 3]] = True
    assert np.array_equal(thin_maps(square)[0], expected)
    assert np.array_equal(thin_maps_reference(square)[0], expected)


def test_thinning_keeps_strokes_and_isolated_pixels():
    block = np.zeros((1, 9, 12), dtype=bool)
    block[0, 2:7, 1:11] = True  # a 5 × 10 bar thins to its 1-px-wide middle line
    thin = thin_maps(block)[0]
    assert (thin <= block[0]).all()
    assert thin.sum() >= 4
    assert thin.sum(axis=0).max() == 1  # one pixel per column: a horizontal stroke
    assert label(thin, structure=np.ones((3, 3)))[1] == 1  # still one 8-connected piece
    single = np.zeros((1, 5, 5), dtype=bool)
    single[0, 2, 2] = True
    assert np.array_equal(thin_maps(single), single)
    # an isolated pixel (code 0) and a line end (code 1: east neighbour only) survive
    assert THIN_LUTS[:, 0].tolist() == [0, 0]
    assert THIN_LUTS[:, 1].tolist() == [0, 0]


def test_invalid_inputs():
    with pytest.raises(ValueError, match=r"target must hold 0, 1 or ignore_value=255 \(got 0.5\)"):
        EdgeMetric().update(torch.zeros(1, 1, 4, 4), torch.full((1, 1, 4, 4), 0.5))
    with pytest.raises(ValueError, match=r"thresholds must be a non-empty increasing sequence"):
        EdgeMetric(thresholds=[0.5, 0.2])
    with pytest.raises(ValueError, match=r"tolerance must be finite and >= 0"):
        EdgeMetric(tolerance=-1.0)
