"""Gradient Vaccine (``gradvac``): raise each pair's gradient cosine to an EMA target.

Reference: Wang et al., "Gradient Vaccine: Investigating and Improving Multi-task Optimization
in Massively Multilingual Models", ICLR 2021 (SPEC-methods §2.9) [C:LibMTL, SamsungLabs/MTL].
Like PCGrad, each task's gradient meets the others in a fresh random order; instead of only
removing negative conflict it is pushed until its cosine with ``g_j`` reaches the target
``φ̂_ij``:

* ``ρ = ⟨pc_i, g_j⟩ / (‖pc_i‖ ‖g_j‖)``;
* if ``ρ < φ̂_ij``: ``pc_i += g_j ‖pc_i‖ (φ̂√(1−ρ²) − ρ√(1−φ̂²)) / (‖g_j‖ √(1−φ̂²))``;
* always, after the check: ``φ̂_ij ← (1−β) φ̂_ij + β ρ`` (LibMTL and the paper; SamsungLabs
  updates only inside the branch) [C:LibMTL]. ``φ̂ = 0`` at the start, so the first step
  equals PCGrad (SPEC-methods §2.18 note 5).

``d = Σ_i pc_i`` (sum convention) and s = 1. β = 0.5 (LibMTL, SamsungLabs; the paper used a
smaller β) [C:LibMTL].

Gram form (exact) [pymtl]: ``pc_i = Jᵀ c_i``, ``‖pc_i‖ = √(c_iᵀ G c_i)``, ``⟨pc_i, g_j⟩ =
(G c_i)_j``, ``‖g_j‖ = √G_jj``; then ``w = Σ_i c_i``. This is the "whole model" variant: one
parameter group, so one Gram and ``φ̂ ∈ R^{T×T}``. The per-layer / per-tensor groups need one
Gram per parameter group from the training step, which comes with the engine; they are not
offered here [pymtl].

Guards [pymtl]: a pair where ``pc_i`` or ``g_j`` has (squared) norm below 1e-20 is skipped
(no ρ exists; neither ``pc_i`` nor ``φ̂_ij`` changes), and ``|φ̂|`` is capped at 1 − 1e-8
inside the update so the step stays finite. The random orders come from the balancer's own
seeded generator, whose state is a buffer (see :class:`pymtl.balancers.pcgrad.TaskOrder`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from pymtl.balancers.base import Balancer, Needs, Weights
from pymtl.balancers.pcgrad import ORDERS, TaskOrder, check_seed, gram_float64
from pymtl.hookspecs import hookimpl

__all__ = ["GradVac", "GradVacConfig", "gradvac_weights"]

MIN_SQUARED_NORM = 1e-20
MAX_TARGET = 1.0 - 1e-8


def _beta(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"balancer 'gradvac': 'beta' must be a number in (0, 1] (got {value!r})")


@attrs.frozen(kw_only=True)
class GradVacConfig:
    """Options of ``gradvac``.

    Attributes:
        beta: EMA rate of the cosine targets φ̂ (``φ̂ ← (1−β) φ̂ + β ρ``).
        order: ``random`` (a fresh permutation per task and step) or ``identity``.
        seed: seed of the balancer's generator (the same on every process).
    """

    beta: float = attrs.field(default=0.5, validator=_beta)
    order: str = attrs.field(default="random", validator=attrs.validators.in_(ORDERS))
    seed: int = attrs.field(default=0, validator=check_seed("gradvac"))


def gradvac_weights(
    G: NDArray[np.float64],
    target: NDArray[np.float64],
    orders: Sequence[Sequence[int]],
    *,
    beta: float,
) -> NDArray[np.float64]:
    """GradVac's ``w = Σ_i c_i`` from the Gram matrix ``G`` [T, T]; updates ``target`` in place.

    ``target`` [T, T] holds φ̂_ij (row i: the task being corrected); ``orders[i]`` lists the
    tasks j ≠ i in the order ``pc_i`` meets them.
    """
    T = G.shape[0]
    w = np.zeros(T)
    for i in range(T):
        c = np.zeros(T)
        c[i] = 1.0
        for j in orders[i]:
            Gc = G @ c
            pc_sq, g_sq = float(c @ Gc), float(G[j, j])
            if pc_sq < MIN_SQUARED_NORM or g_sq < MIN_SQUARED_NORM:
                continue
            pc_norm, g_norm = math.sqrt(pc_sq), math.sqrt(g_sq)
            rho = min(max(float(Gc[j]) / (pc_norm * g_norm), -1.0), 1.0)
            phi = float(target[i, j])
            if rho < phi:
                phi = min(max(phi, -MAX_TARGET), MAX_TARGET)
                root = math.sqrt(1.0 - phi * phi)
                c[j] += pc_norm * (phi * math.sqrt(1.0 - rho * rho) - rho * root) / (g_norm * root)
            target[i, j] = (1.0 - beta) * target[i, j] + beta * rho
        w += c
    return w


class GradVac(Balancer):
    """GradVac: align each pair of task gradients to an EMA cosine target (Gram form) [C:LibMTL].

    Reference: Wang et al., ICLR 2021 [C:LibMTL, SamsungLabs/MTL]; whole-model variant (one
    parameter group). Shared parameters: ``d = Jᵀ w``; task-specific parameters: s = 1. State:
    the targets ``target`` [T, T] (φ̂, zero at the start) and the generator state.

    Args:
        tasks: task names, in loss order.
        beta: EMA rate of the targets.
        order: ``random`` or ``identity`` (ascending task index; for tests).
        seed: seed of the generator of the random orders.

    Example:
        >>> import torch
        >>> G = torch.tensor([[1.0, -1.0], [-1.0, 2.0]])  # g1 = (1, 0), g2 = (-1, 1)
        >>> GradVac(["seg", "depth"], order="identity")(torch.ones(2), gram=G).shared  # = PCGrad
        tensor([2.0000, 1.5000])
    """

    name = "gradvac"
    Config = GradVacConfig
    needs = Needs.GRAM

    def __init__(
        self, tasks: Sequence[str], *, beta: float = 0.5, order: str = "random", seed: int = 0
    ) -> None:
        super().__init__(tasks)
        GradVacConfig(beta=beta, order=order, seed=seed)  # same validation
        self.beta, self.seed = float(beta), seed
        self.order = TaskOrder(self.num_tasks, order=order, seed=seed)
        T = self.num_tasks
        self.register_buffer("target", torch.zeros(T, T, dtype=torch.float64))
        self.target: Tensor

    def compute(self, losses: Tensor, *, gram: Tensor | None, jacobian: Tensor | None) -> Weights:
        assert gram is not None  # checked by Balancer.forward
        G = gram_float64(gram, where=f"balancer {self.name!r}")
        target = self.target.detach().to(device="cpu", dtype=torch.float64).numpy().copy()
        w = gradvac_weights(G, target, self.order.draw(), beta=self.beta)
        self.target.copy_(torch.from_numpy(target))
        return Weights(shared=torch.from_numpy(w).to(losses), task=torch.ones_like(losses))

    def extra_repr(self) -> str:
        return f"tasks={self.tasks}, beta={self.beta:g}, seed={self.seed}"


@hookimpl
def pymtl_register_balancers() -> list[type[Balancer]]:
    return [GradVac]
