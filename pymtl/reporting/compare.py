"""Compare finished runs: methods grouped over seeds, primary metrics and Δ_MTL mean ± std.

Reference: SPEC-data §2.8 [pymtl] ("report Δ mean ± std over seeds"; Δ variants and their
directions as in :mod:`pymtl.evaluation.delta`). A method is the ``(arch, balancer, distill)``
of a run together with the options of its ``[arch]``, ``[balancer]``, ``[distill]`` and
``[train]`` sections (except ``NOT_IDENTITY``); runs of one method differ only in their seed.
Statistics are the mean and the sample standard deviation (ddof = 1, NaN for one seed) over a
method's seeds. Δ_MTL is read from each run's ``metrics.json``, where the training engine
computed it against the stored single-task baseline named in ``delta.baseline``. Runs are
comparable only when they used the same dataset (name and options, except where it is stored:
``root``, ``cache_dir``), the same evaluation split and the same tasks with the same primary
metrics; otherwise :func:`compare_runs` refuses, naming runs and differences. Runs with the
same seed must also use the same dataset ``seed``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from pymtl.evaluation.delta import HIGHER_IS_BETTER
from pymtl.reporting._comparable import (
    LOCATION_KEYS,
    ComparisonError,
    check_comparable,
    dataset_of,
    differences,
    flatten,
    primaries,
)
from pymtl.reporting.runs import SUMMARY_FILE, Run, load_run

__all__ = [
    "DELTA_VARIANTS",
    "LOCATION_KEYS",
    "Comparison",
    "ComparisonError",
    "MethodResult",
    "SeedStat",
    "compare_runs",
    "profile_problems",
]

DELTA_VARIANTS = {
    variant: HIGHER_IS_BETTER[f"delta_{variant}"]
    for variant in ("per_task", "per_metric", "task_then_metric")
}
"""The Δ_MTL keys of ``metrics.json`` and whether higher is better for each."""

METHOD_SECTIONS = ("arch", "balancer", "distill", "teacher", "train")
"""Config sections whose options are part of a method's identity."""

NOT_IDENTITY = frozenset(
    {
        "train.checkpoint_every",
        "train.num_workers",
        "train.eval_batch_size",
        "teacher.cache",
        "teacher.cache_dir",
    }
)
"""Options of those sections that do not change what is trained or measured."""


@attrs.frozen(kw_only=True)
class SeedStat:
    """A value over seeds: mean, sample std (ddof = 1; NaN for one seed), each seed's value."""

    mean: float
    std: float
    per_seed: dict[int, float]

    @property
    def n(self) -> int:
        return len(self.per_seed)

    @classmethod
    def of(cls, per_seed: Mapping[int, float]) -> SeedStat:
        values = [float(per_seed[s]) for s in sorted(per_seed)]
        n = len(values)
        mean = math.fsum(values) / n if n else math.nan
        var = math.fsum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else math.nan
        return cls(
            mean=mean, std=math.sqrt(var), per_seed=dict(zip(sorted(per_seed), values, strict=True))
        )


@attrs.frozen(kw_only=True)
class MethodResult:
    """One method's runs and their statistics.

    Attributes:
        label: display name, ``arch+balancer[+distill]`` plus the options that tell it apart
            from another method with the same components.
        method: ``(arch, balancer, distill)``.
        runs: ``{seed: run directory}``.
        primary: ``{task: SeedStat of its primary metric}``.
        delta: ``{variant: SeedStat}`` over the seeds whose run has a Δ_MTL (none: no
            baseline).
    """

    label: str
    method: tuple[str, str, str | None]
    runs: dict[int, Path]
    primary: dict[str, SeedStat]
    delta: dict[str, SeedStat]

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(sorted(self.runs))


@attrs.frozen(kw_only=True)
class Comparison:
    """Methods on one dataset, split and task set; see :func:`compare_runs`.

    ``paired_seeds`` are the seeds every method ran (the performance profile uses those);
    ``notes`` are caveats to print with the table (unpaired seeds, missing Δ, mixed baselines).
    """

    dataset: str
    split: str
    tasks: tuple[str, ...]
    primary: dict[str, str]
    higher_is_better: dict[str, bool]
    methods: tuple[MethodResult, ...]
    paired_seeds: tuple[int, ...]
    notes: tuple[str, ...]


def compare_runs(run_dirs: Iterable[str | Path | Run]) -> Comparison:
    """Group runs into methods, pair them by seed and compute each method's statistics.

    Args:
        run_dirs: run directories (or loaded :class:`Run` records), in the order methods should
            be listed.
    """
    runs = [r if isinstance(r, Run) else load_run(r) for r in run_dirs]
    if not runs:
        raise ComparisonError("compare_runs: no runs given (expected at least one run directory)")
    declared = [primaries(run) for run in runs]
    check_comparable(runs)
    first = runs[0].require_summary()
    tasks = tuple(declared[0])
    primary = {t: metric for t, (metric, _) in declared[0].items()}
    higher = {t: hib for t, (_, hib) in declared[0].items()}
    groups = _group(runs)
    methods = tuple(
        _method_result(label, members, primary=primary) for label, members in groups.items()
    )
    paired = set.intersection(*(set(m.runs) for m in methods))
    return Comparison(
        dataset=dataset_of(runs[0])[0],
        split=str(first.get("split", "?")),
        tasks=tasks,
        primary=primary,
        higher_is_better=higher,
        methods=methods,
        paired_seeds=tuple(sorted(paired)),
        notes=tuple(_notes(methods, runs, paired=paired)),
    )


