"""Random Loss Weighting (``rlw``): fresh random task weights at every step.

Reference: Lin et al., "Reasonable Effectiveness of Random Weighting: A Litmus Test for
Multi-Task Learning", TMLR 2022 (SPEC-methods §2.6) [S][C:LibMTL, nash-mtl]. Each step draws
``ε ~ N(0, I_T)`` and sets ``w = s = softmax(ε)``, so the weights sum to 1 (as LibMTL and
nash-mtl; pymtl's "sum" convention would give EW a sum of T) [C].

Other distributions from the RLW paper are options [P]: ``uniform`` (``u ~ U(0, 1)^T``,
normalised by its sum), ``dirichlet`` (Dirichlet(1, …, 1), drawn as normalised Exp(1)
variables) and ``bernoulli`` (each task on with probability ½, normalised by the number on; a
draw with every task off is redrawn [R]).

The draws come from the balancer's own ``torch.Generator`` seeded with ``seed``; its state is
the ``rng_state`` buffer, so checkpoints resume the same sequence and every process of a
distributed run (same seed) draws the same weights (SPEC-methods §0.1) [pymtl].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import torch
from torch import Tensor

from pymtl.balancers.base import Balancer, Needs, Weights, constant_weights
from pymtl.hookspecs import hookimpl

_DISTRIBUTIONS = ("normal", "uniform", "dirichlet", "bernoulli")


def _seed(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise ValueError(f"balancer 'rlw': 'seed' must be an integer in [0, 2**63) (got {value!r})")


@attrs.frozen(kw_only=True)
class RandomLossWeightingConfig:
    """Options of ``rlw``.

    Attributes:
        distribution: ``normal`` (softmax of N(0, I)), ``uniform``, ``dirichlet`` or
            ``bernoulli``; every one gives weights that sum to 1.
        seed: seed of the balancer's generator (the same on every process).
    """

    distribution: str = attrs.field(
        default="normal", validator=attrs.validators.in_(_DISTRIBUTIONS)
    )
    seed: int = attrs.field(default=0, validator=_seed)


class RandomLossWeighting(Balancer):
    """Random loss weighting: w = s = softmax(ε), ε ~ N(0, I), drawn anew each step [S].

    Reference: Lin et al., TMLR 2022 [C:LibMTL, nash-mtl]. The weights sum to 1.

    Args:
        tasks: task names, in loss order.
        distribution: ``normal``, ``uniform``, ``dirichlet`` or ``bernoulli``.
        seed: seed of the balancer's generator.

    Example:
        >>> import torch
        >>> b = RandomLossWeighting(["seg", "depth", "normals"], seed=1)
        >>> round(b(torch.ones(3)).shared.sum().item(), 6)
        1.0
    """

    name = "rlw"
    Config = RandomLossWeightingConfig
    needs = Needs.LOSSES

    def __init__(
        self, tasks: Sequence[str], *, distribution: str = "normal", seed: int = 0
    ) -> None:
        super().__init__(tasks)
        RandomLossWeightingConfig(distribution=distribution, seed=seed)  # same validation
        self.distribution = distribution
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.register_buffer("rng_state", self.generator.get_state())
        self.rng_state: Tensor

    def compute(self, losses: Tensor, *, gram: Tensor | None, jacobian: Tensor | None) -> Weights:
        self.generator.set_state(self.rng_state.cpu())  # the buffer is the truth (resume)
        w = self.draw()
        self.rng_state.copy_(self.generator.get_state())
        return constant_weights(w, losses)

    def draw(self) -> Tensor:
        """One draw of the weights ([T] float64, sum 1) from the generator's current state."""
        T, gen, f64 = self.num_tasks, self.generator, torch.float64
        if self.distribution == "normal":
            return torch.softmax(torch.randn(T, generator=gen, dtype=f64), dim=0)
        if self.distribution == "uniform":
            u = torch.rand(T, generator=gen, dtype=f64)
            return u / u.sum()
        if self.distribution == "dirichlet":
            e = torch.empty(T, dtype=f64).exponential_(generator=gen)
            return e / e.sum()
        on = torch.zeros(T, dtype=torch.bool)
        while not bool(on.any()):
            on = torch.rand(T, generator=gen, dtype=f64) < 0.5
        return on.to(f64) / on.sum()

    def extra_repr(self) -> str:
        return f"tasks={self.tasks}, distribution={self.distribution!r}, seed={self.seed}"


@hookimpl
def pymtl_register_balancers() -> list[type[Balancer]]:
    return [RandomLossWeighting]
