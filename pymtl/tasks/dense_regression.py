"""Dense (per-pixel) regression of values without physical units, L1 loss [S][pymtl].

Standley et al. (ICML 2020) train Taskonomy keypoints, edges and (standardised) depth with an
L1 loss per pixel [S][C:tstandley/taskgrouping]. :class:`pymtl.tasks.DepthTask` does not fit
them: its metrics (relative error, log-RMSE, δ) assume positive metric depth. Invalid pixels
are NaN in the target, so any real value (0 included) can be a label.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import attrs
import torch
from torch import Tensor

from pymtl.tasks.base import Task

if TYPE_CHECKING:
    from pymtl.metrics.base import Metric

__all__ = ["DenseRegressionTask"]


def _mean_matches_dims(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and len(value) != instance.dims:
        raise ValueError(
            f"task {instance.name!r}: mean must have one value per channel "
            f"({instance.dims}), got {len(value)}"
        )


@attrs.frozen(kw_only=True)
class DenseRegressionTask(Task):
    """Per-pixel real values, L1 over the valid pixels; metrics MAE and RMSE [S][pymtl].

    Reference: Standley et al., "Which Tasks Should Be Learned Together in Multi-task
    Learning?", ICML 2020 (L1 for every non-segmentation task).

    Targets: [B, dims, H, W] float; NaN (or ±inf) marks pixels without a label.
    ``mean`` (one value per channel, from dataset statistics) initialises the head's bias.

    Example:
        >>> t = DenseRegressionTask(name="keypoints2d")
        >>> t.loss(torch.zeros(1, 1, 1, 2), torch.tensor([[[[2.0, float("nan")]]]]))
        tensor(2.)
    """

    kind: ClassVar[str] = "dense_regression"
    dims: int = attrs.field(default=1, validator=attrs.validators.gt(0))
    mean: tuple[float, ...] | None = attrs.field(default=None, validator=_mean_matches_dims)
    primary: str = "mae"

    @property
    def channels(self) -> int:
        return self.dims

    def valid_mask(self, target: Tensor) -> Tensor:
        return torch.isfinite(target)

    def elementwise_loss(self, pred: Tensor, target: Tensor) -> Tensor:
        return (pred - torch.nan_to_num(target, nan=0.0, posinf=0.0, neginf=0.0)).abs()

    def metric(self) -> Metric:
        from pymtl.metrics.dense_regression import DenseRegressionMetric

        return DenseRegressionMetric()

    def head_bias(self) -> Tensor | None:
        return None if self.mean is None else torch.tensor(self.mean)
