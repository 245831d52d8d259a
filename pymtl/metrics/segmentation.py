"""Semantic segmentation: mIoU and pixel accuracy from a confusion matrix over the split.

Reference: SPEC-data §2.1 and SPEC-methods §5.2 [S][C:lorenmt/mtan][C:MTL-PyTorch].

* The confusion matrix ``C`` (rows ground truth, columns prediction) counts the valid pixels
  (``0 <= g < num_classes``) of the whole split, ``IoU_c = C_cc / (Σ_j C_cj + Σ_i C_ic − C_cc)``,
  ``mIoU = mean_c IoU_c`` and ``pixel_acc = trace(C) / ΣC``. Values are fractions in [0, 1].
* **Absent classes** (empty union: in neither the ground truth nor the prediction) [pymtl]:
  ``absent="skip"`` (default) leaves them out of the mean, like MGDA's ``nanmean``;
  ``absent="zero"`` counts them as IoU 0, like MTL-PyTorch's ``tp / max(union, 1e-8)``. The
  MTAN/LibMTL/Nash-MTL ``mean`` of 0/0 makes the whole mIoU NaN instead; pymtl never does.
* ``aggregation="image"``: mIoU over the classes present in each image (union ≠ 0), and pixel
  accuracy per image, averaged over images; images without valid pixels are skipped. With
  ``compat="mtan"`` this is the legacy (pre-Nov-2020) MTAN metric that KD4MTL's tables use:
  per-image values averaged per batch, then over batches (batch-size dependent).
* ``require_foreground=True`` skips images whose valid pixels are all class 0 (human parts:
  only images with annotated persons count, SPEC-methods §5.7).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from pymtl.metrics._accumulate import SplitMetric, safe_div, shape_error

__all__ = ["SegmentationMetric"]

_ABSENT = ("skip", "zero")


class SegmentationMetric(SplitMetric):
    """Mean intersection-over-union and pixel accuracy of per-pixel class labels [S].

    Reference: SPEC-data §2.1 (confusion matrix over the split as in MTAN ≥ Nov 2020, LibMTL,
    CAGrad, Nash-MTL; absent-class conventions); SPEC-methods §5.2.

    Args:
        num_classes: number of classes C.
        ignore_index: target value of unlabelled pixels (any value outside [0, C) other than
            this one is an error).
        aggregation: ``"pixel"`` (confusion over the split) or ``"image"`` (per-image mean).
        compat: None, or ``"mtan"`` for per-batch averaging (not batch-size invariant).
        absent: ``"skip"`` or ``"zero"``: how classes with an empty union enter the mean.
        require_foreground: skip images whose valid target pixels are all class 0.

    ``update(pred, target)``: ``pred`` logits [B, C, H, W] (argmax over C) or hard labels
    [B, H, W] (integer); ``target`` [B, H, W] int64.

    Example:
        >>> m = SegmentationMetric(num_classes=2)
        >>> m.update(torch.tensor([[[0, 1], [1, 1]]]), torch.tensor([[[0, 1], [0, -1]]]))
        >>> m.compute()
        {'miou': 0.5, 'pixel_acc': 0.6666666666666666}
    """

    higher_is_better: ClassVar[dict[str, bool]] = {"miou": True, "pixel_acc": True}
    aggregations: ClassVar[tuple[str, ...]] = ("pixel", "image")

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = -1,
        *,
        aggregation: str = "pixel",
        compat: str | None = None,
        absent: str = "skip",
        require_foreground: bool = False,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"SegmentationMetric: num_classes must be >= 1 (got {num_classes})")
        if absent not in _ABSENT:
            raise ValueError(
                f"SegmentationMetric: absent must be 'skip' or 'zero' (got {absent!r})"
            )
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.absent = absent
        self.require_foreground = require_foreground
        super().__init__(aggregation=aggregation, compat=compat)

    def class_iou(self) -> Tensor:
        """IoU per class [C] over the split (NaN for absent classes); pixel aggregation only."""
        if self.aggregation != "pixel" or self.compat is not None:
            raise ValueError(
                "SegmentationMetric.class_iou: needs aggregation='pixel' and compat=None "
                f"(got aggregation={self.aggregation!r}, compat={self.compat!r})"
            )
        if not self._sums:
            return torch.full((self.num_classes,), torch.nan, dtype=torch.float64)
        return _iou(self._sums["confusion"][0]).cpu()

    def _validate(self, pred: Tensor, target: Tensor) -> None:
        name, C = "SegmentationMetric", self.num_classes
        if target.dim() != 3 or target.dtype.is_floating_point or target.dtype == torch.bool:
            raise shape_error(name, "target", "[B, H, W] integer class indices", target)
        hard = pred.dim() == 3 and not pred.dtype.is_floating_point and pred.dtype != torch.bool
        if not (hard or (pred.dim() == 4 and pred.shape[1] == C and pred.dtype.is_floating_point)):
            raise shape_error(name, "pred", f"[B, {C}, H, W] logits or [B, H, W] labels", pred)
        spatial = pred.shape[-2:]
        if target.shape[-2:] != spatial:
            raise shape_error(name, "target", f"[B, {spatial[0]}, {spatial[1]}] like pred", target)
        bad = (target != self.ignore_index) & ((target < 0) | (target >= C))
        if bool(bad.any()):
            raise ValueError(
                f"{name}.update: target holds {target[bad][0].item()} (expected class indices "
                f"in [0, {C}) or ignore_index={self.ignore_index})"
            )
        if hard and bool(((pred < 0) | (pred >= C)).any()):
            raise ValueError(
                f"{name}.update: pred labels must lie in [0, {C}) "
                f"(got {sorted(set(pred[(pred < 0) | (pred >= C)].tolist()))[:5]})"
            )

    def _statistics(self, pred: Tensor, target: Tensor, *, per_image: bool) -> dict[str, Tensor]:
        C = self.num_classes
        labels = pred.argmax(dim=1) if pred.dim() == 4 else pred
        labels = labels.to(target.device, torch.int64)
        valid = (target >= 0) & (target < C)
        if self.require_foreground:
            keep = (valid & (target > 0)).flatten(1).any(dim=1)
            labels, target, valid = labels[keep], target[keep], valid[keep]
        rows = target.shape[0] if per_image else 1
        image = torch.arange(target.shape[0], device=target.device).view(-1, 1, 1)
        image = image if per_image else torch.zeros_like(image)
        index = (image * C + target) * C + labels
        counts = torch.bincount(index[valid], minlength=rows * C * C)
        return {"confusion": counts.view(rows, C, C)}

    def _terms(self, stats: dict[str, Tensor], *, per_image: bool) -> dict[str, Tensor]:
        confusion = stats["confusion"]
        iou = _iou(confusion)
        if self.absent == "zero":
            iou = torch.nan_to_num(iou, nan=0.0)
        total = confusion.sum(dim=(1, 2))
        miou = torch.where(total > 0, torch.nanmean(iou, dim=1), torch.nan)
        correct = torch.diagonal(confusion, dim1=1, dim2=2).sum(dim=1)
        return {"miou": miou, "pixel_acc": safe_div(correct, total)}


def _iou(confusion: Tensor) -> Tensor:
    """IoU per class [..., C] of confusion matrices [..., C, C]; NaN where the union is empty."""
    tp = torch.diagonal(confusion, dim1=-2, dim2=-1)
    union = confusion.sum(dim=-1) + confusion.sum(dim=-2) - tp
    return safe_div(tp, union)
