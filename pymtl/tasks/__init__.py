"""Tasks: what a dataset's targets mean, how they are scored and how a head is sized."""

from pymtl.tasks.base import (
    ClassificationTask,
    DepthTask,
    EdgeTask,
    MultiLabelTask,
    NormalsTask,
    PartsTask,
    RegressionTask,
    SaliencyTask,
    SegmentationTask,
    Task,
)
from pymtl.tasks.dense_regression import DenseRegressionTask

__all__ = [
    "ClassificationTask",
    "DenseRegressionTask",
    "DepthTask",
    "EdgeTask",
    "MultiLabelTask",
    "NormalsTask",
    "PartsTask",
    "RegressionTask",
    "SaliencyTask",
    "SegmentationTask",
    "Task",
]
