"""Fixed weighting (``fixed``): a weighted sum of the task losses with constant weights.

Reference: SPEC-methods §2.1 [S]. ``L = Σ_t λ_t L_t``, so ``w = s = λ``. The survey's grid-
searched PASCAL-Context weights (seg 1, parts 2, sal 5, edge 50, normals 10) are an example of
such a λ [C:MTL-PyTorch configs].
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import torch
from torch import Tensor

from pymtl.balancers.base import Balancer, Needs, Weights, constant_weights
from pymtl.hookspecs import hookimpl


def _finite_non_negative(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    items = value.items() if isinstance(value, Mapping) else [("default", value)]
    for key, weight in items:
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise TypeError(f"weight {key!r} must be a number (got {weight!r})")
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"weight {key!r} must be finite and >= 0 (got {weight!r})")


@attrs.frozen(kw_only=True)
class FixedWeightsConfig:
    """Options of ``fixed``.

    Attributes:
        weights: λ per task name; tasks not listed get ``default``.
        default: λ for tasks not in ``weights``.
    """

    weights: Mapping[str, float] = attrs.field(factory=dict, validator=_finite_non_negative)
    default: float = attrs.field(default=1.0, validator=_finite_non_negative)


class FixedWeights(Balancer):
    """Fixed weighting: minimise Σ_t λ_t L_t with constant λ (w = s = λ) [S].

    Reference: Vandenhende et al., TPAMI 2021, §5 (grid-searched task weights). One backward
    pass per step.

    Args:
        tasks: task names, in loss order.
        weights: λ per task name; every key must be one of ``tasks``.
        default: λ of the tasks not in ``weights``.

    Example:
        >>> import torch
        >>> b = FixedWeights(["seg", "edge"], weights={"edge": 50.0})
        >>> b(torch.tensor([0.7, 0.1])).shared
        tensor([ 1., 50.])
    """

    name = "fixed"
    Config = FixedWeightsConfig
    needs = Needs.LOSSES

    def __init__(
        self,
        tasks: Sequence[str],
        *,
        weights: Mapping[str, float] | None = None,
        default: float = 1.0,
    ) -> None:
        super().__init__(tasks)
        weights = dict(weights or {})
        FixedWeightsConfig(weights=weights, default=default)  # same validation as the config
        unknown = sorted(set(weights) - set(self.tasks))
        if unknown:
            raise ValueError(
                f"balancer 'fixed': weights given for unknown task(s) {', '.join(unknown)}; "
                f"expected a subset of {', '.join(self.tasks)}"
            )
        lam = [float(weights.get(t, default)) for t in self.tasks]
        self.register_buffer("lam", torch.tensor(lam, dtype=torch.float64))
        self.lam: Tensor

    def compute(self, losses: Tensor, *, gram: Tensor | None, jacobian: Tensor | None) -> Weights:
        return constant_weights(self.lam, losses)

    def extra_repr(self) -> str:
        return ", ".join(f"{t}={v:g}" for t, v in zip(self.tasks, self.lam.tolist(), strict=True))


@hookimpl
def pymtl_register_balancers() -> list[type[Balancer]]:
    return [FixedWeights]
