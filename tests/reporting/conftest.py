"""Run directories written by hand in the documented format (config.toml, metrics.jsonl,
metrics.json), for the reporting tests."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import tomli_w

TASKS = {
    "semseg": {"primary": "miou", "higher_is_better": {"miou": True, "pixel_acc": True}},
    "depth": {"primary": "rmse", "higher_is_better": {"rmse": False, "abs_err": False}},
}


def history_record(epoch: int, *, split: str = "val", scale: float = 1.0) -> dict[str, Any]:
    """One metrics.jsonl record whose numbers move with ``epoch``."""
    return {
        "epoch": epoch,
        "step": 32 * epoch,
        "time_s": 10.0 * epoch,
        "split": split,
        "train": {
            "loss": {"semseg": 2.0 / (epoch + 1), "depth": scale * 0.5 / (epoch + 1)},
            "weights": {"semseg": 1.0 + 0.1 * epoch, "depth": 1.0 - 0.1 * epoch},
            "total_loss": 2.5 / (epoch + 1),
            "lr": 0.001,
            "images_per_s": 100.0,
        },
        "metrics": {
            "semseg": {"miou": 0.2 + 0.05 * epoch, "pixel_acc": 0.6 + 0.03 * epoch},
            "depth": {"rmse": 30.0 - epoch, "abs_err": 1.0 - 0.05 * epoch},
        },
    }


def write_run(
    root: Path,
    name: str,
    *,
    seed: int = 0,
    method: tuple[str, str, str | None] = ("hps", "ew", None),
    dataset: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Mapping[str, float | None]] | None = None,
    delta: Mapping[str, Any] | None = None,
    history: list[dict[str, Any]] | None = None,
    tasks: Mapping[str, Any] = TASKS,
    balancer_options: Mapping[str, Any] | None = None,
    summary: bool = True,
    split: str = "val",
) -> Path:
    """Write RUN = root/name and return it."""
    run = root / name
    run.mkdir(parents=True)
    arch, balancer, distill = method
    config: dict[str, Any] = {
        "seed": seed,
        "device": "cpu",
        "dataset": dict(dataset or {"name": "synthetic", "image_size": 32, "root": "/data"}),
        "arch": {"name": arch},
        "balancer": {"name": balancer, **(balancer_options or {})},
        "train": {"epochs": 3, "batch_size": 8, "lr": 0.001, "weight_decay": 0.0},
    }
    if distill is not None:
        config["distill"] = {"name": distill}
    (run / "config.toml").write_text(tomli_w.dumps(config))
    records = history if history is not None else [history_record(e) for e in range(3)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if summary:
        doc = {
            "run": name,
            "dataset": config["dataset"]["name"],
            "arch": arch,
            "balancer": balancer,
            "distill": distill,
            "seed": seed,
            "split": split,
            "epochs": 3,
            "wall_time_s": 1.0,
            "images_per_s": 100.0,
            "pymtl_version": "0.1.0",
            "config_hash": "ab12",
            "tasks": dict(tasks),
            "metrics": dict(metrics or history_record(2)["metrics"]),
            "delta": None if delta is None else dict(delta),
        }
        (run / "metrics.json").write_text(json.dumps(doc))
    return run


def delta_block(
    per_task: float | None,
    per_metric: float = 0.0,
    task_then_metric: float = 0.0,
    source: str = "baselines/synthetic-ab12.json",
) -> dict[str, Any]:
    return {
        "per_task": per_task,
        "per_metric": per_metric,
        "task_then_metric": task_then_metric,
        "baseline": {"source": source, "seeds": [0, 1, 2], "metrics": {}},
    }


class Fabricate:
    """What the reporting tests use: ``fab.run(name, **options)`` writes a run under the
    test's tmp_path; ``fab.record`` and ``fab.delta`` build its parts."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.record = history_record
        self.delta = delta_block

    def run(self, name: str, **options: Any) -> Path:
        return write_run(self.root, name, **options)


@pytest.fixture
def fab(tmp_path: Path) -> Fabricate:
    return Fabricate(tmp_path)


# hps+ew on seeds 0, 1, 2 and mtan+ew on seeds 0, 1 (given in mixed order, mtan first):
#   hps  miou 0.40 0.42 0.44 -> 0.42 ± 0.02     rmse 0.9 1.0 1.1 -> 1.0 ± 0.1
#        Δ per_task 1 2 4 -> 7/3 ± sqrt(7/3)  per_metric -1 -2 -4   task_then_metric 0.5 (×3)
#   mtan miou 0.50 0.46 -> 0.48 ± 0.02·√2      rmse 0.8 1.0 -> 0.9 ± 0.1·√2
#        Δ per_task 3 5 -> 4 ± √2              per_metric -3 -5     task_then_metric 1 2
SCENARIO = [
    ("mtan-ew-0", ("mtan", "ew", None), 0, 0.50, 0.8, (3.0, -3.0, 1.0)),
    ("hps-ew-0", ("hps", "ew", None), 0, 0.40, 0.9, (1.0, -1.0, 0.5)),
    ("hps-ew-1", ("hps", "ew", None), 1, 0.42, 1.0, (2.0, -2.0, 0.5)),
    ("mtan-ew-1", ("mtan", "ew", None), 1, 0.46, 1.0, (5.0, -5.0, 2.0)),
    ("hps-ew-2", ("hps", "ew", None), 2, 0.44, 1.1, (4.0, -4.0, 0.5)),
]


def scenario_metrics(miou: float, rmse: float) -> dict[str, dict[str, float]]:
    return {"semseg": {"miou": miou, "pixel_acc": 0.8}, "depth": {"rmse": rmse, "abs_err": 0.5}}


@pytest.fixture
def scenario(fab: Fabricate) -> list[Path]:
    """The runs of SCENARIO, written, in that order."""
    return [
        fab.run(
            name,
            method=method,
            seed=seed,
            metrics=scenario_metrics(miou, rmse),
            delta=fab.delta(*delta),
        )
        for name, method, seed, miou, rmse, delta in SCENARIO
    ]
