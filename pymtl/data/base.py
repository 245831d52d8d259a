"""The dataset contract [pymtl].

A dataset is a map-style ``torch.utils.data.Dataset`` whose items are dicts: ``"image"`` (a
float tensor [3, H, W]) plus one target per task, keyed by task name, and optionally
``"<task>.mask"`` booleans marking missing labels. It reports its task names and the split it
holds. Options (paths, split, image size, ...) are fields of its ``Config``.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

from torch import Tensor
from torch.utils.data import Dataset as TorchDataset

from pymtl.component import Component

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
    def tasks(self) -> tuple[str, ...]:
        """Names of the tasks every item carries a target for."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __getitem__(self, index: int) -> dict[str, Tensor]: ...
