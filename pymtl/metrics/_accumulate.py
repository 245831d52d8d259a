"""Shared accumulation for pymtl's metrics: pooled statistics, per-image and per-batch means.

Reference: SPEC-data §2.9 [pymtl], §2.1–2.3 (the MTAN per-batch averaging) [C:lorenmt/mtan].

A metric here describes one batch by *sufficient statistics* (confusion counts, error sums,
histograms) with a leading row axis: one row per image, or a single row for the batch pooled.
Three ways of reducing them are offered, and every metric says which it supports:

* ``aggregation="pixel"`` (default): the statistics are summed over the whole split and the
  values are computed once from the sums. Independent of batch size and order.
* ``aggregation="image"``: per-image quantities are averaged over images (ASTMT / Eigen
  style), then turned into the values: for most metrics the per-image values themselves; for
  saliency the mean precision and recall give F, as in MTL-PyTorch. Images where a quantity
  is undefined (NaN) are left out of its mean. Also independent of batch size and order.
* ``compat="mtan"``: each batch's values are computed on that batch alone (with the chosen
  aggregation inside the batch) and the batch values are averaged with equal weight, as the
  MTAN, CAGrad and Nash-MTL trainers do. **This depends on the batch size**; it exists only to
  compare with published tables. A batch whose value is undefined is left out of that mean.
"""

from __future__ import annotations

import itertools
import math
from abc import abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from pymtl.metrics.base import Metric

__all__ = [
    "COMPAT_MODES",
    "SplitMetric",
    "check_binary_map",
    "check_thresholds",
    "safe_div",
    "shape_error",
]

COMPAT_MODES = (None, "mtan")
"""Accepted values of ``compat``: None (exact statistics) or ``"mtan"`` (per-batch means)."""


class SplitMetric(Metric):
    """A :class:`Metric` built from per-row statistics, reduced as the class docstring says [pymtl].

    Subclasses implement ``_validate``, ``_statistics`` and ``_terms``, and may override
    ``_finish``; they set ``higher_is_better`` and ``aggregations`` (the modes they support).
    """

    aggregations: ClassVar[tuple[str, ...]] = ("pixel",)
    combine: ClassVar[dict[str, str]] = {}
    """Statistics merged by ``"min"`` or ``"max"`` instead of summed, by key."""

    def __init__(self, *, aggregation: str = "pixel", compat: str | None = None) -> None:
        name = type(self).__name__
        if aggregation not in self.aggregations:
            raise ValueError(
                f"{name}: aggregation must be one of {', '.join(map(repr, self.aggregations))} "
                f"(got {aggregation!r})"
            )
        if compat not in COMPAT_MODES:
            raise ValueError(f"{name}: compat must be None or 'mtan' (got {compat!r})")
        self.aggregation = aggregation
        self.compat = compat
        self.reset()

    # -- what subclasses provide -----------------------------------------------------------

    @abstractmethod
    def _validate(self, pred: Tensor, target: Tensor) -> None:
        """Raise ``ValueError`` naming the metric if shapes, dtypes or values are not usable."""

    @abstractmethod
    def _statistics(self, pred: Tensor, target: Tensor, *, per_image: bool) -> dict[str, Tensor]:
        """Sufficient statistics of the samples: leading dim B (per_image) or 1 (pooled)."""

    @abstractmethod
    def _terms(self, stats: dict[str, Tensor], *, per_image: bool) -> dict[str, Tensor]:
        """Per-row quantities [N, ...] (float64, NaN where undefined) that ``_finish`` reduces."""

    def _finish(self, terms: dict[str, Tensor]) -> dict[str, Tensor]:
        """The metric values (0-dim tensors) from the terms of one row or their mean over rows."""
        return terms

    # -- the Metric contract ---------------------------------------------------------------

    def reset(self) -> None:
        self._sums: dict[str, Tensor] = {}
        self._counts: dict[str, Tensor] = {}

    def update(self, pred: Tensor, target: Tensor, labelled: Tensor | None = None) -> None:
        name = type(self).__name__
        if pred.shape[:1] != target.shape[:1] or pred.dim() == 0:
            raise ValueError(
                f"{name}.update: pred and target must share the batch dimension "
                f"(got pred {tuple(pred.shape)}, target {tuple(target.shape)})"
            )
        self._validate(pred, target)
        if labelled is not None:
            keep = _labelled_rows(labelled, pred.shape[0], name).to(pred.device)
            pred, target = pred[keep], target[keep.to(target.device)]
        if pred.shape[0] == 0:
            return
        with torch.no_grad():
            self._accumulate(pred.detach(), target.detach())

    def compute(self) -> dict[str, float]:
        if not self._sums:
            return dict.fromkeys(self.higher_is_better, math.nan)
        if self.aggregation == "pixel" and self.compat is None:
            values = self._finish(
                {k: v[0] for k, v in self._terms(self._sums, per_image=False).items()}
            )
        else:
            values = {k: self._sums[k] / self._counts[k] for k in self._sums}
            values = self._finish(values) if self.compat is None else values
        return {key: float(values[key]) for key in self.higher_is_better}

    # -- internals -------------------------------------------------------------------------

    def _accumulate(self, pred: Tensor, target: Tensor) -> None:
        per_image = self.aggregation == "image"
        stats = self._statistics(pred, target, per_image=per_image)
        if not per_image and self.compat is None:
            _add(self._sums, stats, self.combine)
            return
        terms = self._terms(stats, per_image=per_image)
        if self.compat is None:
            _add(self._sums, {k: torch.nansum(v, dim=0) for k, v in terms.items()})
            _add(self._counts, {k: (~torch.isnan(v)).sum(dim=0) for k, v in terms.items()})
            return
        batch = {k: _nanmean_rows(v) for k, v in terms.items()}
        values = {k: v.to(torch.float64) for k, v in self._finish(batch).items()}
        _add(self._sums, {k: torch.nan_to_num(v, nan=0.0) for k, v in values.items()})
        _add(self._counts, {k: (~torch.isnan(v)).to(torch.int64) for k, v in values.items()})


