"""MGDA (``mgda``) and MGDA-UB (``mgda_ub``): the min-norm point of the task gradients' hull.

Reference: Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018;
SPEC-methods §2.7 [S][C:isl-org/MultiObjectiveOptimization]. The weights ``c ∈ Δ_T`` minimise
``‖Σ_t c_t g̃_t‖²`` with ``g̃_t = g_t / n_t``, i.e. ``cᵀ G̃ c`` with ``G̃ = D⁻¹ G D⁻¹`` and
``D = diag(n)``. Normalisers ``n_t`` (``norm``): ``none`` (1, pymtl's default, as KD4MTL and
LibMTL), ``l2`` (‖g_t‖), ``loss`` (L_t), ``loss+`` (L_t‖g_t‖, the official sample config).

Solver [pymtl]: the exact active-set solve of :mod:`pymtl.balancers._minnorm` in float64, not
the reference's Frank–Wolfe loop (accurate to ~1e-3, SPEC-methods §2.18 note 1). When the
minimiser is not unique (e.g. T > P) any minimiser gives the same update ``d = Jᵀ c``.

Output: the official code back-propagates ``Σ_t c_t L_t`` on the raw losses, so w = s = c
(``apply="raw"``, default); LibMTL applies c to the normalised gradients, w = s = c / n
(``apply="normalized"``). ``reduction="mean"`` (default) keeps Σc = 1; ``"sum"`` gives T·c
(nash-mtl's scale). ``mgda_ub`` solves the same problem with the Gram matrix of the gradients
of the shared representation Z (the "upper bound" approximation).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import torch
from torch import Tensor

from pymtl.balancers._minnorm import simplex_min_norm
from pymtl.balancers.base import Balancer, Needs, Weights
from pymtl.hookspecs import hookimpl

NORMS = ("none", "l2", "loss", "loss+")
APPLY = ("raw", "normalized")
REDUCTIONS = ("mean", "sum")
REP_REDUCE = ("whole_batch", "sum_batch")


@attrs.frozen(kw_only=True)
class MGDAConfig:
    """Options of ``mgda`` and ``mgda_ub``.

    Attributes:
        norm: gradient normaliser n_t: ``none``, ``l2`` (‖g_t‖), ``loss`` (L_t), ``loss+``.
        apply: ``raw`` (w = c, official) or ``normalized`` (w = c / n, LibMTL).
        reduction: ``mean`` (Σc = 1) or ``sum`` (w = T·c).
    """

    norm: str = attrs.field(default="none", validator=attrs.validators.in_(NORMS))
    apply: str = attrs.field(default="raw", validator=attrs.validators.in_(APPLY))
    reduction: str = attrs.field(default="mean", validator=attrs.validators.in_(REDUCTIONS))


class MGDA(Balancer):
    """MGDA: weights of the min-norm point of the convex hull of the task gradients [S].

    Reference: Sener & Koltun, NeurIPS 2018, Algorithm 2 [C:isl-org/MultiObjectiveOptimization],
    solved exactly from the Gram matrix G [pymtl]. w = s = c ∈ Δ_T (``reduction="mean"``).

    Args:
        tasks: task names, in loss order.
        norm: gradient normaliser: ``none``, ``l2``, ``loss`` or ``loss+``.
        apply: ``raw`` (w = c) or ``normalized`` (w = c / n).
        reduction: ``mean`` (Σw = 1 with ``apply="raw"``) or ``sum`` (T times that).

    Example:
        >>> import torch
        >>> G = torch.tensor([[1.0, -1.0], [-1.0, 2.0]], dtype=torch.float64)
        >>> MGDA(["seg", "depth"])(torch.ones(2, dtype=torch.float64), gram=G).shared
        tensor([0.6000, 0.4000], dtype=torch.float64)
    """

    name = "mgda"
    Config = MGDAConfig
    needs = Needs.GRAM

    def __init__(
        self,
        tasks: Sequence[str],
        *,
        norm: str = "none",
        apply: str = "raw",
        reduction: str = "mean",
    ) -> None:
        super().__init__(tasks)
        MGDAConfig(norm=norm, apply=apply, reduction=reduction)  # same validation
        self.norm, self.apply_mode, self.reduction = norm, apply, reduction  # Module.apply exists

    def compute(self, losses: Tensor, *, gram: Tensor | None, jacobian: Tensor | None) -> Weights:
        assert gram is not None  # checked by Balancer.forward
        G = gram.detach().to("cpu", torch.float64)
        n = self._normalisers(losses.detach().to("cpu", torch.float64), G)
        c = torch.from_numpy(simplex_min_norm((G / torch.outer(n, n)).numpy(), where=self._where))
        w = c / n if self.apply_mode == "normalized" else c
        if self.reduction == "sum":
            w = w * self.num_tasks
        w = w.to(losses)
        return Weights(shared=w, task=w)

    @property
    def _where(self) -> str:
        return f"balancer {self.name!r}"

    def _normalisers(self, losses: Tensor, G: Tensor) -> Tensor:
        """n [T] for ``self.norm``; a zero normaliser (zero gradient or loss) counts as 1."""
        if self.norm == "none":
            return torch.ones_like(losses)
        norms = G.diagonal().clamp(min=0.0).sqrt()
        n = {"l2": norms, "loss": losses, "loss+": losses * norms}[self.norm]
        ok = [v >= 0 and v < float("inf") for v in n.tolist()]
        bad = [
            f"{t}={v:g}" for t, v, good in zip(self.tasks, n.tolist(), ok, strict=True) if not good
        ]
        if bad:
            raise ValueError(
                f"{self._where}: norm={self.norm!r} needs finite, non-negative normalisers "
                f"(losses and gradient norms), got {', '.join(bad)}"
            )
        return torch.where(n > 0, n, torch.ones_like(n))

    def extra_repr(self) -> str:
        return f"norm={self.norm!r}, apply={self.apply_mode!r}, reduction={self.reduction!r}"


@attrs.frozen(kw_only=True)
class MGDAUBConfig(MGDAConfig):
    """Options of ``mgda_ub``: those of ``mgda`` and

    Attributes:
        rep_reduce: how the representation's gradients enter G_Z (SPEC-methods §0):
            ``whole_batch`` (the reference: J_Z flattens the whole batch, [T, B·|z|]) or
            ``sum_batch`` (LibMTL: J_Z is first summed over the batch, [T, |z|]).
    """

    rep_reduce: str = attrs.field(default="whole_batch", validator=attrs.validators.in_(REP_REDUCE))


class MGDAUpperBound(MGDA):
    """MGDA-UB: MGDA on the gradients of the shared representation Z [S].

    Reference: Sener & Koltun, NeurIPS 2018, §3.3 [C:isl-org/MultiObjectiveOptimization]: the
    min-norm weights are computed from ``G_Z = J_Z J_Zᵀ`` (one backward per task through the
    decoders only) and ``J_Zᵀ w`` is back-propagated through the encoder once. Same options
    and output as :class:`MGDA`. With ``rep_reduce="sum_batch"`` the training step builds G_Z
    from J_Z summed over the batch dimension (LibMTL's variant); the update is still
    ``J_Zᵀ w`` on the whole batch.

    Args:
        tasks: task names, in loss order.
        norm: gradient normaliser: ``none``, ``l2``, ``loss`` or ``loss+``.
        apply: ``raw`` (w = c) or ``normalized`` (w = c / n).
        reduction: ``mean`` (Σw = 1 with ``apply="raw"``) or ``sum`` (T times that).
        rep_reduce: ``whole_batch`` (reference) or ``sum_batch`` (LibMTL).

    Example:
        >>> import torch
        >>> G_Z = torch.eye(2, dtype=torch.float64)
        >>> MGDAUpperBound(["seg", "depth"])(torch.ones(2, dtype=torch.float64), gram=G_Z).task
        tensor([0.5000, 0.5000], dtype=torch.float64)
    """

    name = "mgda_ub"
    Config = MGDAUBConfig
    needs = Needs.REPRESENTATION_GRAM

    def __init__(
        self,
        tasks: Sequence[str],
        *,
        norm: str = "none",
        apply: str = "raw",
        reduction: str = "mean",
        rep_reduce: str = "whole_batch",
    ) -> None:
        super().__init__(tasks, norm=norm, apply=apply, reduction=reduction)
        MGDAUBConfig(rep_reduce=rep_reduce)  # same validation
        self.rep_reduce = rep_reduce

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rep_reduce={self.rep_reduce!r}"


@hookimpl
def pymtl_register_balancers() -> list[type[Balancer]]:
    return [MGDA, MGDAUpperBound]
