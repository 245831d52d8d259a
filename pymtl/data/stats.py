"""``pymtl data stats``: class frequencies and value ranges per task, over a split [pymtl].

Statistics are accumulated over every sample (never averaged per batch): label maps report the
pixel fraction of each class and of ignored pixels; regression targets (depth, image-level
values) their valid range, mean and standard deviation; normals the mean length of the valid
vectors; binary maps the positive fraction; image-level classes their frequencies. Tasks with
missing labels also report the labelled fraction.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import attrs
import torch
from tqdm import tqdm

from pymtl.data.base import Dataset
from pymtl.tasks.base import (
    ClassificationTask,
    MultiLabelTask,
    NormalsTask,
    SegmentationTask,
    Task,
    _BinaryDenseTask,
    vector_norm,
)

__all__ = ["TaskStats", "dataset_stats", "format_stats"]


@attrs.define
class TaskStats:
    """Running sums for one task (float64)."""

    task: Task
    samples: int = 0
    labelled: int = 0
    elements: int = 0
    valid: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf
    counts: torch.Tensor | None = None

    def add(self, target: torch.Tensor, labelled: bool) -> None:
        self.samples += 1
        if not labelled:
            return
        self.labelled += 1
        t = target.detach().cpu()
        valid = self.task.valid_mask(t.unsqueeze(0))[0]
        self.elements += valid.numel()
        self.valid += int(valid.sum())
        if isinstance(self.task, (SegmentationTask, ClassificationTask)):
            labels = t[valid].long().flatten()
            n = self.task.num_classes
            if labels.numel() and (labels.min() < 0 or labels.max() >= n):
                raise ValueError(
                    f"stats: task {self.task.name!r} has labels outside [0, {n}) "
                    f"(got {int(labels.min())}..{int(labels.max())})"
                )
            counts = torch.bincount(labels, minlength=n).double()
            self.counts = counts if self.counts is None else self.counts + counts
            return
        values = t.double()
        if isinstance(self.task, NormalsTask):  # one value per pixel: the vector's length
            values, valid = vector_norm(values, dim=0), valid[0]
        elif isinstance(self.task, MultiLabelTask):
            counts = torch.where(valid, values, 0).double()
            self.counts = counts if self.counts is None else self.counts + counts
        v = values[valid.expand_as(values)] if valid.dim() == values.dim() else values[valid]
        if v.numel():
            self.total += float(v.sum())
            self.total_sq += float((v * v).sum())
            self.minimum = min(self.minimum, float(v.min()))
            self.maximum = max(self.maximum, float(v.max()))

    def summary(self) -> str:
        parts = []
        if self.labelled < self.samples:
            parts.append(f"labelled {self.labelled}/{self.samples}")
        if self.task.dense and self.elements:
            parts.append(f"valid {self.valid / self.elements:.1%}")
        if self.counts is not None and not isinstance(self.task, MultiLabelTask):
            freq = self.counts / max(float(self.counts.sum()), 1.0)
            names = getattr(self.task, "class_names", ()) or [str(i) for i in range(len(freq))]
            parts.append(
                "classes "
                + " ".join(f"{n}:{f:.1%}" for n, f in zip(names, freq.tolist(), strict=False))
            )
            return "; ".join(parts)
        if self.valid and self.minimum <= self.maximum:
            mean = self.total / self.valid
            std = math.sqrt(max(self.total_sq / self.valid - mean * mean, 0.0))
            label = "value"
            if isinstance(self.task, NormalsTask):
                label = "length"
            elif isinstance(self.task, _BinaryDenseTask):
                label = "positive fraction"
            parts.append(
                f"{label} mean {mean:.4g} std {std:.4g} "
                f"range [{self.minimum:.4g}, {self.maximum:.4g}]"
            )
        if isinstance(self.task, MultiLabelTask) and self.counts is not None:
            names = self.task.label_names or [str(i) for i in range(len(self.counts))]
            rate = (self.counts / max(self.labelled, 1)).tolist()
            parts.append(
                "positive rate "
                + " ".join(f"{n}:{r:.1%}" for n, r in zip(names, rate, strict=False))
            )
        return "; ".join(parts) or "no labelled sample"


def dataset_stats(
    dataset: Dataset, *, limit: int | None = None, progress: bool = True
) -> list[TaskStats]:
    """Statistics of every task over the first ``limit`` samples (all when None)."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    stats = [TaskStats(task) for task in dataset.tasks]
    indices: Iterable[int] = range(n)
    if progress:
        indices = tqdm(indices, desc=f"stats {dataset.name}", unit="img", leave=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # per-sample tensors are tiny: thread wake-ups cost ~10x the work
    try:
        for i in indices:
            item = dataset[i]
            for s in stats:
                labelled = bool(item.get(f"{s.task.name}.mask", torch.tensor(True)))
                s.add(item[s.task.name], labelled)
    finally:
        torch.set_num_threads(threads)
    return stats


def format_stats(dataset: Dataset, stats: list[TaskStats]) -> str:
    """A plain-text report: one block per task."""
    lines = [f"dataset {dataset.name!r}: {len(dataset)} samples, {len(stats)} tasks"]
    for s in stats:
        t = s.task
        lines.append(f"  {t.name} ({t.kind}, {t.channels} ch, primary {t.primary}): {s.summary()}")
    return "\n".join(lines)
