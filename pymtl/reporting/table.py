"""Text and JSON output of a :class:`~pymtl.reporting.compare.Comparison`.

Reference: SPEC-data §2.8 [pymtl]: Δ_MTL is reported as mean ± std over seeds and always with
its direction, "(↑)" when higher is better and "(↓)" when lower is better.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from pymtl.reporting.compare import (
    DELTA_VARIANTS,
    Comparison,
    MethodResult,
    SeedStat,
    profile_problems,
)
from pymtl.reporting.profile import performance_ratios

__all__ = ["comparison_to_json", "format_table"]

_VARIANT_TITLES = {
    "per_task": "per-task",
    "per_metric": "per-metric",
    "task_then_metric": "task-then-metric",
}


def format_table(comparison: Comparison) -> str:
    """A plain-text table: one row per method, its seed count, each task's primary metric and
    each Δ_MTL variant as mean ± sample std over seeds; ``*`` marks the best mean of a column.
    """
    c = comparison
    lines = _preamble(c)
    header = ["method", "seeds"]
    columns: list[list[str]] = [[m.label for m in c.methods], [str(len(m.runs)) for m in c.methods]]
    for task in c.tasks:
        header.append(f"{task} {c.primary[task]}{_arrow(c.higher_is_better[task])}")
        columns.append(
            _column(
                c.methods,
                [m.primary[task] for m in c.methods],
                higher=c.higher_is_better[task],
                signed=False,
            )
        )
    for variant, higher in DELTA_VARIANTS.items():
        header.append(f"Δ_MTL {_VARIANT_TITLES[variant]} %{_arrow(higher)}")
        columns.append(
            _column(
                c.methods, [m.delta.get(variant) for m in c.methods], higher=higher, signed=True
            )
        )
    lines += _aligned(header, columns)
    lines += [
        "",
        "mean ± sample std (ddof=1) over seeds (std is nan for one seed); * best mean in its "
        "column; (↑)/(↓): higher/lower is better.",
        "Δ_MTL: % change against the single-task baseline named in each run's metrics.json; "
        "(k/n): only k of the method's n seeds have one.",
    ]
    lines += [f"note: {note}" for note in c.notes]
    return "\n".join(lines)


def _preamble(c: Comparison) -> list[str]:
    """What is compared: runs, methods, dataset, split, tasks and the paired seeds."""
    n_runs = sum(len(m.runs) for m in c.methods)
    tasks = ", ".join(f"{t}: {c.primary[t]}{_arrow(c.higher_is_better[t])}" for t in c.tasks)
    return [
        f"{n_runs} run(s), {len(c.methods)} method(s) on dataset {c.dataset!r}, split {c.split!r}",
        f"tasks (primary metric): {tasks}",
        f"seeds run by every method: {', '.join(map(str, c.paired_seeds)) or 'none'}",
        "",
    ]


def _arrow(higher_is_better: bool) -> str:
    return " (↑)" if higher_is_better else " (↓)"


def _column(
    methods: Sequence[MethodResult],
    stats: Sequence[SeedStat | None],
    *,
    higher: bool,
    signed: bool,
) -> list[str]:
    """One column's cells, with a common number of decimals and ``*`` on the best mean."""
    means = [s.mean for s in stats if s is not None and math.isfinite(s.mean)]
    best = (max(means) if higher else min(means)) if means else math.nan
    decimals = 2 if signed else _decimals(max((abs(v) for v in means), default=1.0))
    cells = []
    for method, stat in zip(methods, stats, strict=True):
        if stat is None:
            cells.append("—")
            continue
        mean = f"{stat.mean:+.{decimals}f}" if signed else f"{stat.mean:.{decimals}f}"
        cell = f"{mean} ± {stat.std:.{decimals}f}"
        if stat.n < len(method.runs):
            cell += f" ({stat.n}/{len(method.runs)})"
        cells.append(cell + (" *" if stat.mean == best else "  "))
    return cells


def _decimals(magnitude: float) -> int:
    """About four significant digits for values up to ``magnitude`` (0 to 4 decimals)."""
    if magnitude <= 0 or not math.isfinite(magnitude):
        return 4
    return min(4, max(0, 3 - math.floor(math.log10(magnitude))))


def _aligned(header: Sequence[str], columns: Sequence[Sequence[str]]) -> list[str]:
    """Rows of cells padded to their column's width: text left, numbers right."""
    widths = [
        max(len(h), *(len(cell) for cell in col)) for h, col in zip(header, columns, strict=True)
    ]
    rows = [list(header), *map(list, zip(*columns, strict=True))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(w) for cell, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    return [line(rows[0]), "  ".join("-" * w for w in widths), *map(line, rows[1:])]


def comparison_to_json(comparison: Comparison) -> str:
    """The comparison as JSON text (NaN written as null), with each method's performance
    ratios per (task, seed) problem of the paired seeds (an infinite ratio, i.e. a failed
    method, is written as null too); ``json.loads`` reads it back."""
    ratios: dict[str, Any] = {}
    values, higher, problems = profile_problems(comparison)
    if problems:
        found = performance_ratios(values, higher)
        ratios = {m: [_plain(float(x)) for x in r] for m, r in found.items()}
    doc = {
        "dataset": comparison.dataset,
        "split": comparison.split,
        "tasks": {
            t: {
                "primary": comparison.primary[t],
                "higher_is_better": comparison.higher_is_better[t],
            }
            for t in comparison.tasks
        },
        "paired_seeds": list(comparison.paired_seeds),
        "delta_higher_is_better": dict(DELTA_VARIANTS),
        "methods": [_method_json(m) for m in comparison.methods],
        "performance_ratios": {"problems": [list(p) for p in problems], "ratios": ratios},
        "notes": list(comparison.notes),
    }
    return json.dumps(doc, indent=2, allow_nan=False)


def _plain(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _stat_json(stat: SeedStat) -> dict[str, Any]:
    return {
        "mean": _plain(stat.mean),
        "std": _plain(stat.std),
        "n": stat.n,
        "per_seed": {str(s): _plain(v) for s, v in stat.per_seed.items()},
    }


def _method_json(m: MethodResult) -> dict[str, Any]:
    arch, balancer, distill = m.method
    return {
        "label": m.label,
        "arch": arch,
        "balancer": balancer,
        "distill": distill,
        "runs": {str(s): str(p) for s, p in sorted(m.runs.items())},
        "primary": {t: _stat_json(s) for t, s in m.primary.items()},
        "delta": {v: _stat_json(s) for v, s in m.delta.items()},
    }
