"""KDAM (reconstructed) (``kdam``): Cauchy–Schwarz matching of a multi-task teacher's
probabilities, within each task and across tasks.

KDAM (reconstructed); not numerically faithful to Xu et al. 2023. Reference: Xu, Yang &
Zhang, "Multi-Task Learning with Knowledge Distillation for Dense Prediction", ICCV 2023
(SPEC-methods §3.2) [S][R]. The source states the idea only: one frozen multi-task teacher,
probabilities compared with the Cauchy–Schwarz divergence, "inter-task" and "intra-task"
gathering over the batch [S]. Everything below is pymtl's reconstruction [R]:

* ``D_CS(p, q) = −log(Σ p q / sqrt(Σ p² Σ q²))`` (:func:`cs_divergence`; exact, standard);
* probabilities ``P_t``: softmax of ``z_t/τ`` over the classes for segmentation, parts and
  image-level classification; over the spatial positions of each channel for the other dense
  tasks (depth, normals, edges, saliency, dense regression);
* intra-task: ``D^intra_t = mean_k D_CS(P^S_t[:, k].flatten(), P^T_t[:, k].flatten())``, the
  class-k probabilities of the whole batch;
* inter-task: per sample b, ``v_b = concat_t P_t[b].flatten() / sqrt(K_t·H·W)``, then
  ``D^inter = mean_b D_CS(v^S_b, v^T_b)``;
* ``D = λ_inter D^inter + Σ_t λ_t λ_intra D^intra_t``.

KDAM needs no labels: every pixel and sample counts. Image-level tasks without class
probabilities (multi-label, image-level regression) have no KDAM term: their intra term is 0
and they are left out of ``v_b`` [pymtl]. The returned vector carries the one inter-task
number split equally, ``λ_inter D^inter / T`` in each of the T entries, so its sum is ``D``
[pymtl].
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import attrs
import torch
from torch import Tensor

from pymtl.distillation._common import check_same_shape, family, number, task_weights
from pymtl.distillation._common import weights_validator as _weights
from pymtl.distillation.base import DistillationLoss, Signals, TeacherKind
from pymtl.errors import ConfigError
from pymtl.hookspecs import hookimpl
from pymtl.tasks import Task

__all__ = ["KDAM", "KDAMConfig", "cs_divergence"]


def cs_divergence(p: Tensor, q: Tensor, dim: int = -1, eps: float = 1e-12) -> Tensor:
    """Cauchy–Schwarz divergence ``−log(Σ p q / sqrt(Σ p² · Σ q²))`` along ``dim`` [S].

    For non-negative ``p`` and ``q``: ≥ 0, 0 iff ``p ∝ q``, symmetric and scale-invariant
    (it is −log of the cosine similarity). Each vector is first divided by its (detached)
    maximum, which changes nothing in exact arithmetic and keeps the sums of squares away from
    under- and overflow; the sums are clamped to ``eps`` (disjoint supports or a zero vector
    give a large finite value, not inf), and the result to ≥ 0 (rounding). Computed in at
    least float32.
    """
    dtype = torch.promote_types(torch.promote_types(p.dtype, q.dtype), torch.float32)
    p, q = _unit_max(p.to(dtype), dim), _unit_max(q.to(dtype), dim)
    pq = (p * q).sum(dim).clamp_min(eps)
    pp = (p * p).sum(dim).clamp_min(eps)
    qq = (q * q).sum(dim).clamp_min(eps)
    return (0.5 * (pp.log() + qq.log()) - pq.log()).clamp_min(0.0)


def _unit_max(x: Tensor, dim: int) -> Tensor:
    return x / x.detach().amax(dim, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)


@attrs.frozen(kw_only=True)
class KDAMConfig:
    """Options of ``kdam``.

    Attributes:
        tau: temperature τ of the probabilities.
        lambda_inter: weight of the inter-task term.
        lambda_intra: weight of every intra-task term.
        weights: λ_t per task name, on the intra-task terms (1 for tasks not listed).
    """

    tau: float = attrs.field(default=1.0, validator=number("kdam", low=0, open_low=True))
    lambda_inter: float = attrs.field(default=1.0, validator=number("kdam", low=0))
    lambda_intra: float = attrs.field(default=1.0, validator=number("kdam", low=0))
    weights: Mapping[str, float] = attrs.field(factory=dict, validator=_weights("kdam"))


class KDAM(DistillationLoss):
    """KDAM (reconstructed); not numerically faithful to Xu et al. 2023 [S][R].

    Cauchy–Schwarz divergence between a frozen multi-task teacher's probabilities and the
    student's, within each task (class by class over the batch) and across tasks (sample by
    sample over all tasks' maps); see the module docstring for the reconstruction. Reads
    outputs only (``layers = ()``); the teacher's outputs are detached.

    Reference: Xu, Yang & Zhang, ICCV 2023 (idea only; equations reconstructed).

    Args:
        tasks: the dataset's task declarations, in loss order.
        tau, lambda_inter, lambda_intra, weights: see :class:`KDAMConfig`.

    Example:
        >>> from pymtl.tasks import SegmentationTask
        >>> loss = KDAM([SegmentationTask(name="seg", num_classes=3)])
        >>> z = torch.randn(2, 3, 4, 4)
        >>> loss(Signals({}, {"seg": z}), Signals({}, {"seg": 2 * z}), {}, 0.0).shape
        torch.Size([1])
    """

    name = "kdam"
    Config = KDAMConfig
    teacher = TeacherKind.MULTI_TASK

    def __init__(
        self,
        tasks: Sequence[Task],
        *,
        tau: float = 1.0,
        lambda_inter: float = 1.0,
        lambda_intra: float = 1.0,
        weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(tasks)
        cfg = KDAMConfig(
            tau=tau, lambda_inter=lambda_inter, lambda_intra=lambda_intra, weights=weights or {}
        )
        self.tau, self.lambda_inter, self.lambda_intra = cfg.tau, cfg.lambda_inter, cfg.lambda_intra
        self.lam = task_weights(self.name, cfg.weights, self.tasks)
        # per task: "channels" (softmax over dim 1), "spatial" (per channel), or None (no term)
        self.modes = tuple(_mode(t, self.name) for t in self.task_specs)
        if all(m is None for m in self.modes):
            raise ConfigError(
                f"distillation loss 'kdam': none of the tasks {', '.join(self.tasks)} has "
                "class probabilities or dense maps; expected at least one such task"
            )

    def forward(
        self,
        student: Signals,
        teacher: Signals,
        batch: Mapping[str, Tensor],
        progress: float,
    ) -> Tensor:
        """[T] ``λ_t λ_intra D^intra_t + λ_inter D^inter / T``; ``batch`` and ``progress`` are
        not used."""
        probs: list[tuple[Tensor, Tensor] | None] = []
        for task, mode in zip(self.tasks, self.modes, strict=True):
            if mode is None:
                probs.append(None)
                continue
            zs, zt = student.outputs[task], teacher.outputs[task].detach()
            check_same_shape(zs, zt, loss=self.name, where=f"output of task {task!r}")
            probs.append((self._probabilities(zs, mode), self._probabilities(zt, mode)))
        pairs = [p for p in probs if p is not None]
        zero = pairs[0][0].new_zeros(())
        intra = [zero if p is None else _intra(*p) for p in probs]
        inter = cs_divergence(_stacked([s for s, _ in pairs]), _stacked([t for _, t in pairs]))
        shared = self.lambda_inter * inter.mean() / len(self.tasks)
        coefs = [w * self.lambda_intra for w in self.lam]
        return torch.stack([c * d + shared for c, d in zip(coefs, intra, strict=True)])

    def _probabilities(self, z: Tensor, mode: str) -> Tensor:
        if mode == "channels":
            return torch.softmax(z / self.tau, dim=1)
        return torch.softmax(z.flatten(2) / self.tau, dim=2).view_as(z)

    def extra_repr(self) -> str:
        lam = f"lambda_inter={self.lambda_inter:g}, lambda_intra={self.lambda_intra:g}"
        return f"tau={self.tau:g}, {lam}"


def _mode(task: Task, loss: str) -> str | None:
    if family(task, loss) == "categorical":
        return "channels"
    return "spatial" if task.dense else None


def _intra(ps: Tensor, pt: Tensor) -> Tensor:
    """mean over classes k of D_CS between the batch's class-k probabilities."""
    K = ps.shape[1]
    return cs_divergence(
        ps.transpose(0, 1).reshape(K, -1), pt.transpose(0, 1).reshape(K, -1)
    ).mean()


def _stacked(probs: Sequence[Tensor]) -> Tensor:
    """[B, Σ_t K_t·H·W]: each task's per-sample map flattened and divided by sqrt(K_t·H·W)."""
    blocks = [p.flatten(1) / math.sqrt(p[0].numel()) for p in probs]
    return torch.cat(blocks, dim=1)


@hookimpl
def pymtl_register_distillation_losses() -> list[type[DistillationLoss]]:
    return [KDAM]
