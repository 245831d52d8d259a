"""BAM (``bam``): Born-Again Multi-task networks with teacher annealing.

Reference: Clark et al., "BAM! Born-Again Multi-Task Networks for Natural Language
Understanding", ACL 2019 (SPEC-methods §3.3) [S][C:google-research bam code]. Each task's
target is a mix of the true label and task t's frozen single-task teacher,

* categorical tasks: ``ỹ = λ·onehot(y) + (1−λ)·softmax(z_teacher)`` (τ = 1), loss the soft
  cross-entropy ``−Σ ỹ log softmax(z_student)`` [S][C];
* regression tasks: ``ỹ = λ·y + (1−λ)·ŷ_teacher`` with the task's own loss (L1 depth, cosine
  normals, ...) [pymtl], or BAM's squared error with ``regression_loss = "l2"`` [C];
* binary tasks (edges, saliency, multi-label): ``ỹ = λ·y + (1−λ)·sigmoid(z_teacher)`` with the
  task's own binary cross-entropy [pymtl];

where teacher normals are unit vectors, and so is the student's prediction under ``"l2"``
[pymtl]. Teacher annealing: ``λ = progress = step / total_steps``, 0 → 1 linearly per step [S][C];
without it (``anneal = False``) ``λ = 1 − teacher_weight`` [S].

The "difference" formulation [pymtl]: the training step adds ``Σ_t λ_t D_t`` to the balanced
true-label losses ``Σ_t w_t L_t``, so this loss returns ``D_t = L_t(student, ỹ) − L_t(student,
y)``. With ``w_t = λ_t = 1`` the objective is BAM's ``Σ_t L_t(student, ỹ)`` exactly, while
balancers and logs still see the true-label losses ``L_t``. ``L_t(·, ỹ)`` carries the task's
``loss_scale`` like ``L_t``. Dense tasks are mixed per element over the valid elements of the
labelled samples; ``ignored = "teacher"`` also trains the ignored elements of the labelled
samples on the pure teacher target (the objective then averages over all of their elements)
[pymtl]. Samples not labelled for a task (``"<task>.mask"`` False) never count: each example
has targets for its own tasks only, as in BAM.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor

from pymtl.distillation._common import (
    check_same_shape,
    family,
    labelled_mask,
    masked_mean,
    number,
    prediction,
    task_weights,
    weighted,
)
from pymtl.distillation._common import weights_validator as _weights
from pymtl.distillation.base import DistillationLoss, Signals, TeacherKind
from pymtl.hookspecs import hookimpl
from pymtl.tasks import Task

__all__ = ["BAM", "BAMConfig"]


@attrs.frozen(kw_only=True)
class BAMConfig:
    """Options of ``bam``.

    Attributes:
        anneal: λ (the true label's weight) = progress, 0 → 1 over training.
        teacher_weight: the teacher's weight ``1 − λ`` when ``anneal`` is False.
        ignored: ``"mask"`` (ignored elements do not count) or ``"teacher"`` (they are
            trained on the pure teacher target).
        regression_loss: ``"task"`` (the task's own loss against ỹ) or ``"l2"`` (squared
            error, BAM's) for regression tasks.
        weights: λ_t per task name (1 for tasks not listed).
    """

    anneal: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    teacher_weight: float = attrs.field(default=0.5, validator=number("bam", low=0, high=1))
    ignored: str = attrs.field(default="mask", validator=attrs.validators.in_(("mask", "teacher")))
    regression_loss: str = attrs.field(
        default="task", validator=attrs.validators.in_(("task", "l2"))
    )
    weights: Mapping[str, float] = attrs.field(factory=dict, validator=_weights("bam"))


class BAM(DistillationLoss):
    """BAM: task losses against annealed mixes of labels and single-task teachers [S][C].

    Reference: Clark et al., ACL 2019. Returns ``λ_t D_t`` with ``D_t = L_t(student, ỹ) −
    L_t(student, y)`` (see the module docstring): adding it to the true-label loss gives BAM's
    objective. At λ = 1 (end of annealing) ``D_t`` is exactly 0 with ``ignored = "mask"`` and
    the task's own loss. The teachers' outputs are detached.

    Args:
        tasks: the dataset's task declarations, in loss order.
        anneal, teacher_weight, ignored, regression_loss, weights: see :class:`BAMConfig`.

    Example:
        >>> from pymtl.tasks import ClassificationTask
        >>> loss = BAM([ClassificationTask(name="digit", num_classes=3)])
        >>> z, batch = torch.randn(2, 3), {"digit": torch.tensor([0, 2])}
        >>> loss(Signals({}, {"digit": z}), Signals({}, {"digit": z}), batch, 1.0)
        tensor([0.])
    """

    name = "bam"
    Config = BAMConfig
    teacher = TeacherKind.SINGLE_TASK

    def __init__(
        self,
        tasks: Sequence[Task],
        *,
        anneal: bool = True,
        teacher_weight: float = 0.5,
        ignored: str = "mask",
        regression_loss: str = "task",
        weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(tasks)
        cfg = BAMConfig(
            anneal=anneal,
            teacher_weight=teacher_weight,
            ignored=ignored,
            regression_loss=regression_loss,
            weights=weights or {},
        )
        self.anneal, self.teacher_weight = cfg.anneal, cfg.teacher_weight
        self.ignored, self.regression_loss = cfg.ignored, cfg.regression_loss
        self.lam = task_weights(self.name, cfg.weights, self.tasks)
        self.families = tuple(family(t, self.name) for t in self.task_specs)

    def label_weight(self, progress: float) -> float:
        """λ, the true label's weight in ỹ, at ``progress`` ∈ [0, 1]."""
        if not self.anneal:
            return 1.0 - self.teacher_weight
        if not 0.0 <= progress <= 1.0:
            raise ValueError(
                f"distillation loss 'bam': progress must be in [0, 1] (got {progress!r})"
            )
        return float(progress)

    def forward(
        self,
        student: Signals,
        teacher: Signals,
        batch: Mapping[str, Tensor],
        progress: float,
    ) -> Tensor:
        """[T] ``λ_t (L_t(student, ỹ) − L_t(student, y))``."""
        lam = self.label_weight(progress)
        terms = [self._term(i, student, teacher, batch, lam) for i in range(len(self.tasks))]
        return weighted(terms, self.lam)

    def _term(
        self, i: int, student: Signals, teacher: Signals, batch: Mapping[str, Tensor], lam: float
    ) -> Tensor:
        spec, name = self.task_specs[i], self.tasks[i]
        zs, zt = student.outputs[name], teacher.outputs[name].detach()
        check_same_shape(zs, zt, loss=self.name, where=f"output of task {name!r}")
        y, labelled = batch[name], batch.get(f"{name}.mask")
        valid = spec.valid_mask(y)
        counted = labelled_mask(spec, batch, valid)
        l2 = self.families[i] == "regression" and self.regression_loss == "l2"
        mixed, true = self._objective(i, zs, zt, y, valid, lam)
        if self.ignored == "mask" and not l2:  # exact 0 at λ = 1
            return spec.loss_scale * masked_mean(mixed - true, valid & counted)
        region = counted if self.ignored == "teacher" else valid & counted
        return spec.loss_scale * masked_mean(mixed, region) - spec.loss(zs, y, labelled)

    def _objective(
        self, i: int, zs: Tensor, zt: Tensor, y: Tensor, valid: Tensor, lam: float
    ) -> tuple[Tensor, Tensor]:
        """Per element: the loss against ỹ (the pure teacher target at ignored elements, or
        the label there when it must stay an ignore marker), and the task's loss against y."""
        spec = self.task_specs[i]
        true = spec.elementwise_loss(zs, y)
        target = prediction(spec, zt, self.name)
        if self.families[i] == "categorical":
            cross = -(target * F.log_softmax(zs, dim=1)).sum(dim=1)  # against the teacher
            return torch.where(valid, lam * true + (1.0 - lam) * cross, cross), true
        mix = lam * y + (1.0 - lam) * target
        if self.families[i] == "regression" and self.regression_loss == "l2":
            error = prediction(spec, zs, self.name) - torch.where(valid, mix, target)
            return error * error, true
        fill = target if self.ignored == "teacher" else y  # y keeps the task's ignore marker
        return spec.elementwise_loss(zs, torch.where(valid, mix, fill)), true

    def extra_repr(self) -> str:
        mix = "anneal" if self.anneal else f"teacher_weight={self.teacher_weight:g}"
        return f"{mix}, ignored={self.ignored!r}, regression_loss={self.regression_loss!r}"


@hookimpl
def pymtl_register_distillation_losses() -> list[type[DistillationLoss]]:
    return [BAM]
