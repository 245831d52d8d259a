"""Gradient Sign Dropout (``graddrop``): keep, per element of Z, the gradients of one sign.

Reference: Chen et al., "Just Pick a Sign: Optimizing Deep Multitask Models with Gradient Sign
Dropout", NeurIPS 2020; survey §5 (SPEC-methods §2.11) [S][C:LibMTL, SamsungLabs/MTL]. On the
shared activation Z (the encoder output), with ``∇_t = ∂L_t/∂Z`` [B, |z|]:

* ``S_t = Σ_b sign(Z_b) ⊙ ∇_{t,b}`` (the batch-marginalised signed gradient);
* sign purity ``P = ½ (1 + Σ_t S_t / (Σ_t |S_t| + 1e-7))``;
* ``U ~ Uniform(0, 1)`` per element; ``M_t = 1[P > U]·1[S_t > 0] + 1[P < U]·1[S_t < 0]``;
* Z's gradient is ``Σ_t (ℓ + (1 − ℓ) M_t) ⊙ ∇_t`` (leak ℓ = 0, LibMTL's parametrisation), and
  one backward of it runs through the encoder; task-specific parameters get their own
  gradients (s = 1).

It decides per element, so it is not Gram-computable: it needs J_Z itself. The fused kernels
are :func:`pymtl.ops.graddrop_signed_sum` and :func:`pymtl.ops.graddrop_combine`. Under
``torch.distributed`` S is summed over every process's samples between the two, and U comes
from the balancer's own generator, seeded identically everywhere (SPEC-methods §0.1) [pymtl].
``shared`` reports w = 1 (the update is ``direct``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import attrs
import torch
import torch.distributed as dist
from torch import Tensor

from pymtl.balancers.base import Balancer, Needs, Weights
from pymtl.balancers.pcgrad import check_seed
from pymtl.hookspecs import hookimpl
from pymtl.ops.graddrop import graddrop_combine, graddrop_signed_sum

__all__ = ["GradDrop", "GradDropConfig"]


def _leak(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"balancer 'graddrop': 'leak' must be a number in [0, 1] (got {value!r})")


@attrs.frozen(kw_only=True)
class GradDropConfig:
    """Options of ``graddrop``.

    Attributes:
        leak: ℓ, the fraction of every gradient that always passes (0: pure sign dropout).
        seed: seed of the generator of U (the same on every process).
    """

    leak: float = attrs.field(default=0.0, validator=_leak)
    seed: int = attrs.field(default=0, validator=check_seed("graddrop"))


class GradDrop(Balancer):
    """GradDrop: per-element sign dropout of the task gradients at the shared activation.

    Reference: Chen et al., NeurIPS 2020 [S][C:LibMTL]. Needs J_Z and Z
    (``Needs.REPRESENTATION_JACOBIAN`` with ``wants_representation``); returns the new
    gradient of Z as ``direct``.

    Args:
        tasks: task names, in loss order.
        leak: ℓ in [0, 1].
        seed: seed of the generator of U.
    """

    name = "graddrop"
    Config = GradDropConfig
    needs = Needs.REPRESENTATION_JACOBIAN
    wants_representation = True

    def __init__(self, tasks: Sequence[str], *, leak: float = 0.0, seed: int = 0) -> None:
        super().__init__(tasks)
        GradDropConfig(leak=leak, seed=seed)  # same validation
        self.leak, self.seed = float(leak), seed
        self.generator = torch.Generator().manual_seed(seed)
        self.register_buffer("rng_state", self.generator.get_state())
        self.rng_state: Tensor

    def compute(
        self,
        losses: Tensor,
        *,
        gram: Tensor | None,
        jacobian: Tensor | None,
        representation: Tensor | None = None,
    ) -> Weights:
        assert jacobian is not None
        assert representation is not None
        z = representation.detach()
        B = z.shape[0]
        N = z[0].numel()
        if jacobian.shape[1] != B * N:
            raise ValueError(
                f"balancer 'graddrop': J_Z has {jacobian.shape[1]} columns but Z "
                f"{tuple(z.shape)} has {B * N} elements"
            )
        J = jacobian.reshape(self.num_tasks, B, N)
        zf = z.reshape(B, N).to(J.dtype)
        S = graddrop_signed_sum(J, zf)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(S)  # the batch is every process's samples
        self.generator.set_state(self.rng_state.cpu())  # the buffer is the truth (resume)
        u = torch.rand(N, generator=self.generator, dtype=torch.float64)
        self.rng_state.copy_(self.generator.get_state())
        d = graddrop_combine(J, S, u.to(device=J.device, dtype=J.dtype), self.leak)
        ones = torch.ones_like(losses)
        return Weights(shared=ones, task=ones, direct=d.reshape(-1))

    def extra_repr(self) -> str:
        leak = "" if math.isclose(self.leak, 0.0) else f", leak={self.leak:g}"
        return f"tasks={self.tasks}{leak}, seed={self.seed}"


@hookimpl
def pymtl_register_balancers() -> list[type[Balancer]]:
    return [GradDrop]
