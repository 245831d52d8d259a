"""Δ_MTL: the relative change of a multi-task model against single-task baselines, in percent.

Reference: SPEC-data §2.8 and SPEC-methods §5.8 [S][C:MTL-PyTorch][C:AvivNavon/nash-mtl]
[C:median-research-group/LibMTL]. Three variants are in use and give different numbers for the
same runs; each has its own function, and :func:`format_delta` prints the direction with it.
With ``M_m`` the MTL value, ``M_b`` the baseline value and ``s = +1`` when higher is better,
``s = −1`` when lower is better, every term is ``r = s · (M_m − M_b) / M_b · 100``:

* :func:`delta_per_task` (Maninis et al.; Vandenhende survey Eq. 10): one primary metric per
  task, ``Δ = mean_t r_t``. **Higher is better.**
* :func:`delta_per_metric` (CAGrad, Nash-MTL ``delta_fn``): every metric of every task
  flattened, ``Δm = −mean_k r_k``. **Lower is better** (the sign is flipped: an improvement is
  negative); on NYUv2 normals get 5 of the 9 metrics.
* :func:`delta_task_then_metric` (LibMTL ``count_improvement``, SPEC-methods' ``delta_p``):
  ``Δ = mean_t mean_{m ∈ t} r_{t,m}``. **Higher is better.** LibMTL returns a fraction; here
  it is ×100 like the others.

Inputs are ``{task: {metric: value}}`` for the MTL run and for the baseline (or a
:class:`BaselineResult`), and directions ``{task: {metric: higher_is_better}}`` —
:func:`directions_of` reads them from the tasks' metrics. Every task and metric used must be
present in all three, and baseline values must be finite and non-zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs

from pymtl.evaluation.baseline import BaselineResult

if TYPE_CHECKING:
    from pymtl.tasks.base import Task

__all__ = [
    "HIGHER_IS_BETTER",
    "DeltaSummary",
    "delta_over_seeds",
    "delta_per_metric",
    "delta_per_task",
    "delta_task_then_metric",
    "directions_of",
    "format_delta",
    "primary_metrics",
]

Results: TypeAlias = Mapping[str, Mapping[str, float]]
Directions: TypeAlias = Mapping[str, Mapping[str, bool]]

HIGHER_IS_BETTER = {
    "delta_per_task": True,
    "delta_per_metric": False,
    "delta_task_then_metric": True,
}
"""Whether a larger value of each Δ variant means a better multi-task model."""


def directions_of(tasks: Iterable[Task]) -> dict[str, dict[str, bool]]:
    """``{task: {metric: higher_is_better}}`` from each task's metric accumulator."""
    return {task.name: dict(task.metric().higher_is_better) for task in tasks}


def primary_metrics(tasks: Iterable[Task]) -> dict[str, str]:
    """``{task: primary metric}`` as the tasks declare it (the input of :func:`delta_per_task`)."""
    return {task.name: task.primary for task in tasks}


def delta_per_task(
    mtl: Results,
    baseline: Results | BaselineResult,
    directions: Directions,
    *,
    primary: Mapping[str, str],
) -> float:
    """Δ_MTL of Vandenhende et al. (survey Eq. 10): mean over tasks of the relative change of
    each task's primary metric, in percent. **Higher is better.**

    Args:
        mtl: the multi-task model's results, ``{task: {metric: value}}``.
        baseline: the single-task results in the same form.
        directions: ``{task: {metric: higher_is_better}}``.
        primary: ``{task: metric}``; its tasks are the ones averaged.
    """
    selection = {task: [metric] for task, metric in primary.items()}
    terms = _relative_terms(
        "delta_per_task", mtl, baseline=baseline, directions=directions, selection=selection
    )
    return _mean([values[0] for values in terms.values()])


def delta_per_metric(
    mtl: Results,
    baseline: Results | BaselineResult,
    directions: Directions,
    *,
    metrics: Mapping[str, Sequence[str]] | None = None,
) -> float:
    """Δm of CAGrad / Nash-MTL: the negated mean relative change over every metric of every
    task, in percent. **Lower is better** (an improvement is negative).

    Args:
        mtl, baseline, directions: as in :func:`delta_per_task`.
        metrics: ``{task: [metric, ...]}`` to use; None: every metric of the baseline. The
            CAGrad/Nash-MTL NYUv2 set is seg ``miou, pixel_acc``; depth ``abs_err, rel_err``;
            normals ``mean, median, within_11.25, within_22.5, within_30``.
    """
    selection = _selection(baseline, metrics)
    terms = _relative_terms(
        "delta_per_metric", mtl, baseline=baseline, directions=directions, selection=selection
    )
    return -_mean([r for values in terms.values() for r in values])


def delta_task_then_metric(
    mtl: Results,
    baseline: Results | BaselineResult,
    directions: Directions,
    *,
    metrics: Mapping[str, Sequence[str]] | None = None,
) -> float:
    """Δ of LibMTL: the relative change averaged over each task's metrics, then over tasks, in
    percent. **Higher is better.**

    Args:
        mtl, baseline, directions: as in :func:`delta_per_task`.
        metrics: ``{task: [metric, ...]}`` to use; None: every metric of the baseline.
    """
    selection = _selection(baseline, metrics)
    terms = _relative_terms(
        "delta_task_then_metric", mtl, baseline=baseline, directions=directions, selection=selection
    )
    return _mean([_mean(values) for values in terms.values()])


