"""Task declarations: kind, head size, loss, metrics, better direction, head-bias init.

A dataset declares its tasks as instances of these classes (SPEC-methods §5.1 [S], SPEC-data
§1g, §2 [pymtl]); a third-party dataset can declare its own subclass. Conventions:

* dense targets are ``[B, C, H, W]`` (``[B, H, W]`` int64 for label maps), image-level targets
  ``[B]`` (class index) or ``[B, K]``; predictions are the head outputs: logits for
  segmentation, edges, saliency and classification, values for depth, normals and regression;
* each task knows its invalid pixels (``valid_mask``), and a whole sample can be unlabelled
  (the dataset's ``"<task>.mask"`` entry), so losses average over valid labelled elements only;
* ``metric()`` returns a fresh accumulator of sufficient statistics (:mod:`pymtl.metrics`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from pymtl.metrics.base import Metric

__all__ = [
    "ClassificationTask",
    "DepthTask",
    "EdgeTask",
    "MultiLabelTask",
    "NormalsTask",
    "PartsTask",
    "RegressionTask",
    "SaliencyTask",
    "SegmentationTask",
    "Task",
]


def vector_norm(x: Tensor, dim: int = 1, keepdim: bool = False) -> Tensor:
    """Euclidean norm over a short dimension (3-vector normals), as ``sqrt(Σ x²)``.

    Same values as ``x.norm(dim=dim)``, which is ~100× slower on the CPU over a 3-channel
    dimension (an open torch issue): this costs 18 of ~100 ms in a 4-task training step.
    """
    return (x * x).sum(dim=dim, keepdim=keepdim).sqrt()


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over ``mask``; 0 (still attached to the graph) when the mask is empty."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def _positive_finite(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(
            f"task {instance.name!r}: {attribute.name!r} must be finite and > 0 (got {value!r})"
        )


@attrs.frozen(kw_only=True)
class Task(ABC):
    """One task of a dataset.

    Attributes:
        name: key of the task's target in dataset items and of its output in predictions.
        primary: the metric Δ_MTL uses for this task (a key of ``metric().compute()``).
        loss_scale: constant factor on the task's loss (loss-scale imbalance experiments);
            metrics are unaffected.
    """

    kind: ClassVar[str]
    dense: ClassVar[bool] = True
    name: str
    primary: str = ""
    loss_scale: float = attrs.field(default=1.0, validator=_positive_finite)

    @property
    @abstractmethod
    def channels(self) -> int:
        """Output channels of the task's head."""

    @abstractmethod
    def valid_mask(self, target: Tensor) -> Tensor:
        """Boolean mask of the target elements that count (broadcastable to the loss terms)."""

    @abstractmethod
    def elementwise_loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """Per-element loss, same layout as ``valid_mask(target)``."""

    @abstractmethod
    def metric(self) -> Metric:
        """A fresh metric accumulator for this task."""

    def loss(self, pred: Tensor, target: Tensor, labelled: Tensor | None = None) -> Tensor:
        """Mean loss over the valid elements of the labelled samples.

        Args:
            pred: head output for the batch.
            target: the batch's targets.
            labelled: [B] bool, False for samples without this task's label (None: all).
        """
        mask = self.valid_mask(target)
        if labelled is not None:
            mask = mask & labelled.view(-1, *([1] * (mask.dim() - 1))).to(mask.device)
        return self.loss_scale * _masked_mean(self.elementwise_loss(pred, target), mask)

    def head_bias(self) -> Tensor | None:
        """Initial bias of the head's last layer (None: leave the layer's default)."""
        return None


@attrs.frozen(kw_only=True)
class _ClassIndexTask(Task):
    """Class-index targets (per pixel or per image), cross-entropy ignoring ``ignore_index``."""

    num_classes: int = attrs.field(validator=attrs.validators.gt(0))
    ignore_index: int = -1

    @property
    def channels(self) -> int:
        return self.num_classes

    def valid_mask(self, target: Tensor) -> Tensor:
        return target != self.ignore_index

    def elementwise_loss(self, pred: Tensor, target: Tensor) -> Tensor:
        safe = torch.where(self.valid_mask(target), target, torch.zeros_like(target))
        return F.cross_entropy(pred, safe, reduction="none")


