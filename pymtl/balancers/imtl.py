"""IMTL (``imtl``, ``imtl_g``, ``imtl_l``): impartial multi-task learning.

Reference: Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021; SPEC-methods §2.12
[C:LibMTL, nash-mtl, torchjd].

* **IMTL-G** (``imtl_g``, gradient balance): the weights ``α`` (Σα = 1) make the aggregate
  ``d = Jᵀα`` project equally onto every unit task gradient ``u_t = g_t / ‖g_t‖``. Gram form
  (torchjd; equal to the paper's closed form when G is invertible): with ``n_t = sqrt(G_tt)``
  and ``v = G⁺ n``, ``α = v / Σv`` (α = 0 when |Σv| < 1e-12). Indeed ``Gv = n`` means
  ``⟨Jᵀv, g_t⟩ = ‖g_t‖``, i.e. the projection of ``Jᵀv`` on every ``u_t`` is 1. w = α, s = 1.
* **IMTL-L** (``imtl_l``, loss balance): learnable scales s_t (init 0) replace each loss by
  ``e^{s_t} L_t − s_t``. Both the shared and the task-specific parameters see the scaled loss,
  so w = s = e^{s_t} and the losses suffice (one backward); the s_t are trained by the model's
  optimiser through ``aux_loss = Σ_t (e^{s_t} sg(L_t) − s_t)``, whose gradient
  ``e^{s_t} L_t − 1`` is the scaled loss's.
* **Hybrid** (``imtl``, the paper's full method): IMTL-G on the gradients of the scaled losses,
  ``e^{s_t} g_t`` (Gram ``E G E`` with ``E = diag(e^s)``), as LibMTL does [C:LibMTL]. The
  shared update is ``Σ_t α_t e^{s_t} g_t``; since pymtl applies w to the raw gradients,
  w = α ⊙ e^s [pymtl], and s = e^s (the task-specific parts get the scaled loss).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import torch
from torch import Tensor, nn

from pymtl.balancers.base import Balancer, Needs, Weights, constant_weights
from pymtl.hookspecs import hookimpl

SUM_TOLERANCE = 1e-12
"""|Σv| below which IMTL-G returns α = 0 (torchjd's convention) [C:torchjd]."""


@attrs.frozen(kw_only=True)
class IMTLConfig:
    """``imtl``, ``imtl_g`` and ``imtl_l`` have no options (the scales start at s_t = 0)."""


def imtl_g_weights(gram: Tensor) -> Tensor:
    """IMTL-G weights α [T] (Σα = 1) from a Gram matrix [T, T], computed in float64 [C:torchjd].

    ``Jᵀα`` has the same inner product with every unit task gradient ``g_t / ‖g_t‖``.
    """
    G = gram.detach().to(torch.float64)
    norms = G.diagonal().clamp(min=0.0).sqrt()
    v: Tensor = torch.linalg.pinv(G, hermitian=True) @ norms
    total = v.sum()
    if total.abs() < SUM_TOLERANCE:
        return torch.zeros_like(v)
    return v / total


class IMTLGradient(Balancer):
    """IMTL-G: weights whose aggregate projects equally onto every unit task gradient [P].

    Reference: Liu et al., ICLR 2021, §3.2; Gram form as in torchjd [C:torchjd]. w = α
    (Σα = 1), s = 1.

    Args:
        tasks: task names, in loss order.

    Example:
        >>> import torch
        >>> G = torch.tensor([[1.0, -1.0], [-1.0, 2.0]], dtype=torch.float64)
        >>> IMTLGradient(["seg", "depth"])(torch.ones(2, dtype=torch.float64), gram=G).shared
        tensor([0.5858, 0.4142], dtype=torch.float64)
    """

    name = "imtl_g"
    Config = IMTLConfig
    needs = Needs.GRAM

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__(tasks)

    def compute(self, losses: Tensor, *, gram: Tensor | None, jacobian: Tensor | None) -> Weights:
        assert gram is not None  # checked by Balancer.forward
        return Weights(shared=imtl_g_weights(gram).to(losses), task=torch.ones_like(losses))


class IMTLLoss(Balancer):
    """IMTL-L: learnable loss scales, each loss replaced by e^{s_t} L_t − s_t [P].

    Reference: Liu et al., ICLR 2021, §3.1 [C:LibMTL, nash-mtl]. w = s = e^{s_t}; the scales
    (parameter ``log_scale``, init 0) learn through ``aux_loss`` with the model's optimiser.

    Args:
        tasks: task names, in loss order.

    Example:
        >>> import torch
        >>> out = IMTLLoss(["seg", "depth"])(torch.tensor([0.5, 2.0]))
        >>> out.shared, out.aux_loss
        (tensor([1., 1.]), tensor(2.5000, grad_fn=<SumBackward0>))
    """

    name = "imtl_l"
    Config = IMTLConfig
    needs = Needs.LOSSES

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__(tasks)
        self.log_scale = nn.Parameter(torch.zeros(self.num_tasks))

    def compute(self, losses: Tensor, *, gram: Tensor | None, jacobian: Tensor | None) -> Weights:
        scale, aux = self._scales(losses)
        return attrs.evolve(constant_weights(scale, losses), aux_loss=aux)

    def _scales(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        """(e^s detached, in the losses' dtype; the aux loss Σ e^{s_t} sg(L_t) − s_t)."""
        s = self.log_scale.to(losses)
        aux = (s.exp() * losses.detach() - s).sum()
        return s.detach().exp(), aux


class IMTL(IMTLLoss):
    """IMTL (hybrid): IMTL-G on the gradients of the IMTL-L-scaled losses [P].

    Reference: Liu et al., ICLR 2021, Algorithm 1 [C:LibMTL]. With E = diag(e^s), α is the
    IMTL-G solution for the Gram matrix ``E G E``; w = α ⊙ e^s (weights of the raw
    gradients), s = e^s, and the scales learn through ``aux_loss`` as in IMTL-L.

    Args:
        tasks: task names, in loss order.

    Example:
        >>> import torch
        >>> G = torch.tensor([[1.0, -1.0], [-1.0, 2.0]], dtype=torch.float64)
        >>> out = IMTL(["seg", "depth"])(torch.ones(2, dtype=torch.float64), gram=G)
        >>> out.shared, out.task
        (tensor([0.5858, 0.4142], dtype=torch.float64), tensor([1., 1.], dtype=torch.float64))
    """

    name = "imtl"
    needs = Needs.GRAM

    def compute(self, losses: Tensor, *, gram: Tensor | None, jacobian: Tensor | None) -> Weights:
        assert gram is not None  # checked by Balancer.forward
        scale, aux = self._scales(losses)
        e = scale.to(gram.device, torch.float64)
        alpha = imtl_g_weights(gram.detach().to(torch.float64) * torch.outer(e, e))
        return Weights(shared=(alpha * e).to(losses), task=scale, aux_loss=aux)


@hookimpl
def pymtl_register_balancers() -> list[type[Balancer]]:
    return [IMTL, IMTLGradient, IMTLLoss]
