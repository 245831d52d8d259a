"""Build a run's components from its :class:`~pymtl.config.RunConfig` [pymtl]."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

import attrs
import torch
from torch import nn

from pymtl.architectures.base import Architecture
from pymtl.balancers.base import Balancer
from pymtl.config import RunConfig, to_document
from pymtl.data.base import Dataset
from pymtl.distillation.base import DistillationLoss
from pymtl.errors import ConfigError
from pymtl.plugins import Registry

__all__ = [
    "build_balancer",
    "build_dataset",
    "build_distiller",
    "build_model",
    "build_optimizer",
    "config_hash",
]


def config_hash(config: RunConfig, registry: Registry) -> str:
    """A short stable hash of the resolved configuration (what a checkpoint must match)."""
    doc = to_document(config, registry)
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def build_dataset(config: RunConfig, registry: Registry, split: str) -> Dataset:
    """The configured dataset, for ``split``."""
    if config.dataset is None:
        raise ConfigError("no dataset configured: pass --dataset NAME or set [dataset] name")
    cls = registry.get("dataset", config.dataset.name)
    options = config.dataset.options
    if not any(f.name == "split" for f in attrs.fields(type(options))):
        raise ConfigError(f"dataset {cls.name!r} has no 'split' option; pymtl train needs one")
    dataset: Dataset = cls.from_config(attrs.evolve(options, split=split))
    return dataset


def build_model(config: RunConfig, registry: Registry, dataset: Dataset) -> Architecture:
    """The configured architecture for ``dataset``'s tasks and input channels."""
    if config.arch is None:
        raise ConfigError("no architecture configured: pass --arch NAME or set [arch] name")
    cls = registry.get("architecture", config.arch.name)
    in_channels = int(dataset[0]["image"].shape[0])
    model: Architecture = cls.from_config(
        config.arch.options, tasks=dataset.tasks, in_channels=in_channels
    )
    return model


def build_balancer(config: RunConfig, registry: Registry, dataset: Dataset) -> Balancer:
    cls = registry.get("balancer", config.balancer.name)
    balancer: Balancer = cls.from_config(config.balancer.options, tasks=dataset.task_names)
    return balancer


def build_distiller(
    config: RunConfig, registry: Registry, dataset: Dataset
) -> DistillationLoss | None:
    """The configured distillation loss for ``dataset``'s tasks (None without ``[distill]``)."""
    if config.distill is None:
        return None
    cls = registry.get("distillation_loss", config.distill.name)
    loss: DistillationLoss = cls.from_config(config.distill.options, tasks=dataset.tasks)
    return loss


def build_optimizer(
    config: RunConfig,
    model: nn.Module,
    balancer: nn.Module,
    total_steps: int,
    extra_groups: Sequence[dict[str, Any]] = (),
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The network's optimiser (balancer parameters, if any, the architecture's
    :meth:`~pymtl.architectures.base.Architecture.lr_groups` and ``extra_groups`` — a
    distillation loss's :meth:`~pymtl.distillation.DistillationLoss.optimizer_groups` — in
    groups of their own) and the per-step LR schedule."""
    t = config.train
    scaled = model.lr_groups() if isinstance(model, Architecture) else []
    special = {id(p) for _, params in scaled for p in params}
    groups: list[dict[str, Any]] = [
        {"params": [p for p in model.parameters() if p.requires_grad and id(p) not in special]}
    ]
    groups += [{"params": params, "lr": t.lr * mult} for mult, params in scaled if params]
    own = [p for p in balancer.parameters() if p.requires_grad]
    if own:
        groups.append({"params": own, "weight_decay": 0.0, "lr": t.balancer_lr or t.lr})
    groups += [dict(g) for g in extra_groups]
    opt: torch.optim.Optimizer
    if t.optimizer == "adam":
        opt = torch.optim.Adam(groups, lr=t.lr, weight_decay=t.weight_decay)
    else:
        opt = torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)

    def factor(step: int) -> float:
        if t.schedule == "constant" or total_steps <= 1:
            return 1.0
        progress = min(step / (total_steps - 1), 1.0)
        return t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)