def profile_problems(
    comparison: Comparison,
) -> tuple[dict[str, list[float]], list[bool], list[tuple[str, int]]]:
    """The performance-profile input: ``({method label: [value per problem]}, [higher is better
    per problem], [(task, seed) per problem])`` over the paired seeds and primary metrics."""
    problems = [(t, s) for t in comparison.tasks for s in comparison.paired_seeds]
    values = {m.label: [m.primary[t].per_seed[s] for t, s in problems] for m in comparison.methods}
    return values, [comparison.higher_is_better[t] for t, _ in problems], problems


# ---------------------------------------------------------------------------------------------
# checks and grouping


def _group(runs: Sequence[Run]) -> dict[str, dict[int, Run]]:
    """``{label: {seed: run}}`` in first-seen order; a repeated (method, seed) is an error."""
    groups: list[tuple[tuple[str, str, str | None], dict[str, Any], dict[int, Run]]] = []
    for run in runs:
        config = _with_defaults(run.config)
        sections = flatten({k: config.get(k) for k in METHOD_SECTIONS})
        opts = {k: v for k, v in sections.items() if k not in NOT_IDENTITY}
        same = [g for g in groups if g[0] == run.method and g[1] == opts]
        members = same[0][2] if same else {}
        if not same:
            groups.append((run.method, opts, members))
        if run.seed in members:
            raise ComparisonError(
                f"runs {members[run.seed].path} and {run.path} are the same method "
                f"{'+'.join(n for n in run.method if n)} with the same seed {run.seed} "
                "(expected one run per method and seed)"
            )
        members[run.seed] = run
    every = [(method, opts) for method, opts, _ in groups]
    return {_label(method, opts, every=every): members for method, opts, members in groups}


def _with_defaults(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """A run's config with every option the current components define filled in, so a run
    written before an option existed compares equal to one at that option's default; the
    stored config as is when it no longer resolves (a component gone or changed)."""
    from pymtl.config import resolve_config, to_document
    from pymtl.errors import PymtlError
    from pymtl.plugins import get_registry

    registry = get_registry()
    try:
        resolved: Mapping[str, Any] = to_document(resolve_config(config, registry), registry)
    except (PymtlError, ValueError, TypeError, KeyError):
        return config
    return resolved


def _label(
    method: tuple[str, str, str | None],
    opts: Mapping[str, Any],
    *,
    every: Sequence[tuple[tuple[str, str, str | None], Mapping[str, Any]]],
) -> str:
    """``arch+balancer[+distill]``, plus the options that differ from same-named methods."""
    label = "+".join(n for n in method if n)
    twins = [other for name, other in every if name == method]
    if len(twins) == 1:
        return label
    keys = sorted({d.split(":")[0] for other in twins for d in differences(opts, other)})
    shown = (f"{k}={opts[k]!r}" if k in opts else f"{k} unset" for k in keys)
    return f"{label} ({', '.join(shown)})"


def _method_result(
    label: str, members: Mapping[int, Run], *, primary: Mapping[str, str]
) -> MethodResult:
    per_task: dict[str, dict[int, float]] = {t: {} for t in primary}
    per_variant: dict[str, dict[int, float]] = {}
    for seed, run in members.items():
        summary = run.require_summary()
        for task, metric in primary.items():
            value = summary["metrics"].get(task, {}).get(metric)
            if value is None:
                raise ComparisonError(
                    f"{run.path / SUMMARY_FILE}: no value at metrics.{task}.{metric} (the "
                    f"primary metric of task {task!r})"
                )
            per_task[task][seed] = value
        delta = summary.get("delta")
        if isinstance(delta, Mapping):
            for variant in DELTA_VARIANTS:
                if variant in delta:
                    per_variant.setdefault(variant, {})[seed] = delta[variant]
    some = next(iter(members.values()))
    return MethodResult(
        label=label,
        method=some.method,
        runs={s: r.path for s, r in sorted(members.items())},
        primary={t: SeedStat.of(v) for t, v in per_task.items()},
        delta={v: SeedStat.of(s) for v, s in per_variant.items()},
    )


def _notes(methods: Sequence[MethodResult], runs: Sequence[Run], *, paired: set[int]) -> list[str]:
    notes = []
    for m in methods:
        if set(m.runs) - paired:
            extra = ", ".join(map(str, sorted(set(m.runs) - paired)))
            notes.append(
                f"{m.label}: seed(s) {extra} not run by every method (left out of the "
                "performance profile)"
            )
        gaps = _delta_gaps(m, {run.path: run for run in runs})
        if gaps:
            notes.append(f"{m.label}: no Δ_MTL for {'; '.join(gaps)}")
    sources = {
        str(s["delta"]["baseline"].get("source"))
        for s in (r.require_summary() for r in runs)
        if isinstance(s.get("delta"), Mapping) and isinstance(s["delta"].get("baseline"), Mapping)
    }
    if len(sources) > 1:
        notes.append(
            f"Δ_MTL was computed against different baselines: {', '.join(sorted(sources))}"
        )
    return notes


def _delta_gaps(method: MethodResult, runs: Mapping[Path, Run]) -> list[str]:
    """``"seed S (why)"`` for each seed of ``method`` whose run has no Δ_MTL."""
    gaps = []
    for seed in method.seeds:
        if not any(seed in stat.per_seed for stat in method.delta.values()):
            delta = runs[method.runs[seed]].require_summary().get("delta")
            error = delta.get("error") if isinstance(delta, Mapping) else None
            gaps.append(f"seed {seed} ({error or 'no stored single-task baseline'})")
    return gaps
