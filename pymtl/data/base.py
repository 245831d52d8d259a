"""The dataset contract [pymtl].

A dataset is a map-style ``torch.utils.data.Dataset`` whose items are dicts: ``"image"`` (a
float tensor [3, H, W]) plus one target per task, keyed by task name (one sample's slice of the
layout its :class:`pymtl.tasks.Task` documents), and ``"<task>.mask"`` (a bool scalar, False
where the sample has no label for that task) for tasks with missing labels. It declares its
tasks, so a third-party dataset brings its own. Options (paths, split, image size, ...) are
fields of its ``Config``.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

from torch import Tensor
from torch.utils.data import Dataset as TorchDataset

from pymtl.component import Component
from pymtl.tasks.base import Task

__all__ = ["Dataset"]


class Dataset(Component, TorchDataset[dict[str, Tensor]]):
    """Base class of datasets.

    Subclasses set ``name`` and ``Config``, take their ``Config`` fields as keyword arguments
    in ``__init__``, and implement :attr:`tasks`, ``__len__`` and ``__getitem__``.
    """

    kind: ClassVar[str] = "dataset"

    @classmethod
    def from_config(cls, config: Any) -> Dataset:
        """Build from a ``Config`` instance."""
        return cls(**cls.config_fields(config))

    @property
    @abstractmethod
    def tasks(self) -> tuple[Task, ...]:
        """The tasks every item carries a target for."""

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)

    @property
    def augments(self) -> bool:
        """Whether an item of this split can differ between epochs (random augmentation), so
        that nothing computed from it can be cached across epochs. Default: no."""
        return False

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __getitem__(self, index: int) -> dict[str, Tensor]: ...