@attrs.frozen(kw_only=True)
class SegmentationTask(_ClassIndexTask):
    """Per-pixel classification, pixel-wise cross-entropy; metrics mIoU and pixel accuracy [S].

    Targets: [B, H, W] int64 class indices, ``ignore_index`` where unlabelled.
    """

    kind: ClassVar[str] = "segmentation"
    class_names: tuple[str, ...] = ()
    primary: str = "miou"

    def metric(self) -> Metric:
        from pymtl.metrics.segmentation import SegmentationMetric

        return SegmentationMetric(num_classes=self.num_classes, ignore_index=self.ignore_index)


@attrs.frozen(kw_only=True)
class PartsTask(SegmentationTask):
    """Part segmentation: mIoU over the images that contain part annotations only [S].

    SPEC-methods §5.7: images whose labels are all void or all background are skipped.
    """

    kind: ClassVar[str] = "parts"

    def metric(self) -> Metric:
        from pymtl.metrics.segmentation import SegmentationMetric

        return SegmentationMetric(
            num_classes=self.num_classes, ignore_index=self.ignore_index, require_foreground=True
        )


@attrs.frozen(kw_only=True)
class DepthTask(Task):
    """Per-pixel depth, L1 over valid pixels; metrics abs/rel/rmse/log10/δ [S].

    Targets: [B, 1, H, W] float; pixels equal to ``invalid_value`` (or not finite) are ignored.
    ``mean`` (from dataset statistics) initialises the head's bias.
    """

    kind: ClassVar[str] = "depth"
    invalid_value: float = 0.0
    mean: float | None = None
    primary: str = "rmse"

    @property
    def channels(self) -> int:
        return 1

    def valid_mask(self, target: Tensor) -> Tensor:
        return torch.isfinite(target) & (target != self.invalid_value)

    def elementwise_loss(self, pred: Tensor, target: Tensor) -> Tensor:
        return (pred - torch.nan_to_num(target)).abs()

    def metric(self) -> Metric:
        from pymtl.metrics.depth import DepthMetric

        return DepthMetric(invalid_value=self.invalid_value)

    def head_bias(self) -> Tensor | None:
        return None if self.mean is None else torch.tensor([self.mean])


@attrs.frozen(kw_only=True)
class NormalsTask(Task):
    """Surface normals; loss ``1 - cos`` (MTAN) or L1 of the normalised prediction (ASTMT) [S].

    Targets: [B, 3, H, W] unit vectors; pixels whose target has norm 0 (or equals
    ``ignore_value`` in every channel) are ignored. Predictions are normalised per pixel.
    """

    kind: ClassVar[str] = "normals"
    loss_type: str = attrs.field(default="cosine", validator=attrs.validators.in_(("cosine", "l1")))
    ignore_value: float | None = None
    primary: str = "mean"

    @property
    def channels(self) -> int:
        return 3

    def valid_mask(self, target: Tensor) -> Tensor:
        valid: Tensor = (target * target).sum(dim=1, keepdim=True) > 0
        if self.ignore_value is not None:
            valid &= ~(target == self.ignore_value).all(dim=1, keepdim=True)
        return valid

    def elementwise_loss(self, pred: Tensor, target: Tensor) -> Tensor:
        unit = pred / vector_norm(pred, dim=1, keepdim=True).clamp_min(1e-12)  # F.normalize
        if self.loss_type == "cosine":
            return 1 - (unit * target).sum(dim=1, keepdim=True)
        return (unit - target).abs().mean(dim=1, keepdim=True)

    def metric(self) -> Metric:
        from pymtl.metrics.normals import NormalsMetric

        return NormalsMetric(ignore_value=self.ignore_value)


@attrs.frozen(kw_only=True)
class _BinaryDenseTask(Task):
    """Per-pixel binary map with class-balanced BCE on logits [S]."""

    ignore_value: float = 255.0
    pos_weight: float | None = None

    @property
    def channels(self) -> int:
        return 1

    def valid_mask(self, target: Tensor) -> Tensor:
        return target != self.ignore_value

    def elementwise_loss(self, pred: Tensor, target: Tensor) -> Tensor:
        valid = self.valid_mask(target)
        y = torch.where(valid, target, torch.zeros_like(target))
        if self.pos_weight is None:  # HED: weight each class by the other's frequency
            n = valid.sum().clamp_min(1)
            w = ((y * valid).sum() / n).detach()
        else:
            w = torch.as_tensor(1.0 - self.pos_weight, dtype=pred.dtype, device=pred.device)
        weight = torch.where(y > 0.5, 1.0 - w, w)
        return F.binary_cross_entropy_with_logits(pred, y, weight=weight, reduction="none")


