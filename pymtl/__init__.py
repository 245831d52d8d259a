"""pymtl: multi-task learning for dense prediction.

Architectures, balancers, distillation losses and datasets are plugins found through one
registry (:func:`pymtl.plugins.get_registry`); pymtl's own register through the same hooks as
third-party packages, which implement them with :data:`hookimpl`.
"""

from __future__ import annotations

__version__ = "0.1.0"

from pymtl.architectures.base import Architecture
from pymtl.balancers.base import Balancer, Needs, Weights
from pymtl.data.base import Dataset
from pymtl.distillation.base import DistillationLoss, Signals, TeacherKind
from pymtl.errors import (
    ConfigError,
    DataFormatError,
    OpError,
    PluginError,
    PymtlError,
    UnknownComponentError,
)
from pymtl.hookspecs import hookimpl
from pymtl.plugins import get_registry

__all__ = [
    "Architecture",
    "Balancer",
    "ConfigError",
    "DataFormatError",
    "Dataset",
    "DistillationLoss",
    "Needs",
    "OpError",
    "PluginError",
    "PymtlError",
    "Signals",
    "TeacherKind",
    "UnknownComponentError",
    "Weights",
    "__version__",
    "get_registry",
    "hookimpl",
]
