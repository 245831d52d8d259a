"""The balancer contract (SPEC-methods §0.1) [pymtl].

A balancer maps the per-task losses ``L ∈ R^T`` — and, when it declares so in ``needs``, the
Gram matrix ``G = J Jᵀ`` or the Jacobian ``J`` of the per-task gradients — to :class:`Weights`:

* ``shared`` (``w ∈ R^T``): the shared parameters are updated along ``d = Jᵀ w = Σ_t w_t g_t``;
* ``task`` (``s ∈ R^T``): task t's own parameters receive ``s_t ∇_{θ_t} L_t``;
* ``aux_loss``: an optional loss on the balancer's own parameters (uncertainty weighting, ...).

Scale convention "sum": equal weighting is ``w = s = 1``.

Balancers are narrow and pure: they never own the model, never call ``backward`` and never
write ``.grad``; the training step computes exactly what ``needs`` asks for, once, and applies
the weights. Learnable or historical state is a parameter or buffer of the module, so it is in
``state_dict()`` and in checkpoints.
"""

from __future__ import annotations

import enum
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import attrs
from torch import Tensor, nn

from pymtl.component import Component

__all__ = ["GROUPS", "Balancer", "Needs", "Weights", "check_tasks", "constant_weights"]


class Needs(enum.Enum):
    """What a balancer needs from the training step, besides the losses."""

    LOSSES = "losses"
    """The per-task losses only: the step does one backward of ``Σ_t w_t L_t``."""
    GRAM = "gram"
    """``G = J Jᵀ`` [T, T] of the per-task gradients of the shared parameters."""
    JACOBIAN = "jacobian"
    """``J`` [T, P] itself (element-wise methods)."""
    REPRESENTATION_GRAM = "representation_gram"
    """``G_Z`` [T, T] of the per-task gradients of the shared representation Z."""
    REPRESENTATION_JACOBIAN = "representation_jacobian"
    """``J_Z`` [T, |Z|] of the per-task gradients of the shared representation Z."""
    LAYER_GRAM = "layer_gram"
    """``G^W`` [T, T] of the per-task gradients of one shared parameter tensor W (named by
    :meth:`Balancer.layer`); the update is one backward of ``Σ_t w_t L_t`` (GradNorm)."""


GROUPS = ("whole_model", "per_layer", "per_tensor")
"""Parameter groupings of the Gram matrix: one group, one per module, one per tensor."""


@attrs.frozen(eq=False)
class Weights:
    """A balancer's answer for one step.

    Attributes:
        shared: ``w`` [T], weights of the per-task gradients of the shared parameters; [K, T]
            for a balancer with K parameter groups (row k weighs group k's columns).
        task: ``s`` [T], weights of each task's gradient of its own parameters.
        aux_loss: scalar loss on the balancer's own parameters, or ``None``.
        direct: the update of the shared parameters itself (``[P]``, or ``[|Z|]`` in
            representation mode), for the methods whose update is not of the form ``Jᵀ w``
            (GradDrop, DB-MTL); ``shared`` is then only reported.
    """

    shared: Tensor
    task: Tensor
    aux_loss: Tensor | None = None
    direct: Tensor | None = None


def check_tasks(tasks: Sequence[str], *, where: str) -> tuple[str, ...]:
    """Validate a task list (non-empty, unique names) and return it as a tuple."""
    tasks = tuple(tasks)
    if not tasks:
        raise ValueError(f"{where}: needs at least one task (got none)")
    dupes = sorted({t for t in tasks if tasks.count(t) > 1})
    if dupes:
        raise ValueError(f"{where}: task names must be unique (got {', '.join(dupes)} twice)")
    return tasks


