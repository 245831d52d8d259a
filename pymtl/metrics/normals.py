"""Surface normals: angular error statistics over the valid pixels of a split.

Reference: SPEC-data §2.3 and SPEC-methods §5.4 [S][C:lorenmt/mtan][C:MTL-PyTorch].

Prediction and target are L2-normalised per pixel (the target is re-normalised too, since
resizing breaks unit length); valid pixels have a finite target of norm > 0 (and, with
``ignore_value``, not every channel equal to it). The angular error in degrees is
``θ = 2·atan2(‖p̂ − ĝ‖, ‖p̂ + ĝ‖)`` (Kahan): the same angle as ``arccos(clamp(p̂·ĝ, −1, 1))``
but accurate near 0° and 180°, and exactly 0 for a prediction equal to the target [pymtl].

Values over all valid pixels of the split: ``mean``, ``median``, ``rmse = sqrt(mean θ²)`` and
``within_t = mean[θ < t]`` for t = 11.25, 22.5, 30 (fractions in [0, 1], as the MTAN/CAGrad
tables store them; papers print them ×100).

**Median resolution** [pymtl]: the sufficient statistic is a histogram of θ with bins of
``bin_width`` degrees (default 0.01°, 18,000 bins) plus the smallest and largest θ. The median
(the mean of the two middle order statistics when the count is even, like ``numpy.median``) is
the centre of the bin holding each middle order statistic, clamped to [min θ, max θ]: it is
within ``bin_width / 2`` (0.005°) of the exact median, and exact when all errors are equal.
Mean, RMSE and the ``within`` fractions are exact (float64 sums, integer counts).

``compat="mtan"`` averages per-batch values with equal weight, as MTAN and Nash-MTL do (a mean
of batch medians is not the median; batch-size dependent).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from pymtl.metrics._accumulate import SplitMetric, safe_div, shape_error
from pymtl.tasks.base import vector_norm

__all__ = ["NormalsMetric"]

THRESHOLDS = (11.25, 22.5, 30.0)


class NormalsMetric(SplitMetric):
    """Mean, median and RMSE of the angular error, and the fraction of pixels within 11.25°,
    22.5° and 30° [S].

    Reference: SPEC-data §2.3, SPEC-methods §5.4; median from a 0.01° histogram (±0.005°).

    Args:
        ignore_value: a target pixel whose three channels all equal this value is invalid
            (PASCAL/NYUD-MT use 255); None: only norm-0 targets are invalid.
        bin_width: histogram bin width in degrees (sets the median's resolution).
        compat: None, or ``"mtan"`` for per-batch averaging (not batch-size invariant).

    ``update(pred, target)``: both [B, 3, H, W] float.

    Example:
        >>> m = NormalsMetric()
        >>> up = torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1)
        >>> m.update(torch.tensor([1.0, 0.0, 1.0]).view(1, 3, 1, 1), up)
        >>> round(m.compute()["mean"], 6), m.compute()["within_30"]
        (45.0, 0.0)
    """

    higher_is_better: ClassVar[dict[str, bool]] = {
        "mean": False,
        "median": False,
        "rmse": False,
        "within_11.25": True,
        "within_22.5": True,
        "within_30": True,
    }
    combine: ClassVar[dict[str, str]] = {"min": "min", "max": "max"}

    def __init__(
        self,
        *,
        ignore_value: float | None = None,
        bin_width: float = 0.01,
        compat: str | None = None,
    ) -> None:
        bins = 180.0 / bin_width if bin_width > 0 else math.nan
        if not (math.isfinite(bins) and abs(bins - round(bins)) < 1e-6 and 1 <= bins <= 1e7):
            raise ValueError(
                f"NormalsMetric: bin_width must divide 180 degrees into 1 to 1e7 bins "
                f"(got {bin_width})"
            )
        self.ignore_value = ignore_value
        self.bin_width = bin_width
        self.bins = round(bins)
        super().__init__(aggregation="pixel", compat=compat)

    def _validate(self, pred: Tensor, target: Tensor) -> None:
        if target.dim() != 4 or target.shape[1] != 3 or not target.dtype.is_floating_point:
            raise shape_error("NormalsMetric", "target", "[B, 3, H, W] float", target)
        if pred.shape != target.shape or not pred.dtype.is_floating_point:
            raise shape_error(
                "NormalsMetric", "pred", f"float of shape {tuple(target.shape)}", pred
            )

    def _statistics(self, pred: Tensor, target: Tensor, *, per_image: bool) -> dict[str, Tensor]:
        theta = self._angles(pred, target)
        index = (theta / self.bin_width).floor().to(torch.int64).clamp(0, self.bins - 1)
        stats = {
            "hist": torch.bincount(index, minlength=self.bins).view(1, -1),
            "n": torch.tensor([theta.numel()], dtype=torch.int64, device=theta.device),
            "sum": theta.sum().view(1),
            "sum_sq": theta.square().sum().view(1),
            "min": theta.min().view(1) if theta.numel() else theta.new_full((1,), math.inf),
            "max": theta.max().view(1) if theta.numel() else theta.new_full((1,), -math.inf),
        }
        for t in THRESHOLDS:
            stats[f"within_{t:g}"] = (theta < t).sum().view(1)
        return stats

    def _angles(self, pred: Tensor, target: Tensor) -> Tensor:
        """Angular errors (degrees, float64) of the valid pixels, flattened."""
        g = target.to(torch.float64).movedim(1, -1).reshape(-1, 3)
        p = pred.to(g.device, torch.float64).movedim(1, -1).reshape(-1, 3)
        norm = vector_norm(g, dim=1)
        valid = torch.isfinite(g).all(dim=1) & (norm > 0)
        if self.ignore_value is not None:
            valid &= ~(g == self.ignore_value).all(dim=1)
        g, p = g[valid], p[valid]
        g = g / vector_norm(g, dim=1, keepdim=True).clamp_min(1e-12)
        p = p / vector_norm(p, dim=1, keepdim=True).clamp_min(1e-12)
        return torch.rad2deg(2 * torch.atan2(vector_norm(p - g, dim=1), vector_norm(p + g, dim=1)))

    def _terms(self, stats: dict[str, Tensor], *, per_image: bool) -> dict[str, Tensor]:
        n = stats["n"]
        terms = {
            "mean": safe_div(stats["sum"], n),
            "median": self._median(stats),
            "rmse": safe_div(stats["sum_sq"], n).sqrt(),
        }
        for t in THRESHOLDS:
            terms[f"within_{t:g}"] = safe_div(stats[f"within_{t:g}"], n)
        return terms

    def _median(self, stats: dict[str, Tensor]) -> Tensor:
        """Median per row [N] from the histogram, clamped to [min, max] (NaN if empty)."""
        hist, n = stats["hist"], stats["n"]
        cumulative = hist.cumsum(dim=1)
        middle = torch.stack([(n - 1) // 2, n // 2], dim=1)  # 0-based ranks of the middle pair
        bins = torch.searchsorted(cumulative, middle, right=True).clamp_max(self.bins - 1)
        centres = (bins.to(torch.float64) + 0.5) * self.bin_width
        lo, hi = stats["min"].view(-1, 1), stats["max"].view(-1, 1)
        median = torch.minimum(torch.maximum(centres, lo), hi).mean(dim=1)
        return torch.where((n > 0) & ~stats["sum"].isnan(), median, math.nan)
