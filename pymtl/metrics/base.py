"""The metric contract [pymtl] (SPEC-data §2.9).

A metric accumulates *sufficient statistics* over a whole split — confusion matrices, sums and
counts of errors, histograms — in integer or float64 tensors, so the result does not depend on
batch size or order. ``update`` adds one batch, ``compute`` turns the statistics into named
values, ``reset`` clears them. ``higher_is_better`` gives every key's direction (Δ_MTL uses it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from torch import Tensor

__all__ = ["Metric"]


class Metric(ABC):
    """Base class of metric accumulators."""

    higher_is_better: ClassVar[dict[str, bool]]

    @abstractmethod
    def update(self, pred: Tensor, target: Tensor, labelled: Tensor | None = None) -> None:
        """Add one batch: head outputs ``pred``, targets ``target`` (the task's layout), and
        ``labelled`` [B] bool marking the samples that carry this task's label (None: all)."""

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """The metric values over everything added since the last reset (NaN when undefined)."""

    @abstractmethod
    def reset(self) -> None:
        """Forget every added batch."""
