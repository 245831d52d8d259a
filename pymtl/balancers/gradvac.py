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
(G c_i)_j``, ``‖g_j‖ = √G_jj``; then ``w = Σ_i c_i``; the T×T solve is the compiled op
:func:`pymtl.ops.gradvac_weights` (CPU or CUDA).

Groups (SPEC-methods §2.9) [C:LibMTL]: ``whole_model`` (default) is one parameter group: one
Gram [T, T], targets ``φ̂`` [T, T] and ``w`` [T]. ``per_layer`` / ``per_tensor``: the training
step passes one Gram per group, [K, T, T]; each group has its own coefficients and targets
(``φ̂`` [K, T, T], allocated at the first step, when K is known) and the balancer returns
``w`` [K, T], row k weighing group k's columns. All groups share the task orders.

Guards [pymtl]: a pair where ``pc_i`` or ``g_j`` has (squared) norm below 1e-20 is skipped
(no ρ exists; neither ``pc_i`` nor ``φ̂_ij`` changes), and ``|φ̂|`` is capped at 1 − 1e-8
inside the update so the step stays finite. The random orders come from the balancer's own
seeded generator, whose state is a buffer (see :class:`pymtl.balancers.pcgrad.TaskOrder`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import torch
from torch import Tensor

from pymtl.balancers.base import GROUPS, Balancer, Needs, Weights
from pymtl.balancers.pcgrad import ORDERS, TaskOrder, check_seed, finite_gram
from pymtl.hookspecs import hookimpl
from pymtl.ops.projection import gradvac_weights

__all__ = ["GradVac", "GradVacConfig", "gradvac_weights"]


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
        groups: ``whole_model`` (one Gram), ``per_layer`` or ``per_tensor`` (one Gram,
            one set of targets and one row of weights per parameter group).
    """

    beta: float = attrs.field(default=0.5, validator=_beta)
    order: str = attrs.field(default="random", validator=attrs.validators.in_(ORDERS))
    seed: int = attrs.field(default=0, validator=check_seed("gradvac"))
    groups: str = attrs.field(default="whole_model", validator=attrs.validators.in_(GROUPS))


class GradVac(Balancer):
    """GradVac: align each pair of task gradients to an EMA cosine target (Gram form) [C:LibMTL].

    Reference: Wang et al., ICLR 2021 [C:LibMTL, SamsungLabs/MTL]. Shared parameters:
    ``d = Jᵀ w`` (per group with ``groups`` ≠ ``whole_model``: ``w`` [K, T]); task-specific
    parameters: s = 1. State: the targets ``target`` (φ̂, zero at the start; [T, T], or
    [K, T, T] per group) and the generator state.

    Args:
        tasks: task names, in loss order.
        beta: EMA rate of the targets.
        order: ``random`` or ``identity`` (ascending task index; for tests).
        seed: seed of the generator of the random orders.
        groups: ``whole_model``, ``per_layer`` or ``per_tensor``.

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
        self,
        tasks: Sequence[str],
        *,
        beta: float = 0.5,
        order: str = "random",
        seed: int = 0,
        groups: str = "whole_model",
    ) -> None:
        super().__init__(tasks)
        GradVacConfig(beta=beta, order=order, seed=seed, groups=groups)  # same validation
        self.beta, self.seed, self.groups = float(beta), seed, groups
        self.order = TaskOrder(self.num_tasks, order=order, seed=seed)
        T = self.num_tasks
        shape = (T, T) if groups == "whole_model" else (0, T, T)  # K groups: set at step 1
        self.register_buffer("target", torch.zeros(shape, dtype=torch.float64))
        self.target: Tensor

    def compute(self, losses: Tensor, *, gram: Tensor | None, jacobian: Tensor | None) -> Weights:
        assert gram is not None  # checked by Balancer.forward
        where = f"balancer {self.name!r}"
        G = finite_gram(gram, where=where)
        T, grouped = self.num_tasks, self.groups != "whole_model"
        if G.shape[-2:] != (T, T) or G.dim() != (3 if grouped else 2):
            expected = f"(K, {T}, {T})" if grouped else f"({T}, {T})"
            raise ValueError(
                f"{where}: groups={self.groups!r} needs gram of shape {expected}, "
                f"got {tuple(G.shape)}"
            )
        G = G if grouped else G.unsqueeze(0)
        if grouped and self.target.shape[0] != G.shape[0]:
            if self.target.shape[0]:
                raise ValueError(
                    f"{where}: got a gram of {G.shape[0]} parameter groups, but the targets "
                    f"hold {self.target.shape[0]} groups (from earlier steps or a checkpoint)"
                )
            self.target = self.target.new_zeros(G.shape)
        target = self.target.reshape(G.shape).to(device=G.device, dtype=torch.float64)
        orders = self.order.draw_tensor().to(G.device)
        w, new_target = gradvac_weights(G, target, orders, self.beta)
        self.target.copy_(new_target.reshape(self.target.shape))
        shared = w if grouped else w[0]
        return Weights(shared=shared.to(losses), task=torch.ones_like(losses))

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # Per-group targets are sized at the first step: adopt a checkpoint's [K, T, T].
        T, incoming = self.num_tasks, state_dict.get(prefix + "target")
        if (
            self.groups != "whole_model"
            and isinstance(incoming, Tensor)
            and incoming.dim() == 3
            and incoming.shape[1:] == (T, T)
        ):
            self.target = self.target.new_zeros(incoming.shape)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return f"tasks={self.tasks}, beta={self.beta:g}, seed={self.seed}, groups={self.groups!r}"


@hookimpl
def pymtl_register_balancers() -> list[type[Balancer]]:
    return [GradVac]
