"""Dual-Balancing MTL (``db_mtl``): balance loss scales by logs, gradient scales by norms.

Reference: Lin et al., "Dual-Balancing for Multi-Task Learning", 2023 (SPEC-methods §2.17,
beyond the source papers) [C:LibMTL].

* Loss scale: each task trains on ``log(L_t + ε)``, whose gradient is ``g_t / (L_t + ε)``; so
  the task-specific parameters get ``s_t = 1/(L_t + ε)``.
* Gradient scale: the per-task gradients ĝ_t of the log-losses (w.r.t. the shared parameters)
  feed EMA buffers ``m_t ← ĝ_t + (β / k^σ)(m_t − ĝ_t)`` (k the step, from 1; the buffers start
  at zero), and the update is ``d = Σ_t (max_u ‖m_u‖ / (‖m_t‖ + ε)) m_t``.

The buffers are T×P state (checkpointed). The update is not of the form ``Jᵀw`` in the current
J, so the balancer returns it as ``direct``; ``shared`` reports the coefficients
``max_u ‖m_u‖ / (‖m_t‖ + ε)``. ε = 1e-8 in both places [C:LibMTL].
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import torch
from torch import Tensor

from pymtl.balancers.base import Balancer, Needs, Weights
from pymtl.hookspecs import hookimpl
from pymtl.ops.combine import combine

__all__ = ["DBMTL", "DBMTLConfig"]

EPS = 1e-8


def _number(low: float, high: float) -> Any:
    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or not low <= value <= high:
            raise ValueError(
                f"balancer 'db_mtl': {attribute.name!r} must be a number in [{low:g}, {high:g}] "
                f"(got {value!r})"
            )

    return validate


@attrs.frozen(kw_only=True)
class DBMTLConfig:
    """Options of ``db_mtl``.

    Attributes:
        beta: EMA rate β of the gradient buffers.
        sigma: decay exponent σ of the EMA rate (``β / k^σ``; 0: constant).
    """

    beta: float = attrs.field(default=0.9, validator=_number(0.0, 1.0))
    sigma: float = attrs.field(default=0.0, validator=_number(0.0, 10.0))


class DBMTL(Balancer):
    """DB-MTL: log-loss balancing plus max-norm scaling of EMA gradient buffers [C:LibMTL].

    Needs J (``Needs.JACOBIAN``); returns ``direct`` = the combined update of the shared
    parameters and ``s = 1/(L + ε)``.

    Args:
        tasks: task names, in loss order.
        beta: EMA rate β.
        sigma: decay exponent σ.
    """

    name = "db_mtl"
    Config = DBMTLConfig
    needs = Needs.JACOBIAN

    def __init__(self, tasks: Sequence[str], *, beta: float = 0.9, sigma: float = 0.0) -> None:
        super().__init__(tasks)
        DBMTLConfig(beta=beta, sigma=sigma)  # same validation
        self.beta, self.sigma = float(beta), float(sigma)
        self.register_buffer("ema", torch.zeros(0))  # [T, P], allocated at the first step
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))
        self.ema: Tensor
        self.steps: Tensor

    def compute(self, losses: Tensor, *, gram: Tensor | None, jacobian: Tensor | None) -> Weights:
        assert jacobian is not None  # checked by Balancer.forward
        T, P = jacobian.shape
        if self.ema.shape != (T, P):
            if self.ema.numel():
                raise ValueError(
                    f"balancer 'db_mtl': J has shape {(T, P)} but the gradient buffers are "
                    f"{tuple(self.ema.shape)} (the shared parameters changed?)"
                )
            self.ema = jacobian.new_zeros(T, P)
        self.steps += 1
        scale = 1.0 / (losses.detach().to(jacobian) + EPS)  # ∇ log(L + ε) = ∇L / (L + ε)
        rate = self.beta / float(self.steps) ** self.sigma
        m = self.ema
        m.lerp_(jacobian * scale[:, None], 1.0 - rate)  # m ← ĝ + rate (m − ĝ)
        norms = torch.linalg.vector_norm(m, dim=1, dtype=torch.float64)
        alpha = (norms.max() / (norms + EPS)).to(m)
        d = combine(m, alpha)
        return Weights(shared=alpha.to(losses), task=scale.to(losses), direct=d)

    def _load_from_state_dict(
        self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        saved = state_dict.get(prefix + "ema")
        if saved is not None and saved.shape != self.ema.shape:
            self.ema = torch.zeros_like(saved, device=self.ema.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"tasks={self.tasks}, beta={self.beta:g}, sigma={self.sigma:g}"


@hookimpl
def pymtl_register_balancers() -> list[type[Balancer]]:
    return [DBMTL]
