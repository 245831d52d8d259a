"""Evaluation across tasks: Δ_MTL in its three published variants, and baseline records.

See :mod:`pymtl.evaluation.delta` (SPEC-data §2.8, SPEC-methods §5.8) and
:mod:`pymtl.evaluation.baseline`.
"""

from __future__ import annotations

from pymtl.evaluation.baseline import BaselineResult
from pymtl.evaluation.delta import (
    HIGHER_IS_BETTER,
    DeltaSummary,
    delta_over_seeds,
    delta_per_metric,
    delta_per_task,
    delta_task_then_metric,
    directions_of,
    format_delta,
    primary_metrics,
)

__all__ = [
    "HIGHER_IS_BETTER",
    "BaselineResult",
    "DeltaSummary",
    "delta_over_seeds",
    "delta_per_metric",
    "delta_per_task",
    "delta_task_then_metric",
    "directions_of",
    "format_delta",
    "primary_metrics",
]
