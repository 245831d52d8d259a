"""Hinton KD (``hinton_kd``): match the single-task teachers' softened class probabilities.

Reference: Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", NIPS
Deep Learning Workshop 2014 (SPEC-methods §3.4) [P]. Per task,

    KD_t = τ² · KL(softmax(z_T/τ) ‖ softmax(z_S/τ)),

the KL over classes per element, averaged over the valid elements of the labelled samples
(per pixel for segmentation and parts, per sample for classification) [P]. The objective is
``(1−a)·L_t + a·KD_t`` with the task loss ``L_t`` (cross-entropy), τ = 4 and a = 0.9 [pymtl].
The training step already adds ``w_t L_t``, so this loss returns the additive term

    D_t = a·KD_t − a·L_t,

which gives exactly ``(1−a)·L_t + a·KD_t`` when ``w_t = λ_t = 1`` [pymtl]. Binary tasks (edges,
saliency, multi-label) are two-class problems per element, ``p = sigmoid(z/τ)`` [pymtl].
Regression tasks have no class probabilities: with ``regression = "error"`` (default) they are
refused when the loss is built; with ``regression = "l2"``, ``KD_t`` is the mean squared error
between the teacher's and the student's predictions (unit vectors for normals) over the valid
elements, combined in the same way [P][pymtl].
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
    masked_mean,
    number,
    prediction,
    task_weights,
    valid_mask,
    weighted,
)
from pymtl.distillation._common import weights_validator as _weights
from pymtl.distillation.base import DistillationLoss, Signals, TeacherKind
from pymtl.errors import ConfigError
from pymtl.hookspecs import hookimpl
from pymtl.tasks import Task

__all__ = ["HintonKD", "HintonKDConfig", "soft_kl"]


@attrs.frozen(kw_only=True)
class HintonKDConfig:
    """Options of ``hinton_kd``.

    Attributes:
        tau: temperature τ of both softmaxes.
        alpha: a, the distillation term's share: ``(1−a)·L_t + a·KD_t``.
        regression: ``"error"`` (refuse regression tasks) or ``"l2"`` (mean squared error to
            the teacher's predictions for them).
        weights: λ_t per task name (1 for tasks not listed).
    """

    tau: float = attrs.field(default=4.0, validator=number("hinton_kd", low=0, open_low=True))
    alpha: float = attrs.field(default=0.9, validator=number("hinton_kd", low=0, high=1))
    regression: str = attrs.field(default="error", validator=attrs.validators.in_(("error", "l2")))
    weights: Mapping[str, float] = attrs.field(factory=dict, validator=_weights("hinton_kd"))


def soft_kl(student: Tensor, teacher: Tensor, tau: float) -> Tensor:
    """``τ² · KL(softmax(teacher/τ) ‖ softmax(student/τ))`` over dim 1 of the logits [P]:
    [B, K, ...] → [B, ...]."""
    log_s = F.log_softmax(student / tau, dim=1)
    log_t = F.log_softmax(teacher / tau, dim=1)
    return tau * tau * F.kl_div(log_s, log_t, reduction="none", log_target=True).sum(dim=1)


def _two_class(z: Tensor) -> Tensor:
    """Binary logits as two-class logits on a new dim 1: softmax((z, 0)) = (σ(z), 1 − σ(z))."""
    return torch.stack([z, torch.zeros_like(z)], dim=1)


class HintonKD(DistillationLoss):
    """Hinton KD: τ²-scaled KL to single-task teachers' softened probabilities [P].

    Reference: Hinton et al., 2014. Returns ``λ_t (a·KD_t − a·L_t)`` (see the module
    docstring). The teachers' outputs are detached.

    Args:
        tasks: the dataset's task declarations, in loss order.
        tau, alpha, regression, weights: see :class:`HintonKDConfig`.

    Example:
        >>> from pymtl.tasks import ClassificationTask
        >>> loss = HintonKD([ClassificationTask(name="digit", num_classes=3)], alpha=1.0)
        >>> z, batch = torch.randn(2, 3), {"digit": torch.tensor([0, 2])}
        >>> kd = loss(Signals({}, {"digit": z}), Signals({}, {"digit": z}), batch, 0.0)
        >>> torch.allclose(kd, -loss.task_specs[0].loss(z, batch["digit"]))
        True
    """

    name = "hinton_kd"
    Config = HintonKDConfig
    teacher = TeacherKind.SINGLE_TASK

    def __init__(
        self,
        tasks: Sequence[Task],
        *,
        tau: float = 4.0,
        alpha: float = 0.9,
        regression: str = "error",
        weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(tasks)
        cfg = HintonKDConfig(tau=tau, alpha=alpha, regression=regression, weights=weights or {})
        self.tau, self.alpha, self.regression = cfg.tau, cfg.alpha, cfg.regression
        self.lam = task_weights(self.name, cfg.weights, self.tasks)
        self.families = tuple(family(t, self.name) for t in self.task_specs)
        for spec, fam in zip(self.task_specs, self.families, strict=True):
            if fam == "regression" and self.regression == "error":
                raise ConfigError(
                    f"distillation loss 'hinton_kd': task {spec.name!r} is a {spec.kind!r} task "
                    "(regression) and Hinton KD needs class probabilities; expected only "
                    'categorical or binary tasks; set regression = "l2" (mean squared error to '
                    "the teacher's predictions) or use another distillation loss (bam, kd4mtl)"
                )

    def forward(
        self,
        student: Signals,
        teacher: Signals,
        batch: Mapping[str, Tensor],
        progress: float,
    ) -> Tensor:
        """[T] ``λ_t (a·KD_t − a·L_t)``; ``progress`` is not used."""
        terms = [self._term(i, student, teacher, batch) for i in range(len(self.tasks))]
        return weighted(terms, self.lam)

    def _term(
        self, i: int, student: Signals, teacher: Signals, batch: Mapping[str, Tensor]
    ) -> Tensor:
        spec, name, fam = self.task_specs[i], self.tasks[i], self.families[i]
        zs, zt = student.outputs[name], teacher.outputs[name].detach()
        check_same_shape(zs, zt, loss=self.name, where=f"output of task {name!r}")
        mask = valid_mask(spec, batch)
        if fam == "regression":
            error = prediction(spec, zs, self.name) - prediction(spec, zt, self.name)
            kd = masked_mean(error * error, mask)
        elif fam == "binary":
            kd = masked_mean(soft_kl(_two_class(zs), _two_class(zt), self.tau), mask)
        else:
            kd = masked_mean(soft_kl(zs, zt, self.tau), mask)
        task_loss = spec.loss(zs, batch[name], batch.get(f"{name}.mask"))
        return self.alpha * kd - self.alpha * task_loss

    def extra_repr(self) -> str:
        return f"tau={self.tau:g}, alpha={self.alpha:g}, regression={self.regression!r}"


@hookimpl
def pymtl_register_distillation_losses() -> list[type[DistillationLoss]]:
    return [HintonKD]
