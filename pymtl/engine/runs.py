"""Working with finished runs: re-evaluation and single-task baselines [pymtl]."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import torch

from pymtl.config import ArchSection, BalancerSection, RunConfig, load_config
from pymtl.engine import baselines, build, rundir
from pymtl.engine.checkpoint import load_checkpoint
from pymtl.engine.data import epoch_batches, loader
from pymtl.engine.evaluate import evaluate
from pymtl.engine.loop import train
from pymtl.engine.summary import delta_against_baselines
from pymtl.errors import PymtlError
from pymtl.evaluation import BaselineResult
from pymtl.plugins import Registry

__all__ = ["evaluate_run", "train_baselines"]


def evaluate_run(
    run: Path, registry: Registry, *, split: str = "test", progress: bool = False
) -> dict[str, Any]:
    """Evaluate a run's last checkpoint on ``split``; writes ``RUN/eval-<split>.json``."""
    config_path = run / "config.toml"
    if not config_path.is_file():
        raise PymtlError(f"{str(run)!r} is not a run directory (no config.toml)")
    config = load_config(config_path, registry)
    state = load_checkpoint(
        run / "checkpoints" / "last.pt", config_hash=build.config_hash(config, registry)
    )
    dataset = build.build_dataset(config, registry, split)
    model = build.build_model(config, registry, dataset).to(torch.device(config.device))
    model.load_state_dict(state["model"])
    t = config.train
    batches = epoch_batches(
        len(dataset),
        t.eval_batch_size or t.batch_size,
        seed=0,
        epoch=0,
        shuffle=False,
        drop_last=False,
    )
    metrics = evaluate(
        model,
        loader(dataset, batches),
        dataset.tasks,
        device=torch.device(config.device),
        progress=progress,
        total=len(batches),
    )
    record = {
        "run": run.name,
        "dataset": config.dataset.name if config.dataset else None,
        "arch": config.arch.name if config.arch else None,
        "balancer": config.balancer.name,
        "seed": config.seed,
        "split": split,
        "epochs": state["epoch"],
        "tasks": {
            t.name: {"primary": t.primary, "higher_is_better": t.metric().higher_is_better}
            for t in dataset.tasks
        },
        "metrics": metrics,
        "delta": delta_against_baselines(config, registry, dataset.tasks, metrics),
    }
    rundir.write_json(run / f"eval-{split}.json", record)
    return record


def baseline_config(config: RunConfig) -> RunConfig:
    """``config`` turned into its single-task baseline: ``stl`` with the same backbone and
    heads, equal weights."""
    from pymtl.architectures.stl import SingleTaskConfig

    options = SingleTaskConfig()
    if config.arch is not None and config.arch.options is not None:
        shared = {f.name for f in attrs.fields(SingleTaskConfig)}
        given = {
            f.name: getattr(config.arch.options, f.name)
            for f in attrs.fields(type(config.arch.options))
            if f.name in shared
        }
        options = SingleTaskConfig(**given)
    from pymtl.balancers.ew import EqualWeightsConfig

    return attrs.evolve(
        config,
        arch=ArchSection(name="stl", options=options),
        balancer=BalancerSection(name="ew", options=EqualWeightsConfig()),
        distill=None,
    )


def train_baselines(
    config: RunConfig, registry: Registry, seeds: Sequence[int], root: Path
) -> Path:
    """Train ``stl`` for each seed (finished seeds are skipped) and store the results."""
    base = baseline_config(config)
    path = baselines.baseline_file(base, registry)
    for seed in seeds:
        cfg = attrs.evolve(base, seed=seed)
        assert cfg.dataset is not None
        out = root / f"{cfg.dataset.name}-{baselines.baseline_key(cfg, registry)}-seed{seed}"
        summary_path = out / "metrics.json"
        if summary_path.is_file():
            print(f"baseline seed {seed}: already trained in {out}", file=sys.stderr)
            record = json.loads(summary_path.read_text())
        else:
            resume = (out / "checkpoints" / "last.pt").is_file()
            record = train(cfg, out, resume=resume, registry=registry)
        metrics = {
            t: {k: (float("nan") if v is None else v) for k, v in m.items()}
            for t, m in record["metrics"].items()
        }
        path = baselines.store_baseline(
            cfg,
            registry,
            BaselineResult(
                metrics=metrics,
                seed=seed,
                config_hash=build.config_hash(cfg, registry),
                source=str(out.resolve()),  # distillation finds its teachers there
            ),
        )
    return path
