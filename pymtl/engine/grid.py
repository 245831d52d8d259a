"""``pymtl grid``: fixed task weights chosen by search [S].

The survey grid-searches the weights of ``fixed`` weighting per dataset (SPEC-methods §2.1;
e.g. PASCAL: seg 1, parts 2, sal 5, edge 50, normals 10). ``pymtl grid`` trains ``fixed`` for
every combination of the given per-task values (tasks not named keep 1) × seeds, resumably like
``pymtl sweep``, and picks the combination with the best mean Δ_MTL (per task, survey Eq. 10)
on the evaluated split:

* against the stored single-task baselines when there are any (``pymtl baselines``);
* otherwise against the equal-weights point (all 1), which is always part of the grid, so the
  score is the gain over not weighting at all.

Choose on ``val`` (the default ``train.eval_split``) and report on ``test``: selecting on the
split one reports is the optimism the survey warns about.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from pymtl.config import resolve_config
from pymtl.engine.build import build_dataset
from pymtl.engine.loop import train
from pymtl.errors import ConfigError
from pymtl.evaluation import delta_per_task
from pymtl.plugins import Registry

__all__ = ["GridPoint", "best_point", "parse_weight_spec", "run_grid", "weight_grid"]


def parse_weight_spec(items: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """``["depth=0.1,1,10", "normals=1,10"]`` → ``{"depth": (0.1, 1, 10), "normals": (1, 10)}``."""
    spec: dict[str, tuple[float, ...]] = {}
    for item in items:
        task, sep, values = item.partition("=")
        task = task.strip()
        if not sep or not task or not values.strip():
            raise ConfigError(f"--weights {item!r}: expected TASK=V1,V2,... (e.g. depth=0.1,1,10)")
        try:
            numbers = tuple(float(v) for v in values.replace(",", " ").split())
        except ValueError:
            raise ConfigError(f"--weights {item!r}: the values must be numbers") from None
        if any(not math.isfinite(v) or v < 0 for v in numbers):
            raise ConfigError(f"--weights {item!r}: weights must be finite and >= 0")
        if task in spec:
            raise ConfigError(f"--weights: task {task!r} is given twice")
        spec[task] = tuple(dict.fromkeys(numbers))
    if not spec:
        raise ConfigError("grid: no --weights given (e.g. --weights depth=0.1,1,10)")
    return spec


def weight_grid(
    spec: Mapping[str, Sequence[float]], tasks: Sequence[str]
) -> list[dict[str, float]]:
    """Every combination of ``spec``'s values (the equal-weights point first, added if absent);
    each a ``{task: λ}`` over the tasks ``spec`` names.

    Raises:
        ConfigError: ``spec`` names a task not in ``tasks``.
    """
    unknown = sorted(set(spec) - set(tasks))
    if unknown:
        raise ConfigError(
            f"grid: unknown task(s) {', '.join(unknown)}; the dataset's tasks are "
            f"{', '.join(tasks)}"
        )
    names = list(spec)
    points = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*spec.values())]
    ones = dict.fromkeys(names, 1.0)
    return [ones] + [p for p in points if p != ones]


@attrs.frozen
class GridPoint:
    """One combination of weights and its runs."""

    weights: dict[str, float]
    runs: tuple[Path, ...]

    @property
    def label(self) -> str:
        return "fixed-" + "-".join(f"{t}{v:g}" for t, v in self.weights.items())


def run_grid(
    doc: Mapping[str, Any],
    spec: Mapping[str, Sequence[float]],
    seeds: Sequence[int],
    registry: Registry,
    root: Path,
    *,
    overrides: Sequence[str] = (),
) -> list[GridPoint]:
    """Train ``fixed`` at every grid point × seed not finished yet (resumable)."""
    base = resolve_config(dict(doc), registry, overrides=overrides)
    if base.dataset is None:
        raise ConfigError("grid: no dataset given (--dataset or [dataset] name)")
    tasks = getattr(base.dataset.options, "tasks", None)
    if not tasks:  # a dataset without a task option: its split knows
        tasks = [t.name for t in build_dataset(base, registry, base.train.eval_split).tasks]
    plan = []
    for weights in weight_grid(spec, tasks):
        runs = []
        for seed in seeds:
            point = {**doc, "balancer": {"name": "fixed", "weights": weights}, "seed": seed}
            config = resolve_config(point, registry, overrides=overrides)
            runs.append((config, root / f"{GridPoint(weights, ()).label}_seed{seed}"))
        plan.append((weights, runs))  # everything resolved before any training
    points = []
    for weights, runs in plan:
        for config, out in runs:
            if (out / "metrics.json").is_file():
                print(f"grid: {out.name} finished earlier, skipped", file=sys.stderr)
                continue
            resume = (out / "checkpoints" / "last.pt").is_file()
            print(f"grid: {'resuming' if resume else 'training'} {out.name}", file=sys.stderr)
            train(config, out, resume=resume, registry=registry)
        points.append(GridPoint(weights, tuple(out for _, out in runs)))
    return points


def _score(record: Mapping[str, Any], reference: Mapping[str, Any] | None) -> float:
    if reference is None:
        delta = record.get("delta") or {}
        return float(delta.get("per_task", math.nan))
    tasks = record["tasks"]
    return delta_per_task(
        record["metrics"],
        reference["metrics"],
        {t: {tasks[t]["primary"]: tasks[t]["higher_is_better"]} for t in tasks},
        primary={t: tasks[t]["primary"] for t in tasks},
    )


def best_point(points: Sequence[GridPoint]) -> tuple[GridPoint, list[tuple[GridPoint, float]], str]:
    """The point with the highest mean Δ_MTL over its seeds, every point's score, and what Δ
    is measured against (``baselines`` or ``equal weights``)."""
    records = {
        run: json.loads((run / "metrics.json").read_text()) for p in points for run in p.runs
    }
    with_baselines = all(r.get("delta") for r in records.values())
    by_seed = {records[run]["seed"]: records[run] for run in points[0].runs}  # the ones point
    scores = []
    for point in points:
        values = [
            _score(records[run], None if with_baselines else by_seed[records[run]["seed"]])
            for run in point.runs
        ]
        scores.append((point, sum(values) / len(values)))
    best = max(scores, key=lambda s: -math.inf if math.isnan(s[1]) else s[1])[0]
    return best, scores, "baselines" if with_baselines else "equal weights"
