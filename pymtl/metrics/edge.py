"""Edge detection: optimal-dataset-scale (ODS) and optimal-image-scale (OIS) F-measure.

Reference: SPEC-data §2.4 and SPEC-methods §5.5 [S][C:MTL-PyTorch evaluation (seism)].

For each threshold t (default 0.01, 0.02, …, 0.99) and image:

1. binarise the predicted probability ``sigmoid(logit) >= t``; pixels whose target equals
   ``ignore_value`` are dropped from both maps;
2. with ``thin=True`` (default) thin the binary map to one-pixel strokes (:mod:`._thinning`,
   the ``bwmorph 'thin'`` step of BSDS/SEISM); the ground truth is used as given;
3. match predicted edge pixels to ground-truth edge pixels one-to-one: a pair may match when
   their Euclidean distance is at most ``r = tolerance · sqrt(H² + W²)`` pixels; the number of
   matches is that of a **maximum bipartite matching**, computed exactly
   (:mod:`pymtl.metrics._matching`: a numba augmenting-path kernel, checked against SciPy's
   Hopcroft–Karp in the tests);
4. sum over the split: matched predicted pixels, predicted pixels, matched ground-truth pixels,
   ground-truth pixels. ``P = matched_pred / pred``, ``R = matched_gt / gt``,
   ``F = 2PR / (P + R)``; ``odsF = max_t F``. ``oisF`` pools, over images, the counts at each
   image's own best threshold (the first one on ties).

A threshold at which the split holds no predicted and no ground-truth edge pixel has no F
(NaN; skipped by the max); otherwise an empty denominator gives P (or R) = 0 and F = 0 when
P + R = 0.

**Differences from the MATLAB reference (SEISM / BSDS ``correspondPixels``)** [R]:

* correspondPixels solves a *minimum-cost* assignment (Goldberg's CSA on integer costs, 100 ×
  the distance) in which every unmatched pixel costs ``100 · maxDist · diagonal``. That cost is
  far above any within-tolerance distance, so its assignment matches as many pixels as it can
  except in contrived cases; pymtl computes the maximum number of matches directly, and the
  distances play no role. Counts can differ where a cheaper CSA assignment gives up a match,
  and through CSA's sparse random outlier graph (degree 6). Not validated against MATLAB here.
* No non-maximum suppression (ATRC/InvPT run pdollar NMS first; supply NMS'd maps if needed).
* The thinning is a reimplementation of the published algorithm, not MATLAB's binary.
* Official PASCAL-Context / NYUD numbers still require SEISM (SPEC-data §2.4).

Tolerance: 0.0075 (SEISM default, PASCAL); 0.011 for NYUD. On 64×64 images 0.0075 gives
r = 0.68 px, i.e. only exact coincidences match.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from pymtl.metrics._accumulate import SplitMetric, check_binary_map, check_thresholds, safe_div

__all__ = ["DEFAULT_THRESHOLDS", "EdgeMetric"]

DEFAULT_THRESHOLDS = tuple(round(0.01 * k, 2) for k in range(1, 100))
"""99 thresholds 0.01 … 0.99, as MTL-PyTorch writes them for SEISM."""

_COUNTS = ("match_pred", "pred", "match_gt", "gt")


class EdgeMetric(SplitMetric):
    """ODS and OIS F-measure of soft edge maps with one-to-one matching within a tolerance [S].

    Reference: SPEC-data §2.4 (BSDS/SEISM protocol), SPEC-methods §5.5; differences from the
    MATLAB reference are listed in the module docstring [R].

    Args:
        tolerance: matching distance as a fraction of the image diagonal.
        ignore_value: target value of unlabelled pixels.
        thresholds: probabilities at which the prediction is binarised (``p >= t``).
        thin: thin each binarised prediction to one-pixel strokes first.

    ``update(pred, target)``: ``pred`` logits [B, 1, H, W]; ``target`` [B, 1, H, W] float in
    {0, 1} or ``ignore_value``. Thinning and matching run on the CPU (numpy + numba kernels,
    compiled on first use and cached).

    Example:
        >>> m = EdgeMetric(tolerance=0.2, thresholds=[0.5])
        >>> gt = torch.zeros(1, 1, 5, 5); gt[0, 0, :, 2] = 1
        >>> m.update(torch.where(gt.roll(1, dims=3) > 0, 5.0, -5.0), gt)  # shifted by 1 px
        >>> m.compute()
        {'odsF': 1.0, 'oisF': 1.0}
    """

    higher_is_better: ClassVar[dict[str, bool]] = {"odsF": True, "oisF": True}

    def __init__(
        self,
        tolerance: float = 0.0075,
        ignore_value: float = 255.0,
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
        *,
        thin: bool = True,
    ) -> None:
        if not (math.isfinite(tolerance) and tolerance >= 0):
            raise ValueError(f"EdgeMetric: tolerance must be finite and >= 0 (got {tolerance})")
        self.tolerance = tolerance
        self.ignore_value = ignore_value
        self.thresholds = check_thresholds("EdgeMetric", thresholds)
        self.thin = thin
        super().__init__()

    def _validate(self, pred: Tensor, target: Tensor) -> None:
        check_binary_map("EdgeMetric", pred, target, self.ignore_value)

    def _statistics(self, pred: Tensor, target: Tensor, *, per_image: bool) -> dict[str, Tensor]:
        valid = (target != self.ignore_value)[:, 0].cpu().numpy()
        truth = (target == 1)[:, 0].cpu().numpy() & valid
        prob = torch.sigmoid(pred.detach().to("cpu", torch.float64))[:, 0].numpy()
        t = np.asarray(self.thresholds, dtype=np.float64)
        counts = []
        for b in range(prob.shape[0]):  # one image at a time bounds the memory to [K, H, W]
            maps = (prob[b] >= t[:, None, None]) & valid[b]
            matched, n_pred = self._count(maps, truth[b])
            counts.append(
                np.stack([matched, n_pred, matched, np.full_like(matched, truth[b].sum())], -1)
            )
        per = torch.from_numpy(np.stack(counts).astype(np.int64))  # [B, K, 4]
        stats = {key: per[..., i] for i, key in enumerate(_COUNTS)}
        stats["ois"] = _best_threshold_counts(per)
        if not per_image:
            stats = {key: value.sum(dim=0, keepdim=True) for key, value in stats.items()}
        return stats

    def _count(
        self, maps: NDArray[np.bool_], truth: NDArray[np.bool_]
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """[K] matched and predicted pixel counts of one image's maps [K, H, W] against its
        ground truth [H, W]. A threshold whose binary map equals the previous threshold's
        (saturated predictions) reuses that map's counts."""
        from pymtl._thinning import thin_maps
        from pymtl.metrics._matching import match_counts  # numba: imported on first use

        K, H, W = maps.shape
        new = np.ones(K, dtype=bool)
        new[1:] = (maps[1:] != maps[:-1]).any(axis=(1, 2))
        slot = np.cumsum(new) - 1  # [K]: the distinct map each threshold uses
        todo = thin_maps(maps[new]) if self.thin else maps[new]  # [M, H, W]
        radius = self.tolerance * math.hypot(H, W)
        image = np.zeros(todo.shape[0], dtype=np.int64)
        matched = match_counts(todo, image, truth[None], radius)
        return matched[slot], todo.sum(axis=(1, 2)).astype(np.int64)[slot]

    def _terms(self, stats: dict[str, Tensor], *, per_image: bool) -> dict[str, Tensor]:
        f = _f_measure(*(stats[key] for key in _COUNTS))  # [N, K]
        finite = torch.where(f.isnan(), -math.inf, f).amax(dim=1)
        ods = torch.where(torch.isinf(finite), math.nan, finite)
        ois = _f_measure(*stats["ois"].unbind(dim=-1))
        return {"odsF": ods, "oisF": ois}


def _f_measure(match_pred: Tensor, pred: Tensor, match_gt: Tensor, gt: Tensor) -> Tensor:
    """F from matched/total counts (any equal shapes); NaN where pred + gt is 0."""
    p = torch.nan_to_num(safe_div(match_pred, pred), nan=0.0)  # float64
    r = torch.nan_to_num(safe_div(match_gt, gt), nan=0.0)
    f = torch.nan_to_num(safe_div(2 * p * r, p + r), nan=0.0)
    return torch.where((pred + gt) > 0, f, math.nan)


def _best_threshold_counts(per: Tensor) -> Tensor:
    """[B, 4]: each image's counts at its best threshold (first on ties; zeros if none)."""
    f = _f_measure(*per.unbind(dim=-1))  # [B, K]
    best = torch.where(f.isnan(), -1.0, f).argmax(dim=1)
    chosen = per[torch.arange(per.shape[0]), best]
    return torch.where(f.isnan().all(dim=1, keepdim=True), 0, chosen)
