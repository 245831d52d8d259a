"""Depth: absolute/relative errors, RMSEs, log10 error and δ thresholds over valid pixels.

Reference: SPEC-data §2.2 and SPEC-methods §5.3 [S][C:lorenmt/mtan][C:MTL-PyTorch].

With ``d`` the prediction and ``g`` the ground truth, over the valid pixels V (``g`` finite and
``g != invalid_value``) of the whole split:

* ``abs_err = mean_V |d − g|`` and ``rmse = sqrt(mean_V (d − g)²)``;
* over V⁺ = {v ∈ V : g > 0} (the terms below divide by, or take the log of, ``g``):
  ``rel_err = mean |d − g| / g``, ``sq_rel = mean (d − g)² / g``,
  ``rmse_log = sqrt(mean (ln d' − ln g)²)``, ``log10 = mean |log10 d' − log10 g|``,
  ``delta_k = mean[max(d'/g, g/d') < 1.25^k]`` for k = 1, 2, 3 (a fraction in [0, 1]),
  where ``d' = max(d, 1e-9)``: predictions are clamped before the log as in MTL-PyTorch [C].

MTAN, CAGrad, Nash-MTL and LibMTL report only ``abs_err`` and ``rel_err``; MTL-PyTorch reports
``rmse`` and ``rmse_log``; ``log10``, ``sq_rel`` and δ come from the depth-estimation
literature (Eigen et al.) [S]. No crop and no depth cap are applied.

``aggregation="image"`` computes every value per image and averages over images (Eigen / ASTMT
style); ``compat="mtan"`` averages per-batch masked means with equal weight, as the MTAN
trainer does (batch-size dependent, SPEC-data §2.2 "Known bug").
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from pymtl.metrics._accumulate import SplitMetric, safe_div, shape_error

__all__ = ["DepthMetric"]

_SUMS = ("n", "abs", "sq", "n_pos", "rel", "sq_rel", "log_sq", "log10", "d1", "d2", "d3")


class DepthMetric(SplitMetric):
    """Depth errors and accuracies over the valid pixels of a split [S].

    Reference: SPEC-data §2.2 (definitions table, MTL conventions), SPEC-methods §5.3.

    Args:
        invalid_value: target value of pixels without depth (non-finite targets are invalid
            too).
        aggregation: ``"pixel"`` (pooled over the split) or ``"image"`` (per-image mean).
        compat: None, or ``"mtan"`` for per-batch averaging (not batch-size invariant).
        eps: lower clamp of the prediction in the log and ratio terms.

    ``update(pred, target)``: both [B, 1, H, W] float.

    Example:
        >>> m = DepthMetric()
        >>> m.update(torch.tensor([[[[1.0, 3.0]]]]), torch.tensor([[[[2.0, 0.0]]]]))
        >>> m.compute()["abs_err"], m.compute()["rel_err"]
        (1.0, 0.5)
    """

    higher_is_better: ClassVar[dict[str, bool]] = {
        "abs_err": False,
        "rel_err": False,
        "sq_rel": False,
        "rmse": False,
        "rmse_log": False,
        "log10": False,
        "delta1": True,
        "delta2": True,
        "delta3": True,
    }
    aggregations: ClassVar[tuple[str, ...]] = ("pixel", "image")

    def __init__(
        self,
        invalid_value: float = 0.0,
        *,
        aggregation: str = "pixel",
        compat: str | None = None,
        eps: float = 1e-9,
    ) -> None:
        if not eps > 0:
            raise ValueError(f"DepthMetric: eps must be > 0 (got {eps})")
        self.invalid_value = invalid_value
        self.eps = eps
        super().__init__(aggregation=aggregation, compat=compat)

    def _validate(self, pred: Tensor, target: Tensor) -> None:
        if target.dim() != 4 or target.shape[1] != 1 or not target.dtype.is_floating_point:
            raise shape_error("DepthMetric", "target", "[B, 1, H, W] float", target)
        if pred.shape != target.shape or not pred.dtype.is_floating_point:
            raise shape_error("DepthMetric", "pred", f"float of shape {tuple(target.shape)}", pred)

    def _statistics(self, pred: Tensor, target: Tensor, *, per_image: bool) -> dict[str, Tensor]:
        g = target.to(torch.float64).flatten(1)
        d = pred.to(g.device, torch.float64).flatten(1)
        if not per_image:
            g, d = g.reshape(1, -1), d.reshape(1, -1)
        valid = torch.isfinite(g) & (g != self.invalid_value)
        pos = valid & (g > 0)
        g_pos = torch.where(pos, g, 1.0)
        d_pos = torch.where(pos, d.clamp_min(self.eps), 1.0)
        err = torch.where(valid, d - torch.where(valid, g, 0.0), 0.0)
        log_ratio = torch.log(d_pos) - torch.log(g_pos)
        ratio = torch.maximum(d_pos / g_pos, g_pos / d_pos)
        within = [(pos & (ratio < 1.25**k)).sum(dim=1) for k in (1, 2, 3)]
        values = [
            valid.sum(dim=1),
            err.abs().sum(dim=1),
            err.square().sum(dim=1),
            pos.sum(dim=1),
            torch.where(pos, err.abs() / g_pos, 0.0).sum(dim=1),
            torch.where(pos, err.square() / g_pos, 0.0).sum(dim=1),
            torch.where(pos, log_ratio.square(), 0.0).sum(dim=1),
            torch.where(pos, log_ratio.abs() / math.log(10.0), 0.0).sum(dim=1),
            *within,
        ]
        return {key: v.to(torch.float64) for key, v in zip(_SUMS, values, strict=True)}

    def _terms(self, stats: dict[str, Tensor], *, per_image: bool) -> dict[str, Tensor]:
        n, n_pos = stats["n"], stats["n_pos"]
        return {
            "abs_err": safe_div(stats["abs"], n),
            "rel_err": safe_div(stats["rel"], n_pos),
            "sq_rel": safe_div(stats["sq_rel"], n_pos),
            "rmse": safe_div(stats["sq"], n).sqrt(),
            "rmse_log": safe_div(stats["log_sq"], n_pos).sqrt(),
            "log10": safe_div(stats["log10"], n_pos),
            "delta1": safe_div(stats["d1"], n_pos),
            "delta2": safe_div(stats["d2"], n_pos),
            "delta3": safe_div(stats["d3"], n_pos),
        }
