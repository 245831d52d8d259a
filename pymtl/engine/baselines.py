"""The single-task baseline store [pymtl].

``pymtl baselines`` trains ``stl`` for a dataset configuration and stores each seed's per-task
results, keyed by the dataset configuration (minus its split) and the backbone, in
``$PYMTL_HOME/baselines/<dataset>-<key>.json`` (``PYMTL_HOME`` defaults to ``~/.pymtl``).
Every later run of the same setting finds them and reports Δ_MTL against their mean over
seeds, naming the file it used.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from pymtl.config import RunConfig, to_document
from pymtl.evaluation import BaselineResult
from pymtl.plugins import Registry

__all__ = ["baseline_file", "baseline_key", "load_baselines", "mean_results", "store_baseline"]


def store_dir() -> Path:
    return Path(os.environ.get("PYMTL_HOME", Path.home() / ".pymtl")) / "baselines"


def _setting(config: RunConfig, registry: Registry) -> dict[str, Any]:
    doc = to_document(config, registry)
    dataset = {k: v for k, v in doc.get("dataset", {}).items() if k != "split"}
    backbone = doc.get("arch", {}).get("backbone")
    return {"dataset": dataset, "backbone": backbone}


def baseline_key(config: RunConfig, registry: Registry) -> str:
    """Hash of the dataset options (without ``split``) and the architecture's backbone."""
    blob = json.dumps(_setting(config, registry), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def baseline_file(config: RunConfig, registry: Registry) -> Path:
    assert config.dataset is not None
    return store_dir() / f"{config.dataset.name}-{baseline_key(config, registry)}.json"


def load_baselines(path: Path) -> list[BaselineResult]:
    """The records of one store file (empty when it does not exist)."""
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
        return [BaselineResult.from_dict(r, where=str(path)) for r in data["results"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"baseline store {str(path)!r} is corrupt: {exc}") from None


def store_baseline(config: RunConfig, registry: Registry, record: BaselineResult) -> Path:
    """Add (or replace, same seed) one seed's results in the store; returns the file."""
    path = baseline_file(config, registry)
    records = {r.seed: r for r in load_baselines(path)}
    records[record.seed] = record
    payload = {
        "setting": _setting(config, registry),
        "results": [records[s].to_dict() for s in sorted(records)],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(path)
    return path


def mean_results(records: list[BaselineResult]) -> dict[str, dict[str, float]]:
    """Per-task, per-metric mean over the stored seeds (NaN-aware)."""
    out: dict[str, dict[str, float]] = {}
    for task in records[0].metrics:
        out[task] = {}
        for metric in records[0].metrics[task]:
            values = [
                r.metrics[task][metric] for r in records if math.isfinite(r.metrics[task][metric])
            ]
            out[task][metric] = sum(values) / len(values) if values else math.nan
    return out
