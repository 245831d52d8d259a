"""Dense regression error: MAE and RMSE pooled over every valid element of a split [pymtl].

For per-pixel regression targets without physical units (Taskonomy keypoints and edges,
standardised depth) scored as in Standley et al. (ICML 2020, L1 per task) [S]. The statistics
are the float64 sums of ``|p − g|`` and ``(p − g)²`` and the count of valid elements, so the
result does not depend on batch size or order (SPEC-data §2.9). A target element is valid when
it is finite; the dataset writes NaN where a pixel has no label.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from pymtl.metrics.base import Metric

__all__ = ["DenseRegressionMetric"]


class DenseRegressionMetric(Metric):
    """Mean absolute error and root-mean-square error over all valid elements [pymtl].

    ``update(pred, target, labelled)`` takes ``pred`` and ``target`` of the same shape
    ``[B, C, H, W]`` (any shape with the batch first works); NaN/inf targets are skipped.

    Example:
        >>> m = DenseRegressionMetric()
        >>> m.update(torch.zeros(1, 1, 1, 2), torch.tensor([[[[1.0, float("nan")]]]]))
        >>> m.compute()
        {'mae': 1.0, 'rmse': 1.0}
    """

    higher_is_better: ClassVar[dict[str, bool]] = {"mae": False, "rmse": False}

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._abs = 0.0
        self._sq = 0.0
        self._count = 0

    def update(self, pred: Tensor, target: Tensor, labelled: Tensor | None = None) -> None:
        if pred.shape != target.shape:
            raise ValueError(
                f"DenseRegressionMetric: pred and target must have the same shape, got "
                f"{tuple(pred.shape)} and {tuple(target.shape)}"
            )
        valid = torch.isfinite(target)
        if labelled is not None:
            if labelled.shape != (target.shape[0],):
                raise ValueError(
                    f"DenseRegressionMetric: labelled must have shape ({target.shape[0]},), "
                    f"got {tuple(labelled.shape)}"
                )
            keep = labelled.to(device=valid.device, dtype=torch.bool)
            valid = valid & keep.view(-1, *([1] * (valid.dim() - 1)))
        err = pred.detach().double()[valid] - target.detach().double()[valid]
        self._abs += float(err.abs().sum())
        self._sq += float((err * err).sum())
        self._count += int(valid.sum())

    def compute(self) -> dict[str, float]:
        if self._count == 0:
            return {"mae": math.nan, "rmse": math.nan}
        return {"mae": self._abs / self._count, "rmse": math.sqrt(self._sq / self._count)}
