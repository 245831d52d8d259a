"""Dynamic Task Prioritisation (``dtp``): focal-loss weights from smoothed per-task KPIs.

Reference: Guo, Haque, Huang, Yeung & Fei-Fei, "Dynamic Task Prioritization for Multitask
Learning", ECCV 2018; survey Eq. 9 (SPEC-methods §2.5) [S][P][R]. With κ̄_t ∈ (0, 1) a smoothed
key performance indicator (KPI) of task t, higher is better::

    w_t = s_t = −(1 − κ̄_t)^{γ_t} · log κ̄_t,    κ̄_t ← a·κ_t + (1 − a)·κ̄_t,

γ_t = 1 [S], a = 0.9 [P][R], κ clamped to [ε, 1 − ε] with ε = 0.01 so the log is finite [R];
the first KPI of a task sets κ̄_t = κ_t, and a task without a KPI yet gets w = 1 [R].

KPI source (SPEC's open question; none of this is from the DTP paper) [R]:

* ``kpi = "batch"`` is SPEC's pymtl choice: the KPI of the current batch, from the predictions
  (:func:`batch_kpis`: pixel accuracy for segmentation and parts, δ₁ for depth, the fraction of
  normals within 22.5°, F1 at threshold 0.5 for edges and saliency; accuracy for image-level
  classification and multi-label tasks [R]). A balancer sees only the losses, so the caller
  passes them with :meth:`DynamicTaskPrioritization.observe_kpis` before each call; pymtl's
  :class:`~pymtl.engine.step.TrainStep` does not do that (yet), hence it is not the default.
* ``kpi = "loss"`` (default) works within the losses-only contract: ``κ_t = exp(−L_t)`` (for a
  cross-entropy loss, the geometric-mean probability of the true label) [pymtl][R].

The survey warns that DTP depends strongly on the KPI and needs balanced loss magnitudes; it
was not benchmarked there [S].
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import torch
from torch import Tensor

from pymtl.balancers.base import Balancer, Needs, Weights, constant_weights
from pymtl.errors import PymtlError
from pymtl.hookspecs import hookimpl
from pymtl.tasks.base import Task, vector_norm

_COS_22_5 = math.cos(math.radians(22.5))


def _in_range(low: float, high: float, *, closed_high: bool) -> Any:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and low < value and (value <= high if closed_high else value < high)
        if not ok:
            bracket = "]" if closed_high else ")"
            raise ValueError(
                f"balancer 'dtp': {attribute.name!r} must be in ({low:g}, {high:g}{bracket} "
                f"(got {value!r})"
            )

    return check


def _gammas(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, Mapping):
        items = [(f"gammas[{key!r}]", gamma) for key, gamma in value.items()]
    else:
        items = [("'gamma'", value)]
    for where, gamma in items:
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)):
            raise TypeError(f"balancer 'dtp': {where} must be a number (got {gamma!r})")
        if not (math.isfinite(gamma) and gamma >= 0):
            raise ValueError(f"balancer 'dtp': {where} must be finite and >= 0 (got {gamma!r})")


@attrs.frozen(kw_only=True)
class DynamicTaskPrioritizationConfig:
    """Options of ``dtp``.

    Attributes:
        kpi: ``"loss"`` (κ = exp(−L)) or ``"batch"`` (KPIs passed by the caller).
        gamma: focusing parameter γ of the tasks not in ``gammas``.
        gammas: γ per task name.
        smoothing: a, the weight of the newest KPI in the moving average.
        eps: KPIs are clamped to [eps, 1 − eps].
    """

    kpi: str = attrs.field(default="loss", validator=attrs.validators.in_(("loss", "batch")))
    gamma: float = attrs.field(default=1.0, validator=_gammas)
    gammas: Mapping[str, float] = attrs.field(factory=dict, validator=_gammas)
    smoothing: float = attrs.field(default=0.9, validator=_in_range(0, 1, closed_high=True))
    eps: float = attrs.field(default=0.01, validator=_in_range(0, 0.5, closed_high=False))


class DynamicTaskPrioritization(Balancer):
    """Dynamic task prioritisation: w = s = −(1 − κ̄)^γ log κ̄ of smoothed task KPIs [S][R].

    Reference: Guo et al., ECCV 2018 (survey Eq. 9). Tasks that perform worse (low κ̄) get
    larger weights. The moving average κ̄ is a buffer (in checkpoints).

    Args:
        tasks: task names, in loss order.
        kpi: ``"loss"`` or ``"batch"`` (see the module docstring).
        gamma: γ of the tasks not in ``gammas``.
        gammas: γ per task name.
        smoothing: a of the moving average.
        eps: clamp of the KPIs.

    Example:
        >>> import torch
        >>> b = DynamicTaskPrioritization(["seg", "depth"], kpi="batch")
        >>> b.observe_kpis(torch.tensor([0.5, 0.9]))
        >>> b(torch.tensor([0.7, 0.2])).shared  # −(1 − κ) log κ
        tensor([0.3466, 0.0105])
    """

    name = "dtp"
    Config = DynamicTaskPrioritizationConfig
    needs = Needs.LOSSES

    def __init__(
        self,
        tasks: Sequence[str],
        *,
        kpi: str = "loss",
        gamma: float = 1.0,
        gammas: Mapping[str, float] | None = None,
        smoothing: float = 0.9,
        eps: float = 0.01,
    ) -> None:
        super().__init__(tasks)
        gammas = dict(gammas or {})
        DynamicTaskPrioritizationConfig(
            kpi=kpi, gamma=gamma, gammas=gammas, smoothing=smoothing, eps=eps
        )  # same validation as the config
        unknown = sorted(set(gammas) - set(self.tasks))
        if unknown:
            raise ValueError(
                f"balancer 'dtp': gammas given for unknown task(s) {', '.join(unknown)}; "
                f"expected a subset of {', '.join(self.tasks)}"
            )
        self.kpi, self.smoothing, self.eps = kpi, float(smoothing), float(eps)
        gamma_t = [float(gammas.get(t, gamma)) for t in self.tasks]
        self.register_buffer("gamma", torch.tensor(gamma_t, dtype=torch.float64), persistent=False)
        self.register_buffer("kpi_ema", torch.zeros(self.num_tasks, dtype=torch.float64))
        self.register_buffer("measured", torch.zeros(self.num_tasks, dtype=torch.bool))
        self.gamma: Tensor
        self.kpi_ema: Tensor
        self.measured: Tensor
        self._observed = False  # KPIs given since the last step ("batch")

    def observe_kpis(self, kpis: Tensor) -> None:
        """Fold one step's KPIs ([T], higher is better, NaN: not measured) into κ̄."""
        if not (isinstance(kpis, Tensor) and kpis.shape == (self.num_tasks,)):
            got = tuple(kpis.shape) if isinstance(kpis, Tensor) else type(kpis).__name__
            raise ValueError(
                f"balancer 'dtp': KPIs must have shape ({self.num_tasks},) for tasks "
                f"{self.tasks}, got {got}"
            )
        k = kpis.detach().to(device=self.kpi_ema.device, dtype=torch.float64)
        seen = ~torch.isnan(k)
        k = k.clamp(self.eps, 1 - self.eps)
        ema = torch.where(
            self.measured, self.smoothing * k + (1 - self.smoothing) * self.kpi_ema, k
        )
        self.kpi_ema.copy_(torch.where(seen, ema, self.kpi_ema))
        self.measured |= seen
        self._observed = True

    def compute(self, losses: Tensor, *, gram: Tensor | None, jacobian: Tensor | None) -> Weights:
        if self.kpi == "loss":
            self.observe_kpis(torch.exp(-losses.detach().to(torch.float64)))
        elif not self._observed:
            raise PymtlError(
                "balancer 'dtp' with kpi='batch': no KPIs were given for this step; call "
                "observe_kpis(batch_kpis(tasks, outputs, batch)) before the balancer at every "
                "step (pymtl's training step does not pass batch KPIs: use kpi='loss' there)"
            )
        self._observed = False
        k = self.kpi_ema.clamp(self.eps, 1 - self.eps)
        focal = -((1 - k) ** self.gamma) * torch.log(k)
        return constant_weights(torch.where(self.measured, focal, torch.ones_like(focal)), losses)

    def extra_repr(self) -> str:
        return f"tasks={self.tasks}, kpi={self.kpi!r}, smoothing={self.smoothing:g}"


