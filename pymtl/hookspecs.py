"""The hooks a pymtl plugin can implement.

A plugin is a module (or any object) with functions decorated by :data:`pymtl.hookimpl` whose
names are hook names below. Third-party plugins are found through the entry-point group
``pymtl``; pymtl's own components register through exactly the same hooks (see
:data:`pymtl.plugins.BUILTIN_PLUGINS`).

Each ``pymtl_register_*`` hook returns a list of component classes. A component class has a
stable lower_snake ``name`` (used on the command line and in config files), a frozen attrs
``Config`` class, and a ``from_config`` constructor; see the base class of each kind for the
rest of its contract. Reference: the registry design follows pluggy/pytest and datasette's
``register_*`` hooks [pymtl].
"""

from __future__ import annotations

import pluggy

from pymtl.architectures.base import Architecture
from pymtl.backbones.base import Backbone
from pymtl.balancers.base import Balancer
from pymtl.data.base import Dataset
from pymtl.distillation.base import DistillationLoss

PROJECT = "pymtl"
"""pluggy project name, hook-name prefix and entry-point group."""

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def pymtl_register_architectures() -> list[type[Architecture]]:  # type: ignore[empty-body]
    """Return multi-task architecture classes (subclasses of :class:`pymtl.Architecture`).

    An architecture is an ``nn.Module`` whose ``forward(x)`` returns a dict of predictions keyed
    by task name, and which exposes its shared and task-specific parameters and its shared
    representation. Example: ``return [HardSharing]``.
    """


@hookspec
def pymtl_register_backbones() -> list[type[Backbone]]:  # type: ignore[empty-body]
    """Return backbone classes (subclasses of :class:`pymtl.backbones.Backbone`).

    A backbone maps images to feature maps and declares its output channels and stride;
    architectures name one in their config (``[arch.backbone] name = "resnet18"``).
    Example: ``return [ResNet18]``.
    """


@hookspec
def pymtl_register_balancers() -> list[type[Balancer]]:  # type: ignore[empty-body]
    """Return loss-balancing / gradient-aggregation classes (subclasses of :class:`pymtl.Balancer`).

    A balancer maps per-task losses (and, when it declares so in ``needs``, the Gram matrix or
    the Jacobian of the per-task gradients) to per-task weights. Example: ``return [PCGrad]``.
    """


@hookspec
def pymtl_register_distillation_losses() -> list[type[DistillationLoss]]:  # type: ignore[empty-body]
    """Return distillation-loss classes (subclasses of :class:`pymtl.DistillationLoss`).

    A distillation loss compares a student's features or predictions with a frozen teacher's
    and returns one term per task, added to the training objective. Example: ``return [HintonKD]``.
    """


@hookspec
def pymtl_register_datasets() -> list[type[Dataset]]:  # type: ignore[empty-body]
    """Return dataset classes (subclasses of :class:`pymtl.Dataset`).

    A dataset yields dicts with an ``"image"`` tensor and one target per task, and describes
    its tasks. Example: ``return [NYUv2]``.
    """
