"""The distillation-loss contract [pymtl].

A distillation loss compares what a student network produced with what a frozen teacher (or
one teacher per task) produced on the same batch, and returns a scalar that the training step
adds to the balanced task losses. Inputs are :class:`Signals`: the shared representation and
the per-task outputs of a network, so feature-level methods (KD4MTL, KDAM) and output-level
methods (Hinton KD, BAM) share one signature. Learnable parts (KD4MTL's adaptors) are
submodules, so they are trained with the student and stored in its checkpoints.
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

__all__ = ["DistillationLoss", "Signals", "TeacherKind"]


class TeacherKind(enum.Enum):
    """Which teacher(s) a distillation loss expects."""

    SINGLE_TASK = "single_task"
    """One frozen single-task network per task (KD4MTL)."""
    MULTI_TASK = "multi_task"
    """One frozen multi-task network (KDAM, BAM, Hinton KD on an MTL teacher)."""


@attrs.frozen(eq=False)
class Signals:
    """What a network produced for one batch.

    Attributes:
        features: shared representation per task ([B, C, H, W] each); for a multi-task network
            every task maps to the same tensor, for single-task teachers to each teacher's own.
        outputs: predictions per task (the network's ``forward`` result).
    """

    features: Mapping[str, Tensor]
    outputs: Mapping[str, Tensor]


class DistillationLoss(Component, nn.Module):
    """Base class of distillation losses.

    Subclasses set ``name``, ``Config`` and ``teacher``, take ``tasks`` first in ``__init__``
    followed by their ``Config`` fields as keyword arguments, and implement :meth:`forward`.
    """

    kind: ClassVar[str] = "distillation_loss"
    teacher: ClassVar[TeacherKind] = TeacherKind.MULTI_TASK

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__()
        self.tasks = check_tasks(tasks, where=f"distillation loss {self.name!r}")

    @classmethod
    def from_config(cls, config: Any, *, tasks: Sequence[str]) -> DistillationLoss:
        """Build from a ``Config`` instance for the given task names."""
        return cls(tasks, **cls.config_fields(config))

    @abstractmethod
    def forward(self, student: Signals, teacher: Signals) -> Tensor:
        """Scalar distillation loss of ``student`` against the (detached) ``teacher``."""