class Balancer(Component, nn.Module):
    """Base class of loss-balancing and gradient-aggregation methods.

    Subclasses set ``name``, ``Config`` and ``needs``, take ``tasks`` first in ``__init__``
    followed by their ``Config`` fields as keyword arguments, and implement :meth:`compute`.
    Call the module (``balancer(losses, gram=G)``): inputs are validated, then
    :meth:`compute` runs.
    """

    kind: ClassVar[str] = "balancer"
    needs: ClassVar[Needs] = Needs.LOSSES
    groups: str = "whole_model"
    """With a Gram need: ``whole_model`` (one [T, T] Gram), or ``per_layer`` / ``per_tensor``
    (a [K, T, T] stack, one Gram per group of shared parameters; GradVac)."""
    wants_representation: ClassVar[bool] = False
    """True: :meth:`compute` also receives ``representation``, the detached shared activation
    Z (GradDrop's sign decisions), in representation mode."""

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__()
        self.tasks = check_tasks(tasks, where=f"balancer {self.name!r}")

    @classmethod
    def from_config(cls, config: Any, *, tasks: Sequence[str]) -> Balancer:
        """Build from a ``Config`` instance for the given task names."""
        return cls(tasks, **cls.config_fields(config))

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    def forward(
        self,
        losses: Tensor,
        *,
        gram: Tensor | None = None,
        jacobian: Tensor | None = None,
        representation: Tensor | None = None,
    ) -> Weights:
        """Validate the inputs against ``needs`` and return :meth:`compute`'s weights.

        Args:
            losses: [T] per-task losses, in the order of ``self.tasks``.
            gram: [T, T] Gram matrix, when ``needs`` is a Gram ([K, T, T] with K groups).
            jacobian: [T, P] Jacobian, when ``needs`` is a Jacobian.
            representation: the shared activation Z, for balancers with
                ``wants_representation``.
        """
        self._check(losses, gram, jacobian)
        if self.wants_representation:
            if representation is None:
                raise ValueError(f"balancer {self.name!r}: needs representation (the activation Z)")
            return self.compute(  # type: ignore[call-arg]
                losses, gram=gram, jacobian=jacobian, representation=representation
            )
        return self.compute(losses, gram=gram, jacobian=jacobian)

    def layer(self, shared: Sequence[tuple[str, Tensor]]) -> str:
        """For ``Needs.LAYER_GRAM``: the name of W among the shared parameters ``shared``
        (``(name, parameter)`` in registration order). Default: the last one with more than
        one dimension (the last shared layer's weight)."""
        weights = [n for n, p in shared if p.dim() > 1]
        if not weights:
            names = [n for n, _ in shared]
            raise ValueError(
                f"balancer {self.name!r}: no shared weight tensor (ndim > 1) among {names}"
            )
        return weights[-1]

    wants_losses_after_step: ClassVar[bool] = False
    """True: after each optimiser step the loop recomputes the batch's losses (one extra
    forward pass, no gradients) and calls :meth:`after_step` with them (FAMO)."""

    def after_step(self, losses_before: Tensor, losses_after: Tensor) -> None:
        """The batch's [T] losses before and after the optimiser step (process-averaged), for
        balancers with ``wants_losses_after_step``. Default: nothing."""

    def on_epoch_end(self, epoch: int) -> None:
        """Called by the training loop after epoch ``epoch`` (1-based) ends, on every process.

        For balancers whose weights follow epoch statistics (DWA, DTP): keep the running
        sums in buffers during :meth:`compute` and roll them over here. Default: nothing.
        """

    @abstractmethod
    def compute(self, losses: Tensor, *, gram: Tensor | None, jacobian: Tensor | None) -> Weights:
        """Map validated inputs to :class:`Weights`."""

    def _check(self, losses: Tensor, gram: Tensor | None, jacobian: Tensor | None) -> None:
        T = self.num_tasks
        where = f"balancer {self.name!r}"
        if not (isinstance(losses, Tensor) and losses.shape == (T,)):
            got = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
            raise ValueError(
                f"{where}: losses must have shape ({T},) for tasks {self.tasks}, got {got}"
            )
        if not losses.is_floating_point():
            raise ValueError(f"{where}: losses must be floating point, got {losses.dtype}")
        wants_gram = self.needs in (Needs.GRAM, Needs.REPRESENTATION_GRAM, Needs.LAYER_GRAM)
        wants_jac = self.needs in (Needs.JACOBIAN, Needs.REPRESENTATION_JACOBIAN)
        grouped = self.groups != "whole_model"
        if wants_gram and (
            gram is None
            or (not grouped and gram.shape != (T, T))
            or (grouped and (gram.dim() != 3 or gram.shape[1:] != (T, T)))
        ):
            shape = "None" if gram is None else str(tuple(gram.shape))
            expected = (
                f"(K, {T}, {T}) (one per group, groups={self.groups!r})"
                if grouped
                else (f"({T}, {T})")
            )
            raise ValueError(f"{where}: needs gram of shape {expected}, got {shape}")
        if wants_jac and (jacobian is None or jacobian.dim() != 2 or jacobian.shape[0] != T):
            shape = "None" if jacobian is None else str(tuple(jacobian.shape))
            raise ValueError(f"{where}: needs jacobian of shape ({T}, P), got {shape}")

    def extra_repr(self) -> str:
        return f"tasks={self.tasks}"


def constant_weights(values: Tensor, like: Tensor) -> Weights:
    """``w = s = values`` on ``like``'s device and dtype (losses-only weighting)."""
    w = values.to(device=like.device, dtype=like.dtype)
    return Weights(shared=w, task=w)
