"""The end of a run: ``metrics.json`` (final metrics, Δ_MTL, throughput) and plots [pymtl]."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pymtl
from pymtl.config import RunConfig
from pymtl.engine import baselines, rundir
from pymtl.evaluation import delta_per_metric, delta_per_task, delta_task_then_metric
from pymtl.plugins import Registry
from pymtl.tasks.base import Task

__all__ = ["delta_against_baselines", "results_table", "summarize"]


def delta_against_baselines(
    config: RunConfig,
    registry: Registry,
    tasks: Sequence[Task],
    metrics: dict[str, dict[str, float]],
) -> dict[str, Any] | None:
    """Δ_MTL of ``metrics`` against the stored baselines of this setting (None: none stored)."""
    path = baselines.baseline_file(config, registry)
    records = baselines.load_baselines(path)
    if not records or config.arch is None or config.arch.name == "stl":
        return None
    base = baselines.mean_results(records)
    missing = [t.name for t in tasks if t.name not in base]
    if missing:
        return {"error": f"baseline {path} lacks task(s) {', '.join(missing)}"}
    directions = {t.name: t.metric().higher_is_better for t in tasks}
    primary = {t.name: t.primary for t in tasks}
    chosen = {t.name: list(base[t.name]) for t in tasks}
    try:
        deltas = {
            "per_task": delta_per_task(metrics, base, directions, primary=primary),
            "per_metric": delta_per_metric(metrics, base, directions, metrics=chosen),
            "task_then_metric": delta_task_then_metric(metrics, base, directions, metrics=chosen),
        }
    except ValueError as exc:  # e.g. a baseline metric of 0: no relative change exists
        return {"error": f"no Δ_MTL against {path}: {exc}"}
    return {
        **deltas,
        "baseline": {
            "source": str(path),
            "seeds": [r.seed for r in records],
            "metrics": {t.name: base[t.name] for t in tasks},
        },
    }


def summarize(
    config: RunConfig,
    registry: Registry,
    out: Path,
    tasks: Sequence[Task],
    digest: str,
    *,
    wall: float,
    images: int,
) -> dict[str, Any]:
    """Write ``metrics.json`` from the last evaluation and the plots; return the record."""
    lines = (out / "metrics.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])
    metrics = {
        task: {k: (float("nan") if v is None else v) for k, v in values.items()}
        for task, values in last["metrics"].items()
    }
    record = {
        "run": out.name,
        "dataset": config.dataset.name if config.dataset else None,
        "arch": config.arch.name if config.arch else None,
        "balancer": config.balancer.name,
        "distill": config.distill.name if config.distill else None,
        "seed": config.seed,
        "split": last["split"],
        "epochs": last["epoch"],
        "wall_time_s": wall,
        "images_per_s": images / max(wall, 1e-9),
        "pymtl_version": pymtl.__version__,
        "config_hash": digest,
        "tasks": {
            t.name: {"primary": t.primary, "higher_is_better": t.metric().higher_is_better}
            for t in tasks
        },
        "metrics": metrics,
        "delta": delta_against_baselines(config, registry, tasks, metrics),
    }
    rundir.write_json(out / "metrics.json", record)
    _plots(out)
    return record


def _plots(out: Path) -> None:
    try:
        from pymtl.reporting import plot_run
    except ImportError as exc:  # reporting is part of pymtl; a broken install should be loud
        print(f"warning: plots not written ({exc})", file=sys.stderr)
        return
    plot_run(out)


def results_table(record: dict[str, Any]) -> str:
    """Per-task results as an aligned text table (primary metric first, ↑/↓ directions)."""
    rows = [("task", "metric", "value", "")]
    for task, info in record["tasks"].items():
        order = [info["primary"]] + [m for m in record["metrics"][task] if m != info["primary"]]
        for i, m in enumerate(order):
            arrow = "↑" if info["higher_is_better"].get(m, True) else "↓"
            value = record["metrics"][task][m]
            rows.append(
                (
                    task if i == 0 else "",
                    f"{m} {arrow}",
                    f"{value:.4f}",
                    "primary" if i == 0 else "",
                )
            )
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    text = "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )
    delta = record.get("delta")
    if delta and "error" not in delta:
        text += (
            f"\nΔ_MTL per-task {delta['per_task']:+.2f}% (↑), per-metric "
            f"{delta['per_metric']:+.2f}% (↓), task-then-metric "
            f"{delta['task_then_metric']:+.2f}% (↑) vs {delta['baseline']['source']} "
            f"(seeds {delta['baseline']['seeds']})"
        )
    elif delta:
        text += f"\nΔ_MTL not computed: {delta['error']}"
    else:
        text += "\nΔ_MTL: no stored single-task baselines for this setting (run `pymtl baselines`)"
    return text
