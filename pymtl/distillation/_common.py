"""Helpers shared by the distillation losses [pymtl]: option checks, task families, masks.

* :func:`number` / :func:`weights_validator` / :func:`task_weights`: validation of the
  ``Config`` options every loss has (``weights``: λ_t per task name, default 1).
* :func:`family`: how a loss reads a task's output: ``"categorical"`` (class logits on dim 1:
  segmentation, parts, classification), ``"binary"`` (independent logits: edges, saliency,
  multi-label) or ``"regression"`` (values: depth, normals, dense and image-level regression).
* :func:`valid_mask`, :func:`masked_mean`: the elements a task's loss averages over (valid
  target elements of the labelled samples), as in :meth:`pymtl.tasks.Task.loss`.
* :func:`prediction`: an output in the target's space (probabilities, unit normals, values).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import torch
from torch import Tensor

from pymtl.errors import ConfigError
from pymtl.tasks import (
    ClassificationTask,
    DenseRegressionTask,
    DepthTask,
    EdgeTask,
    MultiLabelTask,
    NormalsTask,
    RegressionTask,
    SaliencyTask,
    SegmentationTask,
    Task,
)

__all__ = [
    "check_same_shape",
    "family",
    "labelled_mask",
    "masked_mean",
    "number",
    "prediction",
    "task_weights",
    "valid_mask",
    "weighted",
    "weights_validator",
]

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]

_FAMILIES: tuple[tuple[str, tuple[type[Task], ...]], ...] = (
    ("categorical", (SegmentationTask, ClassificationTask)),
    ("binary", (EdgeTask, SaliencyTask, MultiLabelTask)),
    ("regression", (DepthTask, NormalsTask, DenseRegressionTask, RegressionTask)),
)


def number(loss: str, *, low: float, high: float = math.inf, open_low: bool = False) -> Validator:
    """attrs validator: a finite real number in ``[low, high]`` (``(low, high]`` if
    ``open_low``); ``loss`` names the distillation loss in the message."""
    interval = f"{'(' if open_low else '['}{low:g}, {high:g}]"

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(
                f"distillation loss {loss!r}: {attribute.name!r} must be a number (got {value!r})"
            )
        inside = (value > low if open_low else value >= low) and value <= high
        if not (math.isfinite(value) and inside):
            raise ValueError(
                f"distillation loss {loss!r}: {attribute.name!r} must be finite and in "
                f"{interval} (got {value!r})"
            )

    return check


def weights_validator(loss: str) -> Validator:
    """attrs validator of ``weights``: a mapping of task name to a finite number >= 0."""

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, Mapping):
            raise TypeError(
                f"distillation loss {loss!r}: 'weights' must be a table of task name -> "
                f"number (got {value!r})"
            )
        for key, weight in value.items():
            ok = not isinstance(weight, bool) and isinstance(weight, (int, float))
            if not (isinstance(key, str) and ok and math.isfinite(weight) and weight >= 0):
                raise ValueError(
                    f"distillation loss {loss!r}: weight {key!r} must be a finite number >= 0 "
                    f"(got {weight!r})"
                )

    return check


def task_weights(
    loss: str, weights: Mapping[str, float], tasks: Sequence[str]
) -> tuple[float, ...]:
    """λ_t in task order (1.0 for tasks not in ``weights``); unknown names are an error."""
    unknown = sorted(set(weights) - set(tasks))
    if unknown:
        raise ConfigError(
            f"distillation loss {loss!r}: weights given for unknown task(s) "
            f"{', '.join(unknown)}; expected a subset of {', '.join(tasks)}"
        )
    return tuple(float(weights.get(t, 1.0)) for t in tasks)


def family(task: Task, loss: str) -> str:
    """``"categorical"``, ``"binary"`` or ``"regression"`` (see the module docstring)."""
    for name, classes in _FAMILIES:
        if isinstance(task, classes):
            return name
    known = ", ".join(c.__name__ for _, classes in _FAMILIES for c in classes)
    raise ConfigError(
        f"distillation loss {loss!r}: task {task.name!r} of kind {task.kind!r} "
        f"({type(task).__qualname__}) is not supported; expected one of {known}"
    )


def labelled_mask(task: Task, batch: Mapping[str, Tensor], like: Tensor) -> Tensor:
    """Bool mask, broadcastable to ``like`` ([B, ...]), of the samples labelled for ``task``
    (``batch["<task>.mask"]``; all of them when absent)."""
    labelled = batch.get(f"{task.name}.mask")
    if labelled is None:
        return torch.ones((), dtype=torch.bool, device=like.device)
    return labelled.view(-1, *([1] * (like.dim() - 1))).to(device=like.device, dtype=torch.bool)


def valid_mask(task: Task, batch: Mapping[str, Tensor]) -> Tensor:
    """Bool mask of the elements ``task``'s loss counts: valid target elements of the samples
    labelled for it, as in :meth:`pymtl.tasks.Task.loss`."""
    mask = task.valid_mask(batch[task.name])
    return mask & labelled_mask(task, batch, mask)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over the elements where ``mask`` (broadcast to ``values``) is True;
    0, still attached to the graph, when there are none."""
    weights = mask.to(values.dtype).expand_as(values)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


def prediction(task: Task, output: Tensor, loss: str) -> Tensor:
    """``output`` in the target's space: class probabilities (softmax over dim 1),
    probabilities of independent binary labels (sigmoid), unit normals, or the values."""
    kind = family(task, loss)
    if kind == "categorical":
        return torch.softmax(output, dim=1)
    if kind == "binary":
        return torch.sigmoid(output)
    if isinstance(task, NormalsTask):  # the task's loss normalises predictions per pixel
        norm = (output * output).sum(dim=1, keepdim=True).sqrt()
        return output / norm.clamp_min(1e-12)
    return output


def check_same_shape(student: Tensor, teacher: Tensor, *, loss: str, where: str) -> None:
    """Refuse a student/teacher pair of different shapes, naming both and ``where``."""
    if student.shape != teacher.shape:
        raise ValueError(
            f"distillation loss {loss!r}: student and teacher shapes differ at {where}: "
            f"student {tuple(student.shape)}, teacher {tuple(teacher.shape)}; expected equal"
        )


def weighted(terms: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """[T] ``λ_t · term_t`` stacked in task order."""
    return torch.stack([w * d for w, d in zip(weights, terms, strict=True)])
