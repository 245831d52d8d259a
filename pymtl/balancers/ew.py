"""Equal weighting (``ew``): the plain sum of the task losses.

Reference: SPEC-methods §2.1; the baseline of every MTL paper (e.g. Vandenhende et al., "Multi-
Task Learning for Dense Prediction Tasks: A Survey", TPAMI 2021) [S]. Scale convention "sum"
[pymtl]: ``L = Σ_t L_t``, so ``w = s = 1``.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import torch
from torch import Tensor

from pymtl.balancers.base import Balancer, Needs, Weights, constant_weights
from pymtl.hookspecs import hookimpl


@attrs.frozen(kw_only=True)
class EqualWeightsConfig:
    """``ew`` has no options."""


class EqualWeights(Balancer):
    """Equal weighting: minimise the sum of the task losses (w = s = 1) [S].

    Reference: Vandenhende et al., TPAMI 2021, the "uniform weighting" baseline. One backward
    pass per step: it needs the losses only.

    Args:
        tasks: task names, in loss order.

    Example:
        >>> import torch
        >>> EqualWeights(["seg", "depth"])(torch.tensor([0.7, 2.0])).shared
        tensor([1., 1.])
    """

    name = "ew"
    Config = EqualWeightsConfig
    needs = Needs.LOSSES

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__(tasks)

    def compute(self, losses: Tensor, *, gram: Tensor | None, jacobian: Tensor | None) -> Weights:
        return constant_weights(torch.ones(self.num_tasks), losses)


@hookimpl
def pymtl_register_balancers() -> list[type[Balancer]]:
    return [EqualWeights]
