"""Metrics as sufficient statistics accumulated over a whole split (SPEC-data §2.9).

Every metric subclasses :class:`Metric`: ``update(pred, target, labelled=None)`` adds one
batch's statistics (int64 counts, float64 sums, histograms), ``compute()`` returns named float
values (NaN where undefined), ``reset()`` clears them, and ``higher_is_better`` gives each
key's direction. The default aggregation pools the statistics over the split, so results do
not depend on batch size or order; ``aggregation="image"`` and ``compat="mtan"`` reproduce
published protocols where a metric offers them (see :mod:`pymtl.metrics._accumulate`).
"""

from __future__ import annotations

from pymtl.metrics.base import Metric
from pymtl.metrics.depth import DepthMetric
from pymtl.metrics.edge import EdgeMetric
from pymtl.metrics.image import ClassificationMetric, MultiLabelMetric, RegressionMetric
from pymtl.metrics.normals import NormalsMetric
from pymtl.metrics.saliency import SaliencyMetric
from pymtl.metrics.segmentation import SegmentationMetric

__all__ = [
    "ClassificationMetric",
    "DepthMetric",
    "EdgeMetric",
    "Metric",
    "MultiLabelMetric",
    "NormalsMetric",
    "RegressionMetric",
    "SaliencyMetric",
    "SegmentationMetric",
]