@attrs.frozen(kw_only=True)
class EdgeTask(_BinaryDenseTask):
    """Boundary detection: balanced BCE (``pos_weight`` 0.95 on PASCAL); metric odsF [S].

    Targets: [B, 1, H, W] float in {0, 1}, ``ignore_value`` where unlabelled.
    ``tolerance`` is the odsF matching distance as a fraction of the image diagonal.
    """

    kind: ClassVar[str] = "edge"
    tolerance: float = 0.0075
    primary: str = "odsF"

    def metric(self) -> Metric:
        from pymtl.metrics.edge import EdgeMetric

        return EdgeMetric(tolerance=self.tolerance, ignore_value=self.ignore_value)


@attrs.frozen(kw_only=True)
class SaliencyTask(_BinaryDenseTask):
    """Salient-object mask: balanced BCE with automatic weights; metrics maxF, max IoU [S].

    Targets: [B, 1, H, W] float in {0, 1}, ``ignore_value`` where unlabelled. The primary
    metric is the survey's "Sal. (IoU)", i.e. ``max_iou`` (SPEC-methods §5.6, §5.8).
    """

    kind: ClassVar[str] = "saliency"
    primary: str = "max_iou"

    def metric(self) -> Metric:
        from pymtl.metrics.saliency import SaliencyMetric

        return SaliencyMetric(ignore_value=self.ignore_value)


@attrs.frozen(kw_only=True)
class ClassificationTask(_ClassIndexTask):
    """Image-level single-label classification, cross-entropy; metric accuracy [S].

    Targets: [B] int64, ``ignore_index`` for unlabelled samples.
    """

    kind: ClassVar[str] = "classification"
    dense: ClassVar[bool] = False
    primary: str = "accuracy"

    def metric(self) -> Metric:
        from pymtl.metrics.image import ClassificationMetric

        return ClassificationMetric(num_classes=self.num_classes, ignore_index=self.ignore_index)


@attrs.frozen(kw_only=True)
class MultiLabelTask(Task):
    """Image-level binary attributes (CelebA-style), BCE on logits; metrics accuracy, F1 [S].

    Targets: [B, K] float in {0, 1}.
    """

    kind: ClassVar[str] = "multilabel"
    dense: ClassVar[bool] = False
    num_labels: int = attrs.field(validator=attrs.validators.gt(0))
    label_names: tuple[str, ...] = ()
    primary: str = "accuracy"

    @property
    def channels(self) -> int:
        return self.num_labels

    def valid_mask(self, target: Tensor) -> Tensor:
        return torch.isfinite(target)

    def elementwise_loss(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(pred, torch.nan_to_num(target), reduction="none")

    def metric(self) -> Metric:
        from pymtl.metrics.image import MultiLabelMetric

        return MultiLabelMetric(num_labels=self.num_labels)


@attrs.frozen(kw_only=True)
class RegressionTask(Task):
    """Image-level real values (e.g. an object count), L1; metrics MAE, RMSE [S].

    Targets: [B, dims] float. ``mean`` (from dataset statistics) initialises the head's bias.
    """

    kind: ClassVar[str] = "regression"
    dense: ClassVar[bool] = False
    dims: int = attrs.field(default=1, validator=attrs.validators.gt(0))
    mean: tuple[float, ...] | None = None
    primary: str = "mae"

    @property
    def channels(self) -> int:
        return self.dims

    def valid_mask(self, target: Tensor) -> Tensor:
        return torch.isfinite(target)

    def elementwise_loss(self, pred: Tensor, target: Tensor) -> Tensor:
        return (pred - torch.nan_to_num(target)).abs()

    def metric(self) -> Metric:
        from pymtl.metrics.image import RegressionMetric

        return RegressionMetric(dims=self.dims)

    def head_bias(self) -> Tensor | None:
        return None if self.mean is None else torch.tensor(self.mean)
