"""Saliency: maximum F-measure and maximum IoU over binarisation thresholds.

Reference: SPEC-data §2.5 and SPEC-methods §5.6 [S][C:MTL-PyTorch].

The predicted probability ``sigmoid(logit)`` is binarised with ``p > t`` for each threshold t
(default ``linspace(0.2, 0.9, 15)``, the ASTMT/MTL-PyTorch set); target pixels equal to
``ignore_value`` are left out. ``F_β = (1 + β²)·P·R / (β²·P + R)``; ``maxF = max_t F_t`` and
``max_iou = max_t IoU_t``. ``beta2`` defaults to 1 as in the MTL-PyTorch code (the classic
salient-object literature uses β² = 0.3; the numbers are not interchangeable).

* ``aggregation="pixel"`` (default) [pymtl]: TP, FP and FN per threshold are summed over the
  split; ``P = TP/(TP+FP)``, ``R = TP/(TP+FN)``, ``IoU = TP/(TP+FP+FN)``. A threshold at which
  neither the targets nor the predictions hold a positive pixel has no F or IoU (NaN) and is
  skipped by the max; otherwise an empty denominator gives P (or R) = 0.
* ``aggregation="image"`` (the MTL-PyTorch / ASTMT protocol) [C:MTL-PyTorch]: per image and
  threshold, P and R with an empty denominator count 0, and the IoU of an image with neither
  target nor predicted positives counts 1; P, R and IoU are averaged over images per threshold,
  then ``F_t`` is computed from the mean P and mean R. Images without any valid pixel are
  skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from pymtl.metrics._accumulate import SplitMetric, check_binary_map, check_thresholds, safe_div

__all__ = ["DEFAULT_THRESHOLDS", "SaliencyMetric"]

DEFAULT_THRESHOLDS = tuple(torch.linspace(0.2, 0.9, 15, dtype=torch.float64).tolist())
"""ASTMT/MTL-PyTorch saliency thresholds: 15 values from 0.2 to 0.9."""


class SaliencyMetric(SplitMetric):
    """Maximum F-measure and maximum IoU of a binarised saliency map over thresholds [S].

    Reference: SPEC-methods §5.6 (thresholds, β², image-averaging protocol of MTL-PyTorch
    ``eval_sal``); the default pixel aggregation pools counts over the split [pymtl].

    Args:
        ignore_value: target value of unlabelled pixels.
        thresholds: probabilities at which the prediction is binarised (``p > t``).
        beta2: β² of the F-measure.
        aggregation: ``"pixel"`` (counts over the split) or ``"image"`` (MTL-PyTorch protocol).

    ``update(pred, target)``: ``pred`` logits [B, 1, H, W]; ``target`` [B, 1, H, W] float in
    {0, 1} or ``ignore_value``.

    Example:
        >>> m = SaliencyMetric(thresholds=[0.5])
        >>> m.update(torch.tensor([[[[5.0, 5.0, -5.0]]]]), torch.tensor([[[[1.0, 0.0, 1.0]]]]))
        >>> m.compute()
        {'maxF': 0.5, 'max_iou': 0.3333333333333333}
    """

    higher_is_better: ClassVar[dict[str, bool]] = {"maxF": True, "max_iou": True}
    aggregations: ClassVar[tuple[str, ...]] = ("pixel", "image")

    def __init__(
        self,
        ignore_value: float = 255.0,
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
        *,
        beta2: float = 1.0,
        aggregation: str = "pixel",
    ) -> None:
        if not beta2 > 0:
            raise ValueError(f"SaliencyMetric: beta2 must be > 0 (got {beta2})")
        self.ignore_value = ignore_value
        self.thresholds = check_thresholds("SaliencyMetric", thresholds)
        self.beta2 = beta2
        super().__init__(aggregation=aggregation)

    def _validate(self, pred: Tensor, target: Tensor) -> None:
        check_binary_map("SaliencyMetric", pred, target, self.ignore_value)

    def _statistics(self, pred: Tensor, target: Tensor, *, per_image: bool) -> dict[str, Tensor]:
        valid = (target != self.ignore_value).flatten(1)
        truth = (target == 1).flatten(1) & valid
        prob = torch.sigmoid(pred.to(target.device, torch.float64)).flatten(1)
        t = torch.tensor(self.thresholds, dtype=torch.float64, device=prob.device)
        guess = (prob[:, None, :] > t[None, :, None]) & valid[:, None, :]  # [B, K, HW]
        tp = (guess & truth[:, None, :]).sum(dim=2)
        stats = {
            "tp": tp,
            "fp": guess.sum(dim=2) - tp,
            "fn": truth.sum(dim=1, keepdim=True) - tp,
            "n": valid.sum(dim=1, keepdim=True),
        }
        if not per_image:
            stats = {key: value.sum(dim=0, keepdim=True) for key, value in stats.items()}
        return stats

    def _terms(self, stats: dict[str, Tensor], *, per_image: bool) -> dict[str, Tensor]:
        tp, fp, fn = stats["tp"], stats["fp"], stats["fn"]
        if per_image:  # MTL-PyTorch: empty denominators give 0, an empty image IoU 1
            empty = (tp + fp + fn) == 0
            precision = torch.nan_to_num(safe_div(tp, tp + fp), nan=0.0)
            recall = torch.nan_to_num(safe_div(tp, tp + fn), nan=0.0)
            iou = torch.where(empty, 1.0, torch.nan_to_num(safe_div(tp, tp + fp + fn)))
            unlabelled = (stats["n"] == 0).expand_as(tp)  # no valid pixel: skip the image
            terms = {"precision": precision, "recall": recall, "iou": iou}
            return {key: torch.where(unlabelled, torch.nan, v) for key, v in terms.items()}
        undefined = (tp + fp + fn) == 0
        precision = torch.where(
            undefined, torch.nan, torch.nan_to_num(safe_div(tp, tp + fp), nan=0.0)
        )
        recall = torch.where(undefined, torch.nan, torch.nan_to_num(safe_div(tp, tp + fn), nan=0.0))
        return {"precision": precision, "recall": recall, "iou": safe_div(tp, tp + fp + fn)}

    def _finish(self, terms: dict[str, Tensor]) -> dict[str, Tensor]:
        p, r, b2 = terms["precision"], terms["recall"], self.beta2
        f = torch.nan_to_num(safe_div((1 + b2) * p * r, b2 * p + r), nan=0.0)
        f = torch.where(p.isnan() | r.isnan(), torch.nan, f)
        return {"maxF": _nanmax(f), "max_iou": _nanmax(terms["iou"])}


def _nanmax(values: Tensor) -> Tensor:
    """Largest non-NaN entry (NaN when all are NaN)."""
    finite = values[~values.isnan()]
    return finite.max() if finite.numel() else values.new_tensor(float("nan"))
