"""Fast Adaptive Multitask Optimization (``famo``).

Reference: Liu, Liang, Chen, Stone, Liu, "FAMO: Fast Adaptive Multitask Optimization", NeurIPS
2023; SPEC-methods §2.16 [C:Cranial-XIX/FAMO, LibMTL]. Task logits ξ (init 0), ``z = softmax(ξ)``
and lower bounds L* = 0. The network minimises ``Σ_t z_t log(L_t + ε) / c`` with
``c = sg(Σ_t z_t / (L_t + ε))``, so ``w_t = s_t = z_t / (c (L_t + ε))``. After each optimiser step
the training loop recomputes the batch's losses L' (one extra forward); then
``δ_t = log(L_t + ε) − log(L'_t + ε)``, ``∇_ξ = J_softmax(ξ)ᵀ δ = z ⊙ (δ − zᵀδ)`` and ξ takes one
Adam step (lr 0.025, L2 weight decay γ = 1e-3 as in the official NYUv2 script and LibMTL) [S].
The Adam update is written out on buffers so ξ and its optimiser state are in ``state_dict()``
and the network's optimiser never sees them [pymtl]. No gradient clip (§2.16) [pymtl].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import attrs
import torch
from torch import Tensor

from pymtl.balancers.base import Balancer, Needs, Weights
from pymtl.hookspecs import hookimpl

_BETAS = (0.9, 0.999)  # torch.optim.Adam defaults, as in the official code
_ADAM_EPS = 1e-8


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"famo: {attribute.name!r} must be a number (got {value!r})")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"famo: {attribute.name!r} must be finite and > 0 (got {value!r})")


def _non_negative(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"famo: {attribute.name!r} must be a number (got {value!r})")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"famo: {attribute.name!r} must be finite and >= 0 (got {value!r})")


@attrs.frozen(kw_only=True)
class FAMOConfig:
    """Options of ``famo``.

    Attributes:
        lr: Adam learning rate of the task logits ξ.
        gamma: L2 weight decay of ξ in its Adam step (official CLI default 0.01).
        eps: ε added to the losses before the log and the division.
    """

    lr: float = attrs.field(default=0.025, validator=_positive)
    gamma: float = attrs.field(default=1e-3, validator=_non_negative)
    eps: float = attrs.field(default=1e-8, validator=_positive)


class FAMO(Balancer):
    """FAMO: adaptive logit weights learnt from the per-task log-loss decrease (w = s) [S].

    Reference: Liu et al., NeurIPS 2023. Needs the losses only plus, after every optimiser
    step, the same batch's losses again (``wants_losses_after_step``): O(T) extra work.

    Args:
        tasks: task names, in loss order.
        lr: Adam learning rate of the logits.
        gamma: weight decay of the logits.
        eps: ε of ``log(L + ε)`` and ``1 / (L + ε)``.

    Example:
        >>> import torch
        >>> b = FAMO(["seg", "depth"])
        >>> b(torch.tensor([0.5, 2.0], dtype=torch.float64)).shared
        tensor([0.8000, 0.2000], dtype=torch.float64)
    """

    name = "famo"
    Config = FAMOConfig
    needs = Needs.LOSSES
    wants_losses_after_step = True

    def __init__(
        self, tasks: Sequence[str], *, lr: float = 0.025, gamma: float = 1e-3, eps: float = 1e-8
    ) -> None:
        super().__init__(tasks)
        FAMOConfig(lr=lr, gamma=gamma, eps=eps)  # same validation as the config
        self.lr, self.gamma, self.eps = float(lr), float(gamma), float(eps)
        T = self.num_tasks
        self.register_buffer("logits", torch.zeros(T, dtype=torch.float64))
        self.register_buffer("adam_m", torch.zeros(T, dtype=torch.float64))
        self.register_buffer("adam_v", torch.zeros(T, dtype=torch.float64))
        self.register_buffer("adam_step", torch.zeros((), dtype=torch.int64))
        self.logits: Tensor
        self.adam_m: Tensor
        self.adam_v: Tensor
        self.adam_step: Tensor

    def compute(self, losses: Tensor, *, gram: Tensor | None, jacobian: Tensor | None) -> Weights:
        z = torch.softmax(self.logits, dim=0)
        inv = 1.0 / (losses.detach().to(self.logits) + self.eps)
        c = (z * inv).sum()
        w = (z * inv / c).to(device=losses.device, dtype=losses.dtype)
        return Weights(shared=w, task=w)

    def logit_gradient(self, losses_before: Tensor, losses_after: Tensor) -> Tensor:
        """``J_softmax(ξ)ᵀ δ`` with ``δ = log(L + ε) − log(L' + ε)`` (float64, [T])."""
        before = losses_before.detach().to(self.logits)
        after = losses_after.detach().to(self.logits)
        delta = torch.log(before + self.eps) - torch.log(after + self.eps)
        z = torch.softmax(self.logits, dim=0)
        return z * (delta - (z * delta).sum())

    def after_step(self, losses_before: Tensor, losses_after: Tensor) -> None:
        """One Adam step of ξ (torch.optim.Adam semantics, L2 weight decay γ)."""
        T = self.num_tasks
        for what, value in (("losses_before", losses_before), ("losses_after", losses_after)):
            if not (isinstance(value, Tensor) and value.shape == (T,)):
                got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(
                    f"balancer 'famo': after_step {what} must have shape ({T},) for tasks "
                    f"{self.tasks}, got {got}"
                )
        with torch.no_grad():
            grad = self.logit_gradient(losses_before, losses_after) + self.gamma * self.logits
            self.adam_step += 1
            k = int(self.adam_step)
            beta1, beta2 = _BETAS
            self.adam_m.mul_(beta1).add_(grad, alpha=1 - beta1)
            self.adam_v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (self.adam_v / (1 - beta2**k)).sqrt() + _ADAM_EPS
            self.logits.sub_(self.lr / (1 - beta1**k) * self.adam_m / denom)

    def extra_repr(self) -> str:
        return f"tasks={self.tasks}, lr={self.lr:g}, gamma={self.gamma:g}, eps={self.eps:g}"


@hookimpl
def pymtl_register_balancers() -> list[type[Balancer]]:
    return [FAMO]
