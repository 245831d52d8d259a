"""Shared machinery of the on-disk dense datasets (``nyuv2``, ``cityscapes``, ``nyud``,
``pascal_context``) [pymtl].

Reference: SPEC-data §1g. A subclass lists its files and decodes one sample into the task
layouts of :mod:`pymtl.tasks.base`; this base selects tasks, validates the first sample it
loads in full (cheap shape checks run on every sample), applies the label-consistent
augmentation of :mod:`pymtl.data.transforms` from a per-sample generator, then normalises the
image.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Collection, Sequence
from typing import Any

import attrs
import numpy as np
import torch
from torch import Tensor

from pymtl.data.base import Dataset
from pymtl.data.transforms import augment, normalize_image, sample_generator
from pymtl.errors import ConfigError
from pymtl.tasks.base import Task

__all__ = [
    "FileDataset",
    "image_tensor",
    "label_tensor",
    "map_tensor",
    "optional_size",
    "positive_scales",
]


def positive_scales(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """attrs validator: a non-empty tuple of finite numbers > 0."""
    ok = isinstance(value, tuple) and len(value) > 0
    ok = ok and all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in value)
    if not ok or not all(0 < s < float("inf") for s in value):
        raise ValueError(
            f"'{attribute.name}' must be a non-empty tuple of numbers > 0 (got {value!r})"
        )


def optional_size(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """attrs validator: None or a pair (H, W) of positive ints."""
    ok = value is None or (isinstance(value, tuple) and len(value) == 2)
    ok = ok and (value is None or all(isinstance(v, int) and v > 0 for v in value))
    if not ok:
        raise ValueError(f"'{attribute.name}' must be None or (H, W) with H, W > 0 (got {value!r})")


def image_tensor(arr: np.ndarray, *, scale: float = 1.0) -> Tensor:
    """[H, W, 3] array → [3, H, W] float32 tensor, multiplied by ``scale``."""
    out = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).permute(2, 0, 1)
    return (out * scale if scale != 1.0 else out).contiguous()


def label_tensor(arr: np.ndarray) -> Tensor:
    """[H, W] class ids (float or int on disk) → int64 tensor."""
    return torch.from_numpy(np.ascontiguousarray(arr).astype(np.int64))


def map_tensor(arr: np.ndarray) -> Tensor:
    """[H, W] or [H, W, C] array → [C, H, W] float32 tensor."""
    arr = arr[..., None] if arr.ndim == 2 else arr
    return (
        torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).permute(2, 0, 1).contiguous()
    )


class FileDataset(Dataset):
    """Base of the on-disk dense datasets: task selection, validation, augmentation [pymtl].

    Subclasses call :meth:`_init_common` from ``__init__`` and implement ``__len__`` and
    :meth:`_load`. :meth:`set_epoch` changes the augmentation draws per epoch; the draws are a
    function of (``seed``, epoch, index) only, so they do not depend on workers or order.
    """

    def _init_common(
        self, available: Sequence[Task], config: Any, *, disparity: Collection[str] = ()
    ) -> None:
        """Set up from ``config``'s common fields: ``tasks`` (names to keep, empty: all of
        ``available``), ``augment``, ``scales``, ``image_norm`` and ``seed``."""
        select = config.tasks
        names = [t.name for t in available]
        unknown = [s for s in select if s not in names]
        if unknown:
            raise ConfigError(
                f"dataset {self.name!r}: unknown task(s) {unknown} in dataset.tasks; "
                f"expected a subset of {names}"
            )
        self._tasks = tuple(t for t in available if not select or t.name in select)
        self.config = config
        self.augment: bool = config.augment
        self.scales: tuple[float, ...] = tuple(config.scales)
        self.image_norm: str = config.image_norm
        self.seed: int = config.seed
        self.disparity = frozenset(disparity)
        self.epoch = 0
        self._validated = False

    @property
    def tasks(self) -> tuple[Task, ...]:
        return self._tasks

    @property
    def augments(self) -> bool:
        return self.augment

    def set_epoch(self, epoch: int) -> None:
        """Use the augmentation draws of ``epoch`` from now on.

        Call it before each epoch's ``DataLoader`` iteration; workers that are not persistent
        copy the dataset when the iteration starts, so they see the new epoch.
        """
        if epoch < 0:
            raise ValueError(f"dataset {self.name!r}: epoch must be >= 0 (got {epoch})")
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        n = len(self)
        if not 0 <= index < n:
            raise IndexError(
                f"dataset {self.name!r}: index out of range (got {index}; expected 0 <= i < {n})"
            )
        item = self._load(index, validate=not self._validated)
        self._validated = True
        if self.augment:
            gen = sample_generator(self.seed, self.epoch, index)
            item = augment(
                item, self._tasks, generator=gen, scales=self.scales, disparity=self.disparity
            )
        item["image"] = normalize_image(item["image"], self.image_norm)
        return item

    @abstractmethod
    def _load(self, index: int, *, validate: bool) -> dict[str, Tensor]:
        """Sample ``index`` with the image in [0, 1]; ``validate``: check value ranges too."""