def format_delta(value: float, variant: str) -> str:
    """``value`` with its direction tag, e.g. ``'+1.32 % (↑ better)'``."""
    if variant not in HIGHER_IS_BETTER:
        raise ValueError(
            f"unknown Δ variant {variant!r}; expected one of {', '.join(HIGHER_IS_BETTER)}"
        )
    return f"{value:+.2f} % ({'↑' if HIGHER_IS_BETTER[variant] else '↓'} better)"


@attrs.frozen(kw_only=True)
class DeltaSummary:
    """Δ over paired seeds: mean, sample standard deviation (ddof = 1; NaN for one seed) and
    the value of each seed."""

    mean: float
    std: float
    per_seed: dict[int, float]

    def __str__(self) -> str:
        return f"{self.mean:+.2f} ± {self.std:.2f} % over {len(self.per_seed)} seed(s)"


def delta_over_seeds(
    mtl: Mapping[int, Results],
    baseline: Mapping[int, Results | BaselineResult] | Sequence[BaselineResult],
    delta: Callable[[Results, Results | BaselineResult], float],
) -> DeltaSummary:
    """Δ of each seed's MTL run against the baseline run of the same seed, and its mean ± std.

    Args:
        mtl: ``{seed: results}`` of the multi-task runs.
        baseline: ``{seed: results}``, or :class:`BaselineResult` records (keyed by their seed).
        delta: a Δ function of (mtl, baseline), e.g.
            ``functools.partial(delta_per_task, directions=d, primary=p)``.
    """
    if not isinstance(baseline, Mapping):
        baseline = _by_seed(baseline)
    missing_b, missing_m = sorted(set(mtl) - set(baseline)), sorted(set(baseline) - set(mtl))
    if missing_b or missing_m or not mtl:
        raise ValueError(
            "delta_over_seeds: MTL and baseline runs must pair up by seed (got MTL seeds "
            f"{sorted(mtl)}, baseline seeds {sorted(baseline)}; unpaired: {missing_b + missing_m})"
        )
    per_seed = {seed: float(delta(mtl[seed], baseline[seed])) for seed in sorted(mtl)}
    values = list(per_seed.values())
    mean = _mean(values)
    n = len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return DeltaSummary(mean=mean, std=std, per_seed=per_seed)


def _by_seed(records: Sequence[BaselineResult]) -> dict[int, BaselineResult]:
    out: dict[int, BaselineResult] = {}
    for record in records:
        if record.seed in out:
            raise ValueError(f"delta_over_seeds: two baseline records for seed {record.seed}")
        out[record.seed] = record
    return out


def _selection(
    baseline: Results | BaselineResult, metrics: Mapping[str, Sequence[str]] | None
) -> dict[str, list[str]]:
    base = baseline.metrics if isinstance(baseline, BaselineResult) else baseline
    chosen: Mapping[str, Any] = base if metrics is None else metrics
    return {task: list(names) for task, names in chosen.items()}


def _relative_terms(
    variant: str,
    mtl: Results,
    *,
    baseline: Results | BaselineResult,
    directions: Directions,
    selection: Mapping[str, Sequence[str]],
) -> dict[str, list[float]]:
    """``{task: [s · (M_m − M_b) / M_b · 100 for each selected metric]}``, checked."""
    base = baseline.metrics if isinstance(baseline, BaselineResult) else baseline
    if not selection or any(len(names) == 0 for names in selection.values()):
        raise ValueError(f"{variant}: no metrics selected (got {dict(selection)!r})")
    out: dict[str, list[float]] = {}
    for task, names in selection.items():
        for what, source in (("MTL results", mtl), ("baseline", base), ("directions", directions)):
            if task not in source:
                raise ValueError(
                    f"{variant}: the {what} lack task {task!r} "
                    f"(have: {', '.join(source) or 'none'})"
                )
        out[task] = [
            _relative(
                f"{variant}: task {task!r}",
                name,
                mtl=mtl[task],
                base=base[task],
                higher=directions[task],
            )
            for name in names
        ]
    return out


def _relative(
    where: str,
    metric: str,
    *,
    mtl: Mapping[str, float],
    base: Mapping[str, float],
    higher: Mapping[str, bool],
) -> float:
    """The signed relative change of one metric in percent (``where`` names variant and task)."""
    for what, source in (("MTL results", mtl), ("baseline", base), ("directions", higher)):
        if metric not in source:
            raise ValueError(
                f"{where}: the {what} lack metric {metric!r} (have: {', '.join(source) or 'none'})"
            )
    m, b = float(mtl[metric]), float(base[metric])
    if not (math.isfinite(m) and math.isfinite(b)):
        raise ValueError(
            f"{where}, metric {metric!r}: values must be finite (got MTL {m}, baseline {b})"
        )
    if b == 0:
        raise ValueError(
            f"{where}, metric {metric!r}: the baseline value is 0, so the relative change is "
            "undefined (expected a non-zero baseline)"
        )
    sign = 1.0 if higher[metric] else -1.0
    return sign * (m - b) / b * 100.0


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)
