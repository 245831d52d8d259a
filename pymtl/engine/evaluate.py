"""Evaluation: task metrics over a whole split, as sufficient statistics [pymtl]."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn
from tqdm import tqdm

from pymtl.tasks.base import Task

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[Mapping[str, Tensor]],
    tasks: Sequence[Task],
    *,
    device: torch.device,
    progress: bool = False,
    total: int | None = None,
) -> dict[str, dict[str, float]]:
    """Metrics of ``model`` over ``batches``: ``{task: {metric: value}}``."""
    was_training = model.training
    model.eval()
    metrics = {t.name: t.metric() for t in tasks}
    it = tqdm(batches, total=total, desc="eval", unit="batch", leave=False) if progress else batches
    try:
        for batch in it:
            batch = {k: v.to(device) for k, v in batch.items()}
            outputs = model(batch["image"])
            for t in tasks:
                labelled = batch.get(f"{t.name}.mask")
                metrics[t.name].update(outputs[t.name].float(), batch[t.name], labelled)
    finally:
        model.train(was_training)
    return {name: m.compute() for name, m in metrics.items()}
