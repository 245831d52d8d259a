"""Nash-MTL (``nash_mtl``): the Nash bargaining solution of the tasks' gradients.

Reference: Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022 (SPEC-methods
§2.13) [C:AvivNavon/nash-mtl]. The weights ``α ∈ R^T_{>0}`` solve ``α ⊙ (Gα) = 1``, i.e.
``(Gα)_t = 1/α_t``; the update is ``d = Jᵀα`` and every task's own parameters get ``α_t``
(``w = s = α``). The official code then clips the norm of the shared parameters' gradient to
``max_norm = 1``; pymtl applies that clip in Gram space: ``w = α · min(1, max_norm /
(‖Jᵀα‖ + 1e-6))`` with ``‖Jᵀα‖ = √(αᵀGα)`` (torch's ``clip_grad_norm_`` formula), ``s = α``
unclipped. At the solution ``αᵀGα = Σ_t α_t (Gα)_t = T``, so with T ≥ 2 the clip always fires
and the returned shared weights are ``α/√T`` (up to the 1e-6); ``max_norm = 0`` turns it off
(SPEC-methods §2.18 note 4) [pymtl]. The unclipped α is the buffer ``alpha``.

Solver [pymtl]: the official code runs up to 20 convex subproblems with cvxpy/ECOS, stopping
at ``‖Gα − 1/α‖ < 1e-3``. Here ``α`` is the minimiser of the strictly convex, self-concordant
``F(α) = ½ αᵀGα − Σ_t log α_t`` over ``α > 0``, whose stationarity condition
``Gα − 1/α = 0`` is exactly the bargaining equation, so the minimiser (when it exists) is the
unique solution. Damped Newton (step ``Δ/(1 + λ)`` while the Newton decrement ``λ ≥ 1/4``, full
steps after) stays in ``α > 0`` and converges globally, quadratically at the end (Nesterov,
"Introductory Lectures on Convex Optimization", §4.1.5) [P]. It starts from the previous step's
α (warm start, as the official code), rescaled by the exact minimiser of F along that ray
(``α ← α √(T / αᵀGα)``), and runs at most ``niter`` steps, stopping when
``max_t |α_t (Gα)_t − 1| ≤ 1e-10``; an unconverged α is kept, as the official code keeps its
last iterate.

No solution exists when 0 lies in the convex hull of the task gradients (F is unbounded below
along ``u ≥ 0`` with ``Jᵀu = 0``), e.g. when a task's gradient is zero because the batch has
no labels for it. This is detected (a zero diagonal of G, or, when Newton does not converge,
a min-norm point of the hull with ``‖Jᵀu‖² ≤ 1e-10 max_t ‖g_t‖²``) and, by default, raises
:class:`NoBargainingSolutionError`; ``on_degenerate="previous"`` warns and reuses the previous
α instead (what the official code does when its solver fails) [pymtl].
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from pymtl.balancers._minnorm import simplex_min_norm
from pymtl.balancers.base import Balancer, Needs, Weights
from pymtl.balancers.pcgrad import gram_float64
from pymtl.errors import PymtlError
from pymtl.hookspecs import hookimpl

__all__ = ["NashMTL", "NashMTLConfig", "NoBargainingSolutionError", "nash_alpha"]

Array = NDArray[np.float64]
TOLERANCE = 1e-10
DEGENERATE = 1e-10


class NoBargainingSolutionError(PymtlError):
    """Nash-MTL has no solution: 0 lies in the convex hull of the task gradients."""


def _positive_int(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"balancer 'nash_mtl': {attribute.name!r} must be an integer >= 1 (got {value!r})"
        )


def _max_norm(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (ok and math.isfinite(value) and value >= 0):
        raise ValueError(
            f"balancer 'nash_mtl': 'max_norm' must be a finite number >= 0 (got {value!r})"
        )


@attrs.frozen(kw_only=True)
class NashMTLConfig:
    """Options of ``nash_mtl``.

    Attributes:
        niter: most Newton steps per solve (the official ``optim_niter``).
        max_norm: clip of the shared gradient's norm (0: no clip).
        update_weights_every: solve every this many steps, reuse α in between.
        on_degenerate: ``raise`` or ``previous`` (warn, reuse α) when no solution exists.
    """

    niter: int = attrs.field(default=20, validator=_positive_int)
    max_norm: float = attrs.field(default=1.0, validator=_max_norm)
    update_weights_every: int = attrs.field(default=1, validator=_positive_int)
    on_degenerate: str = attrs.field(
        default="raise", validator=attrs.validators.in_(("raise", "previous"))
    )


def _residual(G: Array, alpha: Array) -> float:
    return float(np.abs(alpha * (G @ alpha) - 1.0).max())


def _barrier(G: Array, alpha: Array) -> float:
    """``F(α) = ½ αᵀGα − Σ_t log α_t``."""
    return 0.5 * float(alpha @ G @ alpha) - float(np.log(alpha).sum())


def _on_ray(G: Array, alpha: Array) -> Array | None:
    """The minimiser of F on the ray through ``alpha`` > 0: ``α √(T / αᵀGα)``."""
    quad = float(alpha @ G @ alpha)
    if not (quad > 0.0 and (alpha > 0.0).all()):
        return None
    return alpha * math.sqrt(alpha.shape[0] / quad)


def nash_alpha(G: Array, start: Array, *, niter: int) -> tuple[Array, bool]:
    """``α > 0`` with ``α ⊙ (Gα) = 1`` by damped Newton from ``start`` (> 0) [T].

    Returns ``(α, converged)``; ``converged`` is ``max_t |α_t (Gα)_t − 1| ≤ 1e-10``.
    Scale: ``G → σG`` gives ``α → α/√σ``.
    """
    scale = float(np.max(np.diag(G), initial=0.0))
    if scale <= 0.0:
        return start.copy(), False
    G = G / scale  # α_raw = α / √scale
    diag = np.diag(G)
    if not (diag > 0.0).all():
        return start.copy(), False
    rays = [_on_ray(G, start * math.sqrt(scale)), _on_ray(G, 1.0 / np.sqrt(diag))]
    alpha = min((r for r in rays if r is not None), key=lambda a: _barrier(G, a))
    for _ in range(niter):
        if _residual(G, alpha) <= TOLERANCE:
            break
        grad = G @ alpha - 1.0 / alpha
        try:
            step = np.linalg.solve(G + np.diag(1.0 / alpha**2), grad)
        except np.linalg.LinAlgError:
            break
        decrement = math.sqrt(max(float(grad @ step), 0.0))
        alpha = alpha - (step / (1.0 + decrement) if decrement >= 0.25 else step)
    return alpha / math.sqrt(scale), _residual(G, alpha) <= TOLERANCE


def _degenerate(G: Array, tasks: Sequence[str]) -> str | None:
    """Why no solution exists (0 in the hull of the gradients), or None if it does exist."""
    diag = np.diag(G)
    scale = float(np.max(diag, initial=0.0))
    zero = [t for t, d in zip(tasks, diag.tolist(), strict=True) if d <= DEGENERATE * scale]
    if zero or scale <= 0.0:
        names = ", ".join(zero)
        return f"the gradient of task(s) {names} is zero (e.g. no labels in the batch)"
    u = simplex_min_norm(G)
    norm_sq = float(u @ G @ u)
    if norm_sq <= DEGENERATE * scale:
        mix = ", ".join(f"{t}={v:.4g}" for t, v in zip(tasks, u.tolist(), strict=True))
        return f"the gradients combined with u = ({mix}) have squared norm {norm_sq:.3g}"
    return None


class NashMTL(Balancer):
    """Nash-MTL: weights from the Nash bargaining solution ``α ⊙ (Gα) = 1`` [C:nash-mtl].

    Reference: Navon et al., ICML 2022 [C:AvivNavon/nash-mtl]. Shared parameters:
    ``w = α · min(1, max_norm / (‖Jᵀα‖ + 1e-6))`` (the official gradient clip, in Gram
    space); task-specific parameters: ``s = α``. State: ``alpha`` (the last solution, the warm
    start) and ``step``.

    Args:
        tasks: task names, in loss order.
        niter: most Newton steps per solve.
        max_norm: clip of the shared gradient norm (0: none).
        update_weights_every: solve every this many steps.
        on_degenerate: ``raise`` or ``previous`` when 0 is in the hull of the gradients.

    Example:
        >>> import torch
        >>> G = torch.tensor([[1.0, -1.0], [-1.0, 2.0]], dtype=torch.float64)
        >>> b = NashMTL(["seg", "depth"], max_norm=0.0)
        >>> b(torch.ones(2, dtype=torch.float64), gram=G).shared
        tensor([1.8478, 1.3066], dtype=torch.float64)
    """

    name = "nash_mtl"
    Config = NashMTLConfig
    needs = Needs.GRAM

    def __init__(
        self,
        tasks: Sequence[str],
        *,
        niter: int = 20,
        max_norm: float = 1.0,
        update_weights_every: int = 1,
        on_degenerate: str = "raise",
    ) -> None:
        super().__init__(tasks)
        NashMTLConfig(
            niter=niter,
            max_norm=max_norm,
            update_weights_every=update_weights_every,
            on_degenerate=on_degenerate,
        )  # same validation
        self.niter, self.max_norm = niter, float(max_norm)
        self.update_weights_every, self.on_degenerate = update_weights_every, on_degenerate
        self.register_buffer("alpha", torch.ones(self.num_tasks, dtype=torch.float64))
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))
        self.alpha: Tensor
        self.step: Tensor

    def compute(self, losses: Tensor, *, gram: Tensor | None, jacobian: Tensor | None) -> Weights:
        assert gram is not None  # checked by Balancer.forward
        G = gram_float64(gram, where=f"balancer {self.name!r}")
        alpha = self.alpha.detach().to(device="cpu", dtype=torch.float64).numpy().copy()
        if int(self.step) % self.update_weights_every == 0:
            alpha = self._solve(G, alpha)
            self.alpha.copy_(torch.from_numpy(alpha))
        self.step += 1
        clip = 1.0
        if self.max_norm > 0.0:
            norm = math.sqrt(max(float(alpha @ G @ alpha), 0.0))
            clip = min(1.0, self.max_norm / (norm + 1e-6))
        w = torch.from_numpy(alpha)
        return Weights(shared=(w * clip).to(losses), task=w.to(losses))

    def _solve(self, G: Array, previous: Array) -> Array:
        alpha, converged = nash_alpha(G, previous, niter=self.niter)
        why = _degenerate(G, self.tasks) if not converged or not (alpha > 0).all() else None
        if why is None:
            return alpha
        message = (
            f"balancer 'nash_mtl' (step {int(self.step)}): no Nash bargaining solution α > 0 "
            f"with α ⊙ (Gα) = 1 exists, because 0 lies in the convex hull of the task gradients: "
            f"{why}"
        )
        if self.on_degenerate == "raise":
            raise NoBargainingSolutionError(
                f"{message}; set on_degenerate='previous' to reuse the previous weights"
            )
        warnings.warn(f"{message}; reusing the previous step's α", RuntimeWarning, stacklevel=3)
        return previous

    def extra_repr(self) -> str:
        return f"tasks={self.tasks}, niter={self.niter}, max_norm={self.max_norm:g}"


@hookimpl
def pymtl_register_balancers() -> list[type[Balancer]]:
    return [NashMTL]
