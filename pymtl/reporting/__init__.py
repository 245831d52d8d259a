"""Reporting: read run directories, plot a run, compare runs over methods and seeds.

See :mod:`pymtl.reporting.runs` (the run-directory format [pymtl]), :mod:`pymtl.reporting.plots`
(per-run PNGs), :mod:`pymtl.reporting.compare` and :mod:`pymtl.reporting.table` (methods ×
seeds, Δ_MTL mean ± std; SPEC-data §2.8), :mod:`pymtl.reporting.profile` (Dolan–Moré
performance profiles) and :mod:`pymtl.reporting.compare_plots`.

Example:
    >>> from pymtl.reporting import compare_runs, format_table, plot_comparison  # doctest: +SKIP
    >>> cmp = compare_runs(["runs/hps-ew-0", "runs/hps-ew-1", "runs/mtan-ew-0"])  # doctest: +SKIP
    >>> print(format_table(cmp)); plot_comparison(cmp, "runs/compare")  # doctest: +SKIP
"""

from __future__ import annotations

from pymtl.reporting.compare import (
    DELTA_VARIANTS,
    Comparison,
    ComparisonError,
    MethodResult,
    SeedStat,
    compare_runs,
    profile_problems,
)
from pymtl.reporting.compare_plots import plot_comparison, profile_taus
from pymtl.reporting.plots import plot_run
from pymtl.reporting.profile import performance_profile, performance_ratios
from pymtl.reporting.runs import Run, RunFormatError, load_run
from pymtl.reporting.table import comparison_to_json, format_table

__all__ = [
    "DELTA_VARIANTS",
    "Comparison",
    "ComparisonError",
    "MethodResult",
    "Run",
    "RunFormatError",
    "SeedStat",
    "compare_runs",
    "comparison_to_json",
    "format_table",
    "load_run",
    "performance_profile",
    "performance_ratios",
    "plot_comparison",
    "plot_run",
    "profile_problems",
    "profile_taus",
]