def _nanmean_rows(values: Tensor) -> Tensor:
    """Mean over the leading axis, leaving NaN out (NaN where every row is NaN); no warnings."""
    counts = (~torch.isnan(values)).sum(dim=0)
    return torch.nansum(values, dim=0) / counts


def _add(
    into: dict[str, Tensor], new: dict[str, Tensor], combine: dict[str, str] | None = None
) -> None:
    """Merge ``new`` into ``into``: summed, or by min/max for the keys ``combine`` names."""
    merge = {"min": torch.minimum, "max": torch.maximum}
    for key, value in new.items():
        old = into.get(key)
        if old is None:
            into[key] = value.clone()
        else:
            into[key] = merge.get((combine or {}).get(key, ""), torch.add)(
                old, value.to(old.device)
            )


def _labelled_rows(labelled: Tensor, batch: int, name: str) -> Tensor:
    """``labelled`` checked to be a [B] bool tensor."""
    if labelled.shape != (batch,) or labelled.dtype != torch.bool:
        raise ValueError(
            f"{name}.update: labelled must be a bool tensor of shape ({batch},) "
            f"(got {labelled.dtype}, shape {tuple(labelled.shape)})"
        )
    return labelled


def shape_error(name: str, arg: str, expected: str, got: Tensor) -> ValueError:
    """The one error shape for a tensor argument that does not fit."""
    return ValueError(
        f"{name}.update: {arg} must be {expected} (got {got.dtype}, shape {tuple(got.shape)})"
    )


def safe_div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` in float64 with NaN where ``den`` is 0 (torch does not warn on 0/0)."""
    num, den = num.to(torch.float64), den.to(torch.float64)
    return torch.where(den != 0, num / torch.where(den != 0, den, 1.0), math.nan)


def check_thresholds(name: str, thresholds: Sequence[float]) -> tuple[float, ...]:
    """``thresholds`` as a tuple, checked to be non-empty, increasing and within [0, 1]."""
    values = tuple(float(t) for t in thresholds)
    increasing = all(a < b for a, b in itertools.pairwise(values))
    if not values or not increasing or values[0] < 0 or values[-1] > 1:
        raise ValueError(
            f"{name}: thresholds must be a non-empty increasing sequence within [0, 1] "
            f"(got {list(values)[:6]}{'...' if len(values) > 6 else ''})"
        )
    return values


def check_binary_map(name: str, pred: Tensor, target: Tensor, ignore_value: float) -> None:
    """Shapes [B, 1, H, W] float for both; target values in {0, 1, ignore_value}."""
    if target.dim() != 4 or target.shape[1] != 1 or not target.dtype.is_floating_point:
        raise shape_error(name, "target", "[B, 1, H, W] float", target)
    if pred.shape != target.shape or not pred.dtype.is_floating_point:
        raise shape_error(name, "pred", f"float logits of shape {tuple(target.shape)}", pred)
    bad = (target != 0) & (target != 1) & (target != ignore_value)
    if bool(bad.any()):
        raise ValueError(
            f"{name}.update: target must hold 0, 1 or ignore_value={ignore_value:g} "
            f"(got {target[bad][0].item():g})"
        )
