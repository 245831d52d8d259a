"""Image-level metrics: classification accuracy, multi-label accuracy and F1, regression errors.

Reference: SPEC-data §2.7 [S][C:isl-org/MultiObjectiveOptimization][C:median-research-group/LibMTL].
Correct counts and error sums are accumulated over samples (exact, like LibMTL's
``AccMetric``), never as a running mean of batch means (Auto-Lambda's batch weighting).
Accuracies and F1 are fractions in [0, 1]; MGDA's per-attribute *error* is ``1 − accuracy``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from pymtl.metrics._accumulate import SplitMetric, safe_div, shape_error

__all__ = ["ClassificationMetric", "MultiLabelMetric", "RegressionMetric"]


def _is_int(t: Tensor) -> bool:
    return not t.dtype.is_floating_point and not t.dtype.is_complex and t.dtype != torch.bool


class ClassificationMetric(SplitMetric):
    """Top-1 accuracy of single-label classification over the labelled samples [S].

    Reference: SPEC-data §2.7 (LibMTL ``AccMetric``: correct counts over samples).

    Args:
        num_classes: number of classes C.
        ignore_index: target value of samples without a label (skipped).

    ``update(pred, target)``: ``pred`` logits [B, C] (argmax) or labels [B] (integer);
    ``target`` [B] int64.

    Example:
        >>> m = ClassificationMetric(num_classes=3)
        >>> m.update(torch.tensor([[0.1, 2.0, 0.0], [3.0, 0.0, 0.0]]), torch.tensor([1, 2]))
        >>> m.compute()
        {'accuracy': 0.5}
    """

    higher_is_better: ClassVar[dict[str, bool]] = {"accuracy": True}

    def __init__(self, num_classes: int, ignore_index: int = -1) -> None:
        if num_classes < 1:
            raise ValueError(f"ClassificationMetric: num_classes must be >= 1 (got {num_classes})")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        super().__init__()

    def _validate(self, pred: Tensor, target: Tensor) -> None:
        name, C = "ClassificationMetric", self.num_classes
        if target.dim() != 1 or not _is_int(target):
            raise shape_error(name, "target", "[B] integer class indices", target)
        logits = pred.dim() == 2 and pred.shape[1] == C and pred.dtype.is_floating_point
        if not (logits or (pred.dim() == 1 and _is_int(pred))):
            raise shape_error(name, "pred", f"[B, {C}] logits or [B] labels", pred)
        bad = (target != self.ignore_index) & ((target < 0) | (target >= C))
        if bool(bad.any()):
            raise ValueError(
                f"{name}.update: target holds {target[bad][0].item()} (expected class indices "
                f"in [0, {C}) or ignore_index={self.ignore_index})"
            )

    def _statistics(self, pred: Tensor, target: Tensor, *, per_image: bool) -> dict[str, Tensor]:
        labels = (pred.argmax(dim=1) if pred.dim() == 2 else pred).to(target.device)
        valid = target != self.ignore_index
        correct = (valid & (labels == target)).sum()
        return {"correct": correct.view(1), "n": valid.sum().view(1)}

    def _terms(self, stats: dict[str, Tensor], *, per_image: bool) -> dict[str, Tensor]:
        return {"accuracy": safe_div(stats["correct"], stats["n"])}


class MultiLabelMetric(SplitMetric):
    """Mean over labels of the binary accuracy and of the F1 score (CelebA-style attributes) [S].

    Reference: SPEC-data §2.7 (MGDA reports per-attribute error = 1 − accuracy) [S].

    A logit > 0 predicts the label. Target elements that are not finite (no label) are
    skipped. Per label, ``accuracy = (TP + TN) / n`` and ``F1 = 2TP / (2TP + FP + FN)``.
    **Labels without positives** [pymtl]: a label that is positive in neither the targets nor
    the predictions of the split (2TP + FP + FN = 0) has no F1 and is left out of the F1 mean,
    as segmentation leaves out absent classes; a label with no positive target but some
    positive prediction scores F1 = 0. Labels with no valid element are left out of both means.

    Args:
        num_labels: number of binary labels K.

    ``update(pred, target)``: ``pred`` logits [B, K]; ``target`` [B, K] float in {0, 1} (NaN:
    missing).

    Example:
        >>> m = MultiLabelMetric(num_labels=2)
        >>> logits = torch.tensor([[1.0, -1.0], [1.0, 1.0]])
        >>> m.update(logits, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        >>> m.compute()
        {'accuracy': 0.75, 'f1': 0.8333333333333333}
    """

    higher_is_better: ClassVar[dict[str, bool]] = {"accuracy": True, "f1": True}

    def __init__(self, num_labels: int) -> None:
        if num_labels < 1:
            raise ValueError(f"MultiLabelMetric: num_labels must be >= 1 (got {num_labels})")
        self.num_labels = num_labels
        super().__init__()

    def _validate(self, pred: Tensor, target: Tensor) -> None:
        name, K = "MultiLabelMetric", self.num_labels
        if target.shape[1:] != (K,) or target.dim() != 2 or not target.dtype.is_floating_point:
            raise shape_error(name, "target", f"[B, {K}] float in {{0, 1}}", target)
        if pred.shape != target.shape or not pred.dtype.is_floating_point:
            raise shape_error(name, "pred", f"[B, {K}] float logits", pred)
        given = target[torch.isfinite(target)]
        if bool(((given != 0) & (given != 1)).any()):
            raise ValueError(
                f"{name}.update: target must hold 0, 1 or NaN (got values "
                f"{sorted(set(given[(given != 0) & (given != 1)].tolist()))[:5]})"
            )

    def _statistics(self, pred: Tensor, target: Tensor, *, per_image: bool) -> dict[str, Tensor]:
        valid = torch.isfinite(target)
        truth = valid & (target == 1)
        guess = valid & (pred.to(target.device) > 0)
        count = {
            "tp": truth & guess,
            "fp": ~truth & guess,
            "fn": truth & ~guess,
            "n": valid,
        }
        return {key: mask.sum(dim=0, keepdim=True) for key, mask in count.items()}

    def _terms(self, stats: dict[str, Tensor], *, per_image: bool) -> dict[str, Tensor]:
        tp, fp, fn, n = stats["tp"], stats["fp"], stats["fn"], stats["n"]
        accuracy = safe_div(n - fp - fn, n)
        f1 = safe_div(2 * tp, 2 * tp + fp + fn)
        return {"accuracy": torch.nanmean(accuracy, dim=1), "f1": torch.nanmean(f1, dim=1)}


class RegressionMetric(SplitMetric):
    """Mean absolute error and root-mean-square error of image-level values [S].

    Reference: SPEC-data §2.7 (sample-level accumulation); pooled over every valid element of
    every dimension. Target elements that are not finite (no label) are skipped.

    Args:
        dims: number of regressed values per image.

    ``update(pred, target)``: both [B, dims] float ([B] is accepted when ``dims`` is 1).

    Example:
        >>> m = RegressionMetric()
        >>> m.update(torch.tensor([[1.0], [4.0]]), torch.tensor([[2.0], [2.0]]))
        >>> m.compute()
        {'mae': 1.5, 'rmse': 1.5811388300841898}
    """

    higher_is_better: ClassVar[dict[str, bool]] = {"mae": False, "rmse": False}

    def __init__(self, dims: int = 1) -> None:
        if dims < 1:
            raise ValueError(f"RegressionMetric: dims must be >= 1 (got {dims})")
        self.dims = dims
        super().__init__()

    def _validate(self, pred: Tensor, target: Tensor) -> None:
        D = self.dims
        flat = target.dim() == 1 and D == 1
        if not (flat or (target.dim() == 2 and target.shape[1] == D)):
            raise shape_error("RegressionMetric", "target", f"[B, {D}] float", target)
        if not target.dtype.is_floating_point:
            raise shape_error("RegressionMetric", "target", f"[B, {D}] float", target)
        if pred.shape != target.shape or not pred.dtype.is_floating_point:
            raise shape_error(
                "RegressionMetric", "pred", f"float of shape {tuple(target.shape)}", pred
            )

    def _statistics(self, pred: Tensor, target: Tensor, *, per_image: bool) -> dict[str, Tensor]:
        g = target.to(torch.float64)
        valid = torch.isfinite(g)
        err = torch.where(valid, pred.to(g.device, torch.float64) - torch.where(valid, g, 0.0), 0.0)
        return {
            "n": valid.sum().view(1),
            "abs": err.abs().sum().view(1),
            "sq": err.square().sum().view(1),
        }

    def _terms(self, stats: dict[str, Tensor], *, per_image: bool) -> dict[str, Tensor]:
        return {
            "mae": safe_div(stats["abs"], stats["n"]),
            "rmse": safe_div(stats["sq"], stats["n"]).sqrt(),
        }
