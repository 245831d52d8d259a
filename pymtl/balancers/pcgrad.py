"""PCGrad (``pcgrad``): project away the conflicting part of each task gradient.

Reference: Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020, Alg. 1
(SPEC-methods §2.8) [C:tianheyu927/PCGrad, nash-mtl, torchjd]. For each task i, with a fresh
random order of the other tasks j, ``pc_i ← pc_i − (⟨pc_i, g_j⟩/‖g_j‖²) g_j`` whenever
``⟨pc_i, g_j⟩ < 0``; the shared parameters move along ``d = Σ_i pc_i``, each task's own
parameters along its own gradient (s = 1).

Gram form (exact) [pymtl]: every ``pc_i`` stays in the span of the gradients, ``pc_i = Jᵀ c_i``
with ``c_i = e_i`` at the start, ``⟨pc_i, g_j⟩ = (G c_i)_j`` and the projection is
``c_i[j] −= (G c_i)_j / G_jj``; then ``w = Σ_i c_i``. Tasks with ``G_jj < 1e-20`` (a vanishing
gradient) are skipped as projection targets.

``reduction``: ``sum`` (default: the paper, the official code and nash-mtl add the projected
gradients) or ``mean`` (w/T and s = 1/T, the mean of the task losses) [pymtl].

The orders come from the balancer's own ``torch.Generator`` seeded with ``seed``; its state is
a buffer, so a resumed run and every process of a distributed run draw the same orders
(SPEC-methods §0.1) [pymtl]. ``order="identity"`` fixes the order to ascending task index (for
tests and the SPEC-methods §2.18 vectors). The orders are drawn on the CPU and moved to G's
device; the T×T solve is the compiled op :func:`pymtl.ops.pcgrad_weights` (CPU or CUDA).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from pymtl.balancers.base import Balancer, Needs, Weights
from pymtl.hookspecs import hookimpl
from pymtl.ops.projection import pcgrad_weights

__all__ = [
    "ORDERS",
    "PCGrad",
    "PCGradConfig",
    "TaskOrder",
    "finite_gram",
    "gram_float64",
    "pcgrad_weights",
]

ORDERS = ("random", "identity")
REDUCTIONS = ("sum", "mean")


def check_seed(name: str) -> Any:
    """An attrs validator: ``seed`` is an integer in [0, 2**63), for balancer ``name``."""

    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
            raise ValueError(
                f"balancer {name!r}: {attribute.name!r} must be an integer in [0, 2**63) "
                f"(got {value!r})"
            )

    return validate


@attrs.frozen(kw_only=True)
class PCGradConfig:
    """Options of ``pcgrad``.

    Attributes:
        reduction: ``sum`` (w = Σ_i c_i, s = 1) or ``mean`` (both divided by T).
        order: ``random`` (a fresh permutation per task and step) or ``identity``.
        seed: seed of the balancer's generator (the same on every process).
    """

    reduction: str = attrs.field(default="sum", validator=attrs.validators.in_(REDUCTIONS))
    order: str = attrs.field(default="random", validator=attrs.validators.in_(ORDERS))
    seed: int = attrs.field(default=0, validator=check_seed("pcgrad"))


class TaskOrder(nn.Module):
    """For each task i, the order in which it meets the other tasks (PCGrad, GradVac) [pymtl].

    ``random``: ``randperm`` of the other tasks from an own generator, fresh for every i and
    every call; the generator state is the ``rng_state`` buffer (saved in ``state_dict``).
    ``identity``: ascending task index.

    Args:
        num_tasks: T.
        order: ``random`` or ``identity``.
        seed: seed of the generator.
    """

    def __init__(self, num_tasks: int, *, order: str = "random", seed: int = 0) -> None:
        super().__init__()
        if order not in ORDERS:
            raise ValueError(f"task order must be one of {', '.join(ORDERS)} (got {order!r})")
        self.num_tasks, self.order = num_tasks, order
        self.generator = torch.Generator().manual_seed(seed)
        self.register_buffer("rng_state", self.generator.get_state())
        self.rng_state: Tensor

    def draw_tensor(self) -> Tensor:
        """``orders`` [T, T-1] int64 on the CPU: row i lists the tasks j ≠ i in the order task
        i meets them. ``random`` advances the generator by T ``randperm`` draws."""
        T = self.num_tasks
        if self.order == "identity":
            perms = torch.arange(T - 1).expand(T, T - 1)
        else:
            self.generator.set_state(self.rng_state.cpu())  # the buffer is the truth (resume)
            perms = torch.stack([torch.randperm(T - 1, generator=self.generator) for _ in range(T)])
            self.rng_state.copy_(self.generator.get_state())
        return perms + (perms >= torch.arange(T).unsqueeze(1)).long()  # int64; skips j = i

    def draw(self) -> list[list[int]]:
        """:meth:`draw_tensor` as nested lists."""
        return self.draw_tensor().tolist()

    def extra_repr(self) -> str:
        return f"order={self.order!r}"


def gram_float64(gram: Tensor, *, where: str) -> NDArray[np.float64]:
    """The Gram matrix as a float64 NumPy array on the CPU (the T×T maths runs there).

    Raises:
        ValueError: an entry is NaN or infinite (``where`` names the balancer).
    """
    G = gram.detach().to(device="cpu", dtype=torch.float64).numpy()
    if not np.isfinite(G).all():
        raise ValueError(
            f"{where}: the Gram matrix of the task gradients must be finite, got {G.tolist()} "
            "(a gradient overflowed or is NaN)"
        )
    return G


def finite_gram(gram: Tensor, *, where: str) -> Tensor:
    """The Gram matrix (or a [K, T, T] stack) as float64 on its own device.

    Raises:
        ValueError: an entry is NaN or infinite (``where`` names the balancer).
    """
    G = gram.detach().to(torch.float64)
    if not bool(torch.isfinite(G).all()):
        raise ValueError(
            f"{where}: the Gram matrix of the task gradients must be finite, got {G.tolist()} "
            "(a gradient overflowed or is NaN)"
        )
    return G


class PCGrad(Balancer):
    """PCGrad: remove the conflicting components between task gradients (Gram form) [C:PCGrad].

    Reference: Yu et al., NeurIPS 2020, Alg. 1 [C:tianheyu927/PCGrad, nash-mtl, torchjd].
    Shared parameters: ``d = Jᵀ w`` with ``w`` the projection coefficients of SPEC-methods
    §2.8; task-specific parameters: ``s = 1`` (``1/T`` with ``reduction="mean"``).

    Args:
        tasks: task names, in loss order.
        reduction: ``sum`` or ``mean``.
        order: ``random`` or ``identity`` (ascending task index; for tests).
        seed: seed of the generator of the random orders.

    Example:
        >>> import torch
        >>> G = torch.tensor([[1.0, -1.0], [-1.0, 2.0]])  # g1 = (1, 0), g2 = (-1, 1)
        >>> PCGrad(["seg", "depth"], order="identity")(torch.ones(2), gram=G).shared
        tensor([2.0000, 1.5000])
    """

    name = "pcgrad"
    Config = PCGradConfig
    needs = Needs.GRAM

    def __init__(
        self, tasks: Sequence[str], *, reduction: str = "sum", order: str = "random", seed: int = 0
    ) -> None:
        super().__init__(tasks)
        PCGradConfig(reduction=reduction, order=order, seed=seed)  # same validation
        self.reduction, self.seed = reduction, seed
        self.order = TaskOrder(self.num_tasks, order=order, seed=seed)

    def compute(self, losses: Tensor, *, gram: Tensor | None, jacobian: Tensor | None) -> Weights:
        assert gram is not None  # checked by Balancer.forward
        G = finite_gram(gram, where=f"balancer {self.name!r}")
        w = pcgrad_weights(G, self.order.draw_tensor().to(G.device))
        s = torch.ones(self.num_tasks, dtype=torch.float64)
        if self.reduction == "mean":
            w, s = w / self.num_tasks, s / self.num_tasks
        return Weights(shared=w.to(losses), task=s.to(losses))

    def extra_repr(self) -> str:
        return f"tasks={self.tasks}, reduction={self.reduction!r}, seed={self.seed}"


@hookimpl
def pymtl_register_balancers() -> list[type[Balancer]]:
    return [PCGrad]
