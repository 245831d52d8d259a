"""Geometric loss strategy (``gls``): minimise the geometric mean of the task losses.

Reference: Chennupati, Sistu, Yogamani and Rawashdeh, "MultiNet++: Multi-Stream Feature
Aggregation and Geometric Loss Strategy for Multi-Task Learning", CVPR Workshops 2019 [P].
The objective is ``L = (Π_t L_t)^(1/T)``, as in LibMTL's ``GLS`` weighting, which
backpropagates it directly [C:median-research-group/LibMTL].

pymtl's step does one backward of ``Σ_t w_t L_t`` with ``w`` detached, so the weights are the
gradient of the objective with respect to each loss [pymtl]:
``w_t = s_t = ∂L/∂L_t = L / (T · L_t)``, with ``L = exp(mean_t log L_t)`` computed in log space.
Then ``Σ_t w_t ∇L_t = ∇L`` exactly, and every task contributes the same ``w_t L_t = L / T``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import attrs
import torch
from torch import Tensor

from pymtl import Balancer, Needs, Weights


def _finite_non_negative(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{attribute.name!r} must be a number (got {value!r})")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{attribute.name!r} must be finite and >= 0 (got {value!r})")


@attrs.frozen(kw_only=True)
class GeometricLossConfig:
    """Options of ``gls``.

    Attributes:
        eps: added to every loss before the geometric mean [pymtl]; 0 (the paper's objective)
            requires every loss to be > 0, a positive ``eps`` also accepts losses of 0.
    """

    eps: float = attrs.field(default=0.0, validator=_finite_non_negative)


class GeometricLoss(Balancer):
    """Geometric loss strategy: minimise (Π_t L_t)^(1/T), w_t = s_t = L / (T·L_t) [P].

    Reference: Chennupati et al., "MultiNet++", CVPR-W 2019, the geometric loss strategy. The
    weights are the exact gradient of the geometric mean with respect to each loss, so one
    backward pass per step gives the paper's gradient. Scaling one task's loss by ``c`` scales
    the combined gradient by ``c^(1/T)`` without changing its direction.

    Args:
        tasks: task names, in loss order.
        eps: added to every loss before the geometric mean (default 0: every loss must be > 0).

    Raises:
        ValueError: from the call, if a loss (plus ``eps``) is not finite and > 0; the message
            names the tasks and their losses.

    Example:
        >>> import torch
        >>> GeometricLoss(["seg", "depth"])(torch.tensor([1.0, 4.0])).shared
        tensor([1.0000, 0.2500])
    """

    name = "gls"
    Config = GeometricLossConfig
    needs = Needs.LOSSES

    def __init__(self, tasks: Sequence[str], *, eps: float = 0.0) -> None:
        super().__init__(tasks)
        GeometricLossConfig(eps=eps)  # same validation as the config
        self.eps = float(eps)

    def compute(self, losses: Tensor, *, gram: Tensor | None, jacobian: Tensor | None) -> Weights:
        shifted = losses.detach() + self.eps
        self._check_positive(losses, shifted)
        log_l = torch.log(shifted)
        # L / (T·L_t) = exp(mean log L - log L_t) / T: no product that can over- or underflow
        w = torch.exp(log_l.mean() - log_l) / self.num_tasks
        return Weights(shared=w, task=w)

    def _check_positive(self, losses: Tensor, shifted: Tensor) -> None:
        bad = ~(torch.isfinite(shifted) & (shifted > 0))
        if not bad.any():  # one host-device sync per step
            return
        values = losses.detach().cpu().tolist()
        got = ", ".join(
            f"{t}={v:g}" for t, v, b in zip(self.tasks, values, bad.tolist(), strict=True) if b
        )
        need = "finite and > 0" if self.eps == 0 else f"finite and > -eps = {-self.eps:g}"
        raise ValueError(
            f"balancer 'gls': losses must be {need} (the geometric mean takes their log); got {got}"
        )

    def extra_repr(self) -> str:
        return f"tasks={self.tasks}, eps={self.eps:g}"