def batch_kpis(
    tasks: Sequence[Task], outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]
) -> Tensor:
    """[T] float64 KPIs of one batch, in task order (NaN for a task without valid labels)."""
    values = [
        task_kpi(t, outputs[t.name], batch[t.name], batch.get(f"{t.name}.mask")) for t in tasks
    ]
    return torch.stack([v.to(values[0].device) for v in values])


@torch.no_grad()
def task_kpi(task: Task, pred: Tensor, target: Tensor, labelled: Tensor | None = None) -> Tensor:
    """SPEC's batch KPI of one task (a float64 scalar in [0, 1], NaN without valid labels).

    Args:
        task: the task declaration (its ``kind`` picks the KPI).
        pred: the head output for the batch (the task's layout).
        target: the batch's targets.
        labelled: [B] bool, False for samples without this task's label (None: all).
    """
    mask = task.valid_mask(target)
    if labelled is not None:
        mask = mask & labelled.view(-1, *([1] * (mask.dim() - 1))).to(mask.device)
    kind = task.kind
    if kind in ("segmentation", "parts", "classification"):
        hit = pred.argmax(dim=1) == target
    elif kind == "depth":
        p, g = pred, torch.nan_to_num(target)
        tiny = torch.finfo(p.dtype).tiny
        ratio = torch.maximum(p / g.clamp_min(tiny), g / p.clamp_min(tiny))
        hit = (p > 0) & (g > 0) & (ratio < 1.25)
    elif kind == "normals":
        cos = (pred * target).sum(dim=1, keepdim=True)
        norms = vector_norm(pred, keepdim=True) * vector_norm(target, keepdim=True)
        hit = cos > _COS_22_5 * norms  # angle < 22.5°
    elif kind in ("edge", "saliency"):
        return _f1(pred > 0, target > 0.5, mask)  # sigmoid(logit) > 0.5
    elif kind == "multilabel":
        hit = (pred > 0) == (torch.nan_to_num(target) > 0.5)
    else:
        raise ValueError(
            f"balancer 'dtp': no batch KPI for task {task.name!r} of kind {kind!r}; expected "
            "segmentation, parts, depth, normals, edge, saliency, classification or multilabel"
        )
    total = mask.sum().double()
    return (hit & mask).sum().double() / total if total > 0 else _nan(mask)


def _f1(predicted: Tensor, positive: Tensor, mask: Tensor) -> Tensor:
    """F1 of boolean maps over ``mask``; 1 when neither has a positive, NaN for an empty mask."""
    if not bool(mask.any()):
        return _nan(mask)
    tp = (predicted & positive & mask).sum().double()
    wrong = ((predicted ^ positive) & mask).sum().double()  # false positives + false negatives
    return 2 * tp / (2 * tp + wrong) if (2 * tp + wrong) > 0 else torch.ones_like(tp)


def _nan(like: Tensor) -> Tensor:
    return torch.full((), math.nan, dtype=torch.float64, device=like.device)


@hookimpl
def pymtl_register_balancers() -> list[type[Balancer]]:
    return [DynamicTaskPrioritization]
