"""Aligned-MTL (``aligned_mtl``): align the task gradients by conditioning their Gram matrix.

Reference: Senushkin et al., "Independent Component Alignment for Multi-Task Learning", CVPR
2023; SPEC-methods §2.14 [C:SamsungLabs/MTL, torchjd, LibMTL]. Eigendecompose
``G = V Λ Vᵀ`` and keep the r eigenpairs with ``λ > λ_max · T · ε`` (ε: machine epsilon of
G's dtype). The balance matrix ``B = σ V_r Λ_r^{-1/2} V_rᵀ`` makes the aligned gradients
``B J`` orthogonal with equal norms σ; the shared update is ``d = Jᵀ (B p)``, so w = B p.

* ``scale``: σ = sqrt(min λ) (``min``, default), sqrt of the lower median λ (``median``, as
  ``torch.median``), or sqrt(mean λ) (``rmse``), over the kept eigenvalues.
* ``reduction``: preference p = 1 (``sum``, the official code and LibMTL, default) or p = 1/T
  (``mean``, torchjd) [pymtl default].
* s = 1 (the official ``scale_decoder_grad=False``). If no eigenvalue is kept (G ≈ 0), w = p.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import torch
from torch import Tensor

from pymtl.balancers.base import Balancer, Needs, Weights
from pymtl.hookspecs import hookimpl

SCALES = ("min", "median", "rmse")
REDUCTIONS = ("sum", "mean")


@attrs.frozen(kw_only=True)
class AlignedMTLConfig:
    """Options of ``aligned_mtl``.

    Attributes:
        scale: σ² from the kept eigenvalues: ``min``, ``median`` (lower) or ``rmse`` (mean).
        reduction: preference vector p = 1 (``sum``) or 1/T (``mean``).
    """

    scale: str = attrs.field(default="min", validator=attrs.validators.in_(SCALES))
    reduction: str = attrs.field(default="sum", validator=attrs.validators.in_(REDUCTIONS))


def aligned_mtl_weights(gram: Tensor, preference: Tensor, *, scale: str = "min") -> Tensor:
    """w = B p [T] in float64 for a Gram matrix [T, T] and a preference vector p [T].

    The rank cut uses the machine epsilon of ``gram``'s dtype (SPEC-methods §2.18 note 6).
    """
    if scale not in SCALES:
        raise ValueError(f"aligned_mtl: scale must be one of {SCALES} (got {scale!r})")
    eps = torch.finfo(gram.dtype).eps
    G = gram.detach().to(torch.float64)
    p = preference.to(G)
    lam, V = torch.linalg.eigh(G)
    keep = lam > lam.max().clamp(min=0.0) * G.shape[0] * eps
    if not keep.any():
        return p
    lam, V = lam[keep], V[:, keep]
    sigma_sq = {"min": lam.min(), "median": lam.median(), "rmse": lam.mean()}[scale]
    B = sigma_sq.sqrt() * (V * lam.rsqrt()) @ V.T
    w: Tensor = B @ p
    return w


class AlignedMTL(Balancer):
    """Aligned-MTL: weights that make the task gradients orthogonal with equal norms [P].

    Reference: Senushkin et al., CVPR 2023, Algorithm 1 [C:SamsungLabs/MTL]. w = B p with the
    balance matrix B from the eigendecomposition of G, s = 1.

    Args:
        tasks: task names, in loss order.
        scale: ``min`` (default), ``median`` or ``rmse``.
        reduction: ``sum`` (p = 1, default) or ``mean`` (p = 1/T).

    Example:
        >>> import torch
        >>> G = torch.tensor([[1.0, -1.0], [-1.0, 2.0]], dtype=torch.float64)
        >>> AlignedMTL(["seg", "depth"])(torch.ones(2, dtype=torch.float64), gram=G).shared
        tensor([1.1056, 0.8292], dtype=torch.float64)
    """

    name = "aligned_mtl"
    Config = AlignedMTLConfig
    needs = Needs.GRAM

    def __init__(self, tasks: Sequence[str], *, scale: str = "min", reduction: str = "sum") -> None:
        super().__init__(tasks)
        AlignedMTLConfig(scale=scale, reduction=reduction)  # same validation as the config
        self.scale, self.reduction = scale, reduction

    def compute(self, losses: Tensor, *, gram: Tensor | None, jacobian: Tensor | None) -> Weights:
        assert gram is not None  # checked by Balancer.forward
        T = self.num_tasks
        p = torch.ones(T, dtype=torch.float64, device=gram.device)
        if self.reduction == "mean":
            p = p / T
        w = aligned_mtl_weights(gram, p, scale=self.scale)
        return Weights(shared=w.to(losses), task=torch.ones_like(losses))

    def extra_repr(self) -> str:
        return f"scale={self.scale!r}, reduction={self.reduction!r}"


@hookimpl
def pymtl_register_balancers() -> list[type[Balancer]]:
    return [AlignedMTL]
