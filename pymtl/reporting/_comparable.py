"""Whether runs can be compared: same dataset, evaluation split, tasks and primary metrics.

Reference: SPEC-data §2.8 [pymtl]: Δ_MTL and metric tables are only meaningful between runs on
the same data and tasks; runs paired by seed must also see the same data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pymtl.errors import PymtlError
from pymtl.reporting.runs import SUMMARY_FILE, Run

__all__ = [
    "LOCATION_KEYS",
    "ComparisonError",
    "check_comparable",
    "dataset_of",
    "differences",
    "flatten",
    "primaries",
]

LOCATION_KEYS = frozenset({"root", "cache_dir"})
"""Dataset options that say where data is stored, not what it is (ignored when comparing)."""


class ComparisonError(PymtlError, ValueError):
    """Runs that cannot be compared (different dataset, split or tasks; duplicate seeds)."""


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested tables as ``{"a.b.c": value}``."""
    if not isinstance(value, Mapping):
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, item in value.items():
        out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return out


def differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """``"key: value_a vs value_b"`` for every key of two flat dicts whose values differ."""
    absent = object()

    def show(value: Any) -> str:
        return "(absent)" if value is absent else repr(value)

    return [
        f"{key}: {show(a.get(key, absent))} vs {show(b.get(key, absent))}"
        for key in sorted(set(a) | set(b))
        if a.get(key, absent) != b.get(key, absent)
    ]


def primaries(run: Run) -> dict[str, tuple[str, bool]]:
    """``{task: (primary metric, higher is better)}`` from ``metrics.json``, checked."""
    out = {}
    for task, info in run.require_summary()["tasks"].items():
        primary = info.get("primary") if isinstance(info, Mapping) else None
        directions = info.get("higher_is_better") if isinstance(info, Mapping) else None
        if not (
            isinstance(primary, str)
            and isinstance(directions, Mapping)
            and isinstance(directions.get(primary), bool)
        ):
            raise ComparisonError(
                f"{run.path / SUMMARY_FILE}: tasks.{task} must hold a 'primary' metric name and "
                f"'higher_is_better' with a true/false for it (got {info!r})"
            )
        out[str(task)] = (primary, directions[primary])
    return out


def dataset_of(run: Run) -> tuple[str, dict[str, Any]]:
    """``(name, {option: value})`` of a run's dataset, location keys left out."""
    section = run.config.get("dataset")
    if not isinstance(section, Mapping) or "name" not in section:
        name = run.require_summary().get("dataset")
        return str(name), {}
    options = {k: v for k, v in section.items() if k != "name" and k not in LOCATION_KEYS}
    return str(section["name"]), flatten(options)


def _identity(run: Run) -> dict[str, Any]:
    """What must agree between comparable runs (the dataset ``seed`` is checked per seed)."""
    summary = run.require_summary()
    name, options = dataset_of(run)
    tasks = {
        t: (info.get("primary"), flatten(info.get("higher_is_better", {})))
        for t, info in summary["tasks"].items()
    }
    ident = {"dataset": name, "split": summary.get("split"), "tasks": sorted(tasks)}
    ident.update({f"dataset.{k}": v for k, v in options.items() if k != "seed"})
    ident.update({f"tasks.{t}.primary": p for t, (p, _) in tasks.items()})
    ident.update(
        {f"tasks.{t}.higher_is_better.{k}": v for t, (_, d) in tasks.items() for k, v in d.items()}
    )
    return ident


def check_comparable(runs: Sequence[Run]) -> None:
    """Raise :class:`ComparisonError` listing every run that differs from the first in dataset
    (name, options other than location and ``seed``), split, tasks or metric directions, and
    every two runs of the same seed with different dataset seeds."""
    ref = _identity(runs[0])
    problems = []
    for run in runs[1:]:
        diff = differences(ref, _identity(run))
        if diff:
            problems.append(f"{runs[0].path} and {run.path} differ in {'; '.join(diff)}")
    data_seed: dict[int, tuple[Run, Any]] = {}
    for run in runs:
        seed = dataset_of(run)[1].get("seed")
        other, other_seed = data_seed.setdefault(run.seed, (run, seed))
        if other_seed != seed:
            problems.append(
                f"{other.path} and {run.path} have run seed {run.seed} but dataset seeds "
                f"{other_seed!r} vs {seed!r} (paired runs must see the same data)"
            )
    if problems:
        raise ComparisonError(
            "cannot compare these runs: they must share dataset (name and options), "
            "evaluation split and tasks with the same primary metrics:\n  " + "\n  ".join(problems)
        )
