"""The distillation-loss contract [pymtl] (SPEC-methods §3, "Common contract").

A distillation loss compares what a student network produced with what a frozen teacher (one
multi-task network, or one single-task network per task) produced on the same batch, and
returns **one term per task**, ``λ_t D_t`` in task order, that the training step adds to the
balanced task losses: ``Σ_t w_t L_t + Σ_t λ_t D_t`` (``λ_t`` are the loss's own ``weights``
option). Terms are logged per task (``distill/<task>``) next to the task losses.

Inputs are :class:`Signals`: the features of a network at the layers the loss asks for
(``layers``: ``"last"`` is the shared representation Z, ``"mid"`` the backbone's coarsest
multi-scale map, e.g. SegNet's bottleneck) and its per-task outputs, so feature-level methods
(KD4MTL, KDAM) and output-level methods (Hinton KD, BAM) share one signature. ``progress`` is
``step / total_steps`` in [0, 1] (BAM's teacher annealing). Learnable parts (KD4MTL's
adaptors) are submodules: they are checkpointed with the run, and :meth:`optimizer_groups`
says how they are optimised. Teachers are computed under ``no_grad`` in eval mode and never
reach an optimiser; a loss must not rely on gradients flowing into ``teacher``.
"""

from __future__ import annotations

import enum
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import attrs
from torch import Tensor, nn

from pymtl.balancers.base import check_tasks
from pymtl.component import Component
from pymtl.tasks.base import Task

__all__ = ["LAYERS", "DistillationLoss", "Signals", "TeacherKind"]

LAYERS = ("last", "mid")
"""Feature layers a distillation loss may read: the shared representation, the coarsest scale."""


class TeacherKind(enum.Enum):
    """Which teacher(s) a distillation loss expects."""

    SINGLE_TASK = "single_task"
    """One frozen single-task network per task (KD4MTL, BAM, Hinton KD: the baselines store)."""
    MULTI_TASK = "multi_task"
    """One frozen multi-task network (KDAM: a named earlier run)."""


@attrs.frozen(eq=False)
class Signals:
    """What a network produced for one batch.

    Attributes:
        features: per task, the feature maps [B, C, H, W] at the loss's ``layers`` (in that
            order); for a multi-task network every task maps to the same tensors, for
            single-task teachers each task to its own teacher's.
        outputs: predictions per task (the network's ``forward`` result, eval-mode keys).
    """

    features: Mapping[str, Sequence[Tensor]]
    outputs: Mapping[str, Tensor]


class DistillationLoss(Component, nn.Module):
    """Base class of distillation losses.

    Subclasses set ``name``, ``Config`` and ``teacher``, take ``tasks`` (the dataset's
    :class:`~pymtl.tasks.Task` declarations) first in ``__init__`` followed by their ``Config``
    fields as keyword arguments, set ``layers`` (a tuple of :data:`LAYERS`; empty when only
    outputs are read), and implement :meth:`forward`.
    """

    kind: ClassVar[str] = "distillation_loss"
    teacher: ClassVar[TeacherKind] = TeacherKind.MULTI_TASK
    reads_outputs: ClassVar[bool] = True
    """Whether :meth:`forward` reads ``outputs`` (a teacher cache then stores them too)."""

    def __init__(self, tasks: Sequence[Task]) -> None:
        super().__init__()
        self.task_specs = tuple(tasks)
        self.tasks = check_tasks([t.name for t in tasks], where=f"distillation loss {self.name!r}")
        self.layers: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: Any, *, tasks: Sequence[Task]) -> DistillationLoss:
        """Build from a ``Config`` instance for the dataset's tasks."""
        return cls(tasks, **cls.config_fields(config))

    def prepare(self, student: Signals, teacher: Signals) -> None:
        """Called once by the engine, before the optimiser is built, with the signals of one
        batch (student and teacher, already checked to have the same shapes): create
        parameters whose shapes depend on the features. Default: nothing to create."""

    def optimizer_groups(self) -> list[dict[str, Any]]:
        """Optimiser parameter groups of the loss's own parameters (``params`` plus any of
        ``lr`` / ``weight_decay``); default: none (a loss without parameters)."""
        return []

    @abstractmethod
    def forward(
        self,
        student: Signals,
        teacher: Signals,
        batch: Mapping[str, Tensor],
        progress: float,
    ) -> Tensor:
        """[T] per-task terms ``λ_t D_t`` of ``student`` against the (detached) ``teacher``,
        in task order; ``batch`` holds the targets and masks (``TASK``, ``TASK.mask``)."""
