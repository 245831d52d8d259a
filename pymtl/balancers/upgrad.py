"""UPGrad (``upgrad``): project every task gradient onto the dual cone of all of them.

Reference: Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024 (torchjd's
``UPGrad``); SPEC-methods §2.15 [C:torchjd]. Beyond the source papers. The aggregate
``d = Σ_t p_t π(g_t)`` sums the projections π of the task gradients onto the dual cone
``{x : ⟨x, g_i⟩ ≥ 0 ∀i}``. In Gram space (Ĝ = G / tr G + ε_reg I; Ĝ = ε_reg I when
``tr G ≤ ε_norm``, SPEC-methods §2.18 note 3):

    v_t = argmin_v vᵀ Ĝ v  subject to  v ≥ p_t e_t,     w = Σ_t v_t,     s = 1.

Each QP is solved exactly in float64 by the active-set solver of
:mod:`pymtl.balancers._minnorm` [pymtl]. ``reduction``: p = 1/T (``mean``, torchjd, default)
or p = 1 (``sum``). With ε_reg = 0, the KKT conditions give ``Ĝ v_t ≥ 0``, so
``⟨d, g_i⟩ = (G w)_i ≥ 0`` for every task i.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np
import torch
from torch import Tensor

from pymtl.balancers._minnorm import box_min_norm
from pymtl.balancers.base import Balancer, Needs, Weights
from pymtl.hookspecs import hookimpl

REDUCTIONS = ("mean", "sum")


def _finite_non_negative(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{attribute.name!r} must be a number (got {value!r})")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{attribute.name!r} must be finite and >= 0 (got {value!r})")


@attrs.frozen(kw_only=True)
class UPGradConfig:
    """Options of ``upgrad``.

    Attributes:
        norm_eps: below this trace, G is treated as 0 (w = p).
        reg_eps: ridge ε_reg added to the normalised Gram matrix.
        reduction: preference p = 1/T (``mean``) or 1 (``sum``).
    """

    norm_eps: float = attrs.field(default=1e-4, validator=_finite_non_negative)
    reg_eps: float = attrs.field(default=1e-4, validator=_finite_non_negative)
    reduction: str = attrs.field(default="mean", validator=attrs.validators.in_(REDUCTIONS))


def upgrad_weights(
    gram: Tensor, preference: Tensor, *, norm_eps: float = 1e-4, reg_eps: float = 1e-4
) -> Tensor:
    """w [T] (float64, on the CPU) for a Gram matrix [T, T] and a preference p [T] (≥ 0)."""
    G = gram.detach().to("cpu", torch.float64).numpy()
    p = preference.detach().to("cpu", torch.float64).numpy()
    trace = float(np.trace(G))
    G_hat = G / trace if trace > norm_eps else np.zeros_like(G)
    G_hat = G_hat + reg_eps * np.eye(G.shape[0])
    w = np.zeros_like(p)
    for t, p_t in enumerate(p):
        lower = np.zeros_like(p)
        lower[t] = p_t
        w += box_min_norm(G_hat, lower, where="balancer 'upgrad'")
    return torch.from_numpy(w)


class UPGrad(Balancer):
    """UPGrad: sum of the task gradients projected onto their dual cone [C:torchjd].

    Reference: Quinton & Rey, 2024, Definition of UPGrad (torchjd ``UPGrad``). One small QP
    per task in Gram space; w = Σ_t v_t, s = 1.

    Args:
        tasks: task names, in loss order.
        norm_eps: traces of G up to this value count as G = 0 (then w = p).
        reg_eps: ridge added to G / tr G for a well-posed QP.
        reduction: ``mean`` (p = 1/T, default) or ``sum`` (p = 1).

    Example:
        >>> import torch
        >>> G = torch.tensor([[1.0, -1.0], [-1.0, 2.0]], dtype=torch.float64)
        >>> b = UPGrad(["seg", "depth"], reg_eps=0.0)
        >>> b(torch.ones(2, dtype=torch.float64), gram=G).shared
        tensor([1.0000, 0.7500], dtype=torch.float64)
    """

    name = "upgrad"
    Config = UPGradConfig
    needs = Needs.GRAM

    def __init__(
        self,
        tasks: Sequence[str],
        *,
        norm_eps: float = 1e-4,
        reg_eps: float = 1e-4,
        reduction: str = "mean",
    ) -> None:
        super().__init__(tasks)
        UPGradConfig(norm_eps=norm_eps, reg_eps=reg_eps, reduction=reduction)  # validation
        self.norm_eps, self.reg_eps, self.reduction = norm_eps, reg_eps, reduction

    def compute(self, losses: Tensor, *, gram: Tensor | None, jacobian: Tensor | None) -> Weights:
        assert gram is not None  # checked by Balancer.forward
        T = self.num_tasks
        p = torch.full((T,), 1.0 / T if self.reduction == "mean" else 1.0, dtype=torch.float64)
        w = upgrad_weights(gram, p, norm_eps=self.norm_eps, reg_eps=self.reg_eps)
        return Weights(shared=w.to(losses), task=torch.ones_like(losses))

    def extra_repr(self) -> str:
        return f"norm_eps={self.norm_eps:g}, reg_eps={self.reg_eps:g}, reduction={self.reduction!r}"


@hookimpl
def pymtl_register_balancers() -> list[type[Balancer]]:
    return [UPGrad]
