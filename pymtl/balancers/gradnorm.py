"""GradNorm (``gradnorm``): learn task weights that equalise the gradient norms' training rates.

Reference: Chen et al., "GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep
Multitask Networks", ICML 2018; survey §5 (SPEC-methods §2.3) [S][C:KD4MTL baselines, LibMTL].
With W the last shared layer's weight and ``‖∇_W L_t‖ = √G^W_tt`` (only the diagonal of W's
Gram matrix is needed):

* ``G_t = w_t ‖∇_W L_t‖``, ``Ḡ = mean_t G_t``;
* ``L̃_t = L_t / L_t(0)``, ``r_t = L̃_t / mean_u L̃_u``;
* ``L_grad = Σ_t |G_t − sg(Ḡ r_t^α)|`` (the target is a constant), so
  ``∂L_grad/∂w_t = sign(G_t − target_t) ‖∇_W L_t‖``.

The network steps on ``Σ_t sg(w_t) L_t`` (w = s); the weights step on ``L_grad`` with the run's
optimiser (``train.balancer_lr``; 0 shares the network's learning rate, as KD4MTL does) and are
then renormalised to sum to T and kept positive. Here the renormalisation runs at the start of
the next step, before the weights are used, which gives the same weights [pymtl].

``initial_loss``: ``first_step`` (L(0) is the first step's loss: the paper, KD4MTL) or
``first_epoch_mean`` (LibMTL: equal weights during the first epoch, whose mean loss is L(0)).
``param``: ``renorm`` (w itself is learned) or ``softmax`` (LibMTL: ``w = T·softmax(v)``).
A task whose L(0) is not positive yet (no labels in that batch) keeps ``L̃ = 1`` until it has
one [pymtl].
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

__all__ = ["GradNorm", "GradNormConfig"]

MIN_WEIGHT = 1e-6
"""Renormalised weights are clamped to at least this (SPEC: "clamp w > 0")."""


def _alpha(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"balancer 'gradnorm': 'alpha' must be a finite number (got {value!r})")
    if value < 0:
        raise ValueError(f"balancer 'gradnorm': 'alpha' must be >= 0 (got {value!r})")


@attrs.frozen(kw_only=True)
class GradNormConfig:
    """Options of ``gradnorm``.

    Attributes:
        alpha: asymmetry α (1.5 in the paper for NYUv2; lower for similar tasks).
        layer: name of the shared parameter W (as in ``model.named_parameters()``); empty:
            the last shared parameter with more than one dimension.
        initial_loss: ``first_step`` or ``first_epoch_mean``.
        param: ``renorm`` or ``softmax``.
    """

    alpha: float = attrs.field(default=1.5, validator=_alpha)
    layer: str = attrs.field(default="", validator=attrs.validators.instance_of(str))
    initial_loss: str = attrs.field(
        default="first_step", validator=attrs.validators.in_(("first_step", "first_epoch_mean"))
    )
    param: str = attrs.field(
        default="renorm", validator=attrs.validators.in_(("renorm", "softmax"))
    )


class GradNorm(Balancer):
    """GradNorm: task weights learned so that ``w_t ‖∇_W L_t‖`` follow the tasks' training rates.

    Reference: Chen et al., ICML 2018 [S][C:KD4MTL, LibMTL]. Needs the Gram matrix of one
    shared tensor (``Needs.LAYER_GRAM``); returns w = s and ``aux_loss = L_grad``.

    Args:
        tasks: task names, in loss order.
        alpha: asymmetry α.
        layer: name of W ("" = the last shared weight).
        initial_loss: ``first_step`` or ``first_epoch_mean``.
        param: ``renorm`` or ``softmax``.

    Example:
        >>> import torch
        >>> b = GradNorm(["seg", "depth"])
        >>> out = b(torch.tensor([2.0, 1.0]), gram=torch.diag(torch.tensor([4.0, 1.0])))
        >>> out.shared, round(out.aux_loss.item(), 4)  # G = (2, 1), targets (1.5, 1.5)
        (tensor([1., 1.]), 1.0)
    """

    name = "gradnorm"
    Config = GradNormConfig
    needs = Needs.LAYER_GRAM

    def __init__(
        self,
        tasks: Sequence[str],
        *,
        alpha: float = 1.5,
        layer: str = "",
        initial_loss: str = "first_step",
        param: str = "renorm",
    ) -> None:
        super().__init__(tasks)
        GradNormConfig(alpha=alpha, layer=layer, initial_loss=initial_loss, param=param)
        self.alpha, self.layer_name = float(alpha), layer
        self.initial_loss, self.param = initial_loss, param
        T = self.num_tasks
        self.weights = nn.Parameter(torch.ones(T) if param == "renorm" else torch.zeros(T))
        self.register_buffer("initial", torch.full((T,), math.nan))  # L_t(0)
        self.register_buffer("epoch_sums", torch.zeros(2, T, dtype=torch.float64))
        self.initial: Tensor
        self.epoch_sums: Tensor

    def layer(self, shared: Sequence[tuple[str, Tensor]]) -> str:
        if not self.layer_name:
            return super().layer(shared)
        names = [n for n, _ in shared]
        if self.layer_name not in names:
            raise ValueError(
                f"balancer 'gradnorm': layer {self.layer_name!r} is not a shared parameter; "
                f"expected one of {', '.join(names)}"
            )
        return self.layer_name

    def current(self) -> Tensor:
        """The weights w [T] as the next step uses them (renormalised, attached)."""
        if self.param == "softmax":
            return self.num_tasks * torch.softmax(self.weights, dim=0)
        with torch.no_grad():
            w = self.weights.clamp_min(MIN_WEIGHT)
            self.weights.copy_(self.num_tasks * w / w.sum())
        return self.weights

    def compute(self, losses: Tensor, *, gram: Tensor | None, jacobian: Tensor | None) -> Weights:
        assert gram is not None  # checked by Balancer.forward
        L = losses.detach().to(self.initial)
        ones = torch.ones_like(losses)
        if self.initial_loss == "first_epoch_mean" and bool(self.initial.isnan().all()):
            labelled = L > 0
            self.epoch_sums[0] += torch.where(labelled, L, 0).double()
            self.epoch_sums[1] += labelled.double()
            return Weights(shared=ones, task=ones)  # equal weights in the first epoch
        if self.initial_loss == "first_step":
            fresh = self.initial.isnan() & (L > 0)
            self.initial.copy_(torch.where(fresh, L, self.initial))
        w_live = self.current()
        norms = gram.detach().diagonal().clamp_min(0).sqrt().to(w_live)
        known = self.initial > 0
        ratio = torch.where(known, L / torch.where(known, self.initial, 1.0), 1.0).to(w_live)
        rate = ratio / ratio.mean()
        G = w_live * norms
        target = (G.mean() * rate**self.alpha).detach()
        aux = (G - target).abs().sum()
        w = w_live.detach().to(losses)
        return Weights(shared=w, task=w, aux_loss=aux.to(losses))

    def on_epoch_end(self, epoch: int) -> None:
        if self.initial_loss != "first_epoch_mean" or not bool(self.initial.isnan().all()):
            return
        sums, counts = self.epoch_sums
        mean = torch.where(counts > 0, sums / counts.clamp_min(1), math.nan)
        self.initial.copy_(mean.to(self.initial))
        self.epoch_sums.zero_()

    def extra_repr(self) -> str:
        return f"tasks={self.tasks}, alpha={self.alpha:g}, param={self.param!r}"


@hookimpl
def pymtl_register_balancers() -> list[type[Balancer]]:
    return [GradNorm]
