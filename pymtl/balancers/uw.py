"""Uncertainty weighting (``uw``): task weights from learned homoscedastic uncertainties.

Reference: Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses for
Scene Geometry and Semantics", CVPR 2018; survey Eq. 6, ``Σ_t L_t/(2σ_t²) + log σ_t`` [S]
(SPEC-methods §2.2). Parametrised by the log-variance ``σ̃_t = log σ_t²`` as in lorenmt/mtan,
LibMTL and nash-mtl [C:lorenmt/mtan, LibMTL, nash-mtl]::

    L = Σ_t a_t e^{−σ̃_t} L_t + ½ σ̃_t,    w = s = a_t e^{−σ̃_t},

with ``a_t = ½`` (regression form, the default for every task) or ``a_t = 1`` for the tasks in
``classification_form`` (Kendall's derivation for cross-entropy) [S]. σ̃ starts at
``sigma0 = −0.5`` (MTAN, LibMTL; nash-mtl uses 0) [C]. ``init = "loss"`` instead starts each
σ̃_t at the minimiser of its term for the first positive loss, ``σ̃_t = log(2 a_t L_t)``, so
that a loss-scale imbalance is undone from the first step (SPEC-data §3.4) [pymtl][R].

σ̃ is an ``nn.Parameter`` trained by the network's optimiser through ``aux_loss`` (SPEC:
"optimised by the model's optimiser").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import attrs
import torch
from torch import Tensor, nn

from pymtl.balancers.base import Balancer, Needs, Weights
from pymtl.hookspecs import hookimpl


def _finite(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(
            f"balancer 'uw': {attribute.name!r} must be a finite number (got {value!r})"
        )


def _names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(n, str) for n in value):
        raise TypeError(
            f"balancer 'uw': 'classification_form' must be a list of task names (got {value!r})"
        )
    return tuple(value)


@attrs.frozen(kw_only=True)
class UncertaintyWeightingConfig:
    """Options of ``uw``.

    Attributes:
        init: ``"constant"`` (σ̃ = ``sigma0``) or ``"loss"`` (σ̃_t = log(2 a_t L_t) at the
            first step where task t's loss is positive).
        sigma0: initial log-variance σ̃ with ``init = "constant"`` (and, with ``"loss"``, until
            a task's first positive loss).
        classification_form: tasks weighted by ``e^{−σ̃}`` instead of ``½e^{−σ̃}``.
    """

    init: str = attrs.field(
        default="constant", validator=attrs.validators.in_(("constant", "loss"))
    )
    sigma0: float = attrs.field(default=-0.5, validator=_finite)
    classification_form: tuple[str, ...] = attrs.field(default=(), converter=_names)


class UncertaintyWeighting(Balancer):
    """Uncertainty weighting: learned log-variances σ̃, w = s = ½e^{−σ̃_t} [S].

    Reference: Kendall et al., CVPR 2018 (survey Eq. 6). ``aux_loss`` is the UW objective
    ``Σ_t a_t e^{−σ̃_t} L_t + ½σ̃_t`` at the detached losses: the training step's one backward of
    ``Σ_t w_t L_t + aux_loss`` then gives the network ``w_t ∇L_t`` and σ̃_t the gradient
    ``½ − a_t e^{−σ̃_t} L_t``, whose zero is ``σ̃_t = log(2 a_t L_t)``.

    Args:
        tasks: task names, in loss order.
        init: ``"constant"`` or ``"loss"`` (see :class:`UncertaintyWeightingConfig`).
        sigma0: initial log-variance.
        classification_form: task names that use ``e^{−σ̃} L + ½σ̃``.

    Example:
        >>> import torch
        >>> b = UncertaintyWeighting(["seg", "depth"], sigma0=0.0)
        >>> out = b(torch.tensor([1.0, 4.0]))
        >>> out.shared, round(out.aux_loss.item(), 4)
        (tensor([0.5000, 0.5000]), 2.5)
    """

    name = "uw"
    Config = UncertaintyWeightingConfig
    needs = Needs.LOSSES

    def __init__(
        self,
        tasks: Sequence[str],
        *,
        init: str = "constant",
        sigma0: float = -0.5,
        classification_form: Sequence[str] = (),
    ) -> None:
        super().__init__(tasks)
        config = UncertaintyWeightingConfig(
            init=init, sigma0=sigma0, classification_form=classification_form
        )
        unknown = sorted(set(config.classification_form) - set(self.tasks))
        if unknown:
            raise ValueError(
                f"balancer 'uw': classification_form names unknown task(s) {', '.join(unknown)}; "
                f"expected a subset of {', '.join(self.tasks)}"
            )
        self.init = config.init
        self.classification_form = config.classification_form
        T = self.num_tasks
        self.sigma = nn.Parameter(torch.full((T,), float(config.sigma0)))
        scale = [1.0 if t in config.classification_form else 0.5 for t in self.tasks]
        self.register_buffer("scale", torch.tensor(scale), persistent=False)  # a_t
        self.register_buffer("initialised", torch.full((T,), config.init == "constant"))
        self.scale: Tensor
        self.initialised: Tensor

    def compute(self, losses: Tensor, *, gram: Tensor | None, jacobian: Tensor | None) -> Weights:
        dtype = torch.promote_types(self.sigma.dtype, losses.dtype)
        L = losses.detach().to(device=self.sigma.device, dtype=dtype)
        if not bool(self.initialised.all()):
            self._initialise(L)
        sigma = self.sigma.to(dtype)
        live = self.scale.to(dtype) * torch.exp(-sigma)  # w, attached to σ̃
        aux = (live * L + 0.5 * sigma).sum()
        w = live.detach().to(device=losses.device, dtype=losses.dtype)
        return Weights(shared=w, task=w, aux_loss=aux.to(device=losses.device, dtype=losses.dtype))

    @torch.no_grad()
    def _initialise(self, losses: Tensor) -> None:
        """``init = "loss"``: σ̃_t = log(2 a_t L_t) for the tasks whose first positive loss
        this is; tasks whose loss is zero (no labels in the batch) wait for a later step."""
        ready = ~self.initialised & torch.isfinite(losses) & (losses > 0)
        target = torch.log(
            2 * self.scale.to(losses) * losses.clamp_min(torch.finfo(losses.dtype).tiny)
        )
        self.sigma.copy_(torch.where(ready, target.to(self.sigma), self.sigma))
        self.initialised |= ready

    def extra_repr(self) -> str:
        sigma = ", ".join(
            f"{t}={v:.4g}" for t, v in zip(self.tasks, self.sigma.tolist(), strict=True)
        )
        return f"init={self.init!r}, sigma=({sigma})"


@hookimpl
def pymtl_register_balancers() -> list[type[Balancer]]:
    return [UncertaintyWeighting]
