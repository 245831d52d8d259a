"""The ``synthetic`` dataset: analytic ray-cast room scenes with exact dense and global labels.

Reference: SPEC-data §3 [pymtl] (scene model, label definitions, determinism, presets).
Rendered on the fly in ``__getitem__`` (about 2 ms per 64×64 image on one core) or once into
a cache folder. Up to eleven tasks, chosen to produce measurable multi-task effects: related
pairs (depth/normals, edges/semseg, parts/normals), a partially conflicting task
(``colorseg``), an unpredictable distractor (``noise``: a fixed random per-pixel class map per
sample, Auto-Lambda style) and knobs for loss-scale imbalance (``depth_unit``), label noise and
missing labels.
"""

from __future__ import annotations

import functools
import operator
import zlib
from typing import ClassVar

import attrs
import numpy as np
import torch
from torch import Tensor

from pymtl.data.base import Dataset
from pymtl.data.synthetic.cache import SplitCache
from pymtl.data.synthetic.config import DEPTH_UNITS, PRESETS, SyntheticConfig
from pymtl.data.synthetic.sample import (
    GENERATOR_VERSION,
    RenderSpec,
    Stream,
    render_sample,
    sample_rng,
    scene_at,
)
from pymtl.data.synthetic.scene import Scene
from pymtl.data.synthetic.targets import (
    add_label_noise,
    hflip,
    make_task,
    num_classes,
    to_target,
    unlabelled,
)
from pymtl.hookspecs import hookimpl
from pymtl.tasks.base import Task

__all__ = ["SyntheticScenes", "mean_depth"]

_STATS_SEED, _STATS_SAMPLES, _STATS_SIZE = 20261101, 32, 32


@functools.lru_cache(maxsize=16)
def mean_depth(num_objects: int) -> float:
    """Mean rendered depth (m) over a fixed set of scenes, used to initialise the depth head."""
    spec = RenderSpec(
        seed=_STATS_SEED,
        split="train",
        image_size=_STATS_SIZE,
        num_objects=num_objects,
        supersample=False,
        sensor_noise=0.0,
    )
    return float(np.mean([render_sample(spec, i)["depth"].mean() for i in range(_STATS_SAMPLES)]))


class SyntheticScenes(Dataset):
    """Synthetic indoor scenes with exact labels for up to eleven tasks [pymtl].

    Reference: SPEC-data §3.2 (scene model and labels) and §3.5 (presets, in ``PRESETS``).
    Sample i of a split is a pure function of (``seed``, ``split``, i), whatever the worker
    count, batch size or access order. Items hold ``image`` [3, H, W] float32 in [0, 1], one
    target per task in its task's layout (:mod:`pymtl.data.synthetic.targets`) and
    ``"<task>.mask"`` for the tasks listed in ``labelled_fraction``.

    Args: the fields of :class:`~pymtl.data.synthetic.config.SyntheticConfig`.

    Example:
        >>> ds = SyntheticScenes(image_size=32, tasks=("semseg", "depth"), train_size=4)
        >>> item = ds[0]
        >>> item["image"].shape, item["semseg"].dtype, item["depth"].shape
        (torch.Size([3, 32, 32]), torch.int64, torch.Size([1, 32, 32]))
    """

    name = "synthetic"
    Config = SyntheticConfig
    PRESETS: ClassVar[dict[str, SyntheticConfig]] = PRESETS
    GENERATOR_VERSION: ClassVar[int] = GENERATOR_VERSION

    def __init__(
        self,
        *,
        image_size: int = 64,
        split: str = "train",
        train_size: int = 4096,
        val_size: int = 2048,
        test_size: int = 2048,
        seed: int = 0,
        num_objects: int = 6,
        tasks: tuple[str, ...] = ("semseg", "depth", "normals", "edges", "parts", "count"),
        depth_unit: str = "m",
        label_noise: dict[str, float] | None = None,
        labelled_fraction: dict[str, float] | None = None,
        loss_scale: dict[str, float] | None = None,
        hflip: bool = True,
        supersample: bool = False,
        sensor_noise: float = 0.01,
        cache_dir: str | None = None,
    ) -> None:
        self.config = SyntheticConfig(
            image_size=image_size,
            split=split,
            train_size=train_size,
            val_size=val_size,
            test_size=test_size,
            seed=seed,
            num_objects=num_objects,
            tasks=tasks,
            depth_unit=depth_unit,
            label_noise={} if label_noise is None else label_noise,
            labelled_fraction={} if labelled_fraction is None else labelled_fraction,
            loss_scale={} if loss_scale is None else loss_scale,
            hflip=hflip,
            supersample=supersample,
            sensor_noise=sensor_noise,
            cache_dir=cache_dir,
        )
        self.spec = RenderSpec(
            seed=seed,
            split=split,
            image_size=image_size,
            num_objects=num_objects,
            supersample=supersample,
            sensor_noise=float(sensor_noise),
        )
        self.epoch = 0
        self._cache = None if cache_dir is None else self._open_cache(cache_dir)

    def _open_cache(self, cache_dir: str) -> SplitCache:
        return SplitCache.open_or_build(
            cache_dir,
            self.spec,
            keys=("image", *self.config.tasks),
            length=len(self),
            render=functools.partial(render_sample, self.spec),
        )

    @functools.cached_property
    def _tasks(self) -> tuple[Task, ...]:
        c = self.config
        mean = mean_depth(c.num_objects) * DEPTH_UNITS[c.depth_unit]
        return tuple(
            attrs.evolve(
                make_task(t, num_objects=c.num_objects, depth_mean=mean),
                loss_scale=c.loss_scale.get(t, 1.0),
            )
            for t in c.tasks
        )

    @property
    def tasks(self) -> tuple[Task, ...]:
        return self._tasks

    def __len__(self) -> int:
        return self.config.size

    def _index(self, index: int) -> int:
        i = operator.index(index)
        n = len(self)
        if not -n <= i < n:
            raise IndexError(
                f"synthetic {self.config.split}: index {index} out of range for {n} samples"
            )
        return i % n

    @property
    def augments(self) -> bool:
        """Whether items change between epochs: the train split with ``hflip``."""
        return bool(self.config.hflip and self.config.split == "train")

    def set_epoch(self, epoch: int) -> None:
        """Draw the train split's flips for ``epoch`` (each epoch mirrors another half)."""
        self.epoch = operator.index(epoch)

    def flipped(self, index: int) -> bool:
        """Whether item ``index`` is mirrored at the current epoch."""
        c = self.config
        if not (c.hflip and c.split == "train"):
            return False
        rng = sample_rng(c.seed, c.split, self._index(index), Stream.FLIP, self.epoch)
        return bool(rng.random() < 0.5)

    def scene(self, index: int) -> Scene:
        """The scene of sample ``index``."""
        return scene_at(self.spec, self._index(index))

    def render(self, index: int) -> dict[str, np.ndarray]:
        """Clean arrays of sample ``index`` (unflipped, no label noise, every label present).

        Rendered now (every key of :func:`~pymtl.data.synthetic.sample.render_sample`,
        ``instance`` included) or read from the cache (``image`` and the tasks' keys).
        """
        i = self._index(index)
        return render_sample(self.spec, i) if self._cache is None else self._cache.load(i)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        i = self._index(index)
        rendered = self.render(i)
        clean = {k: rendered[k] for k in ("image", *self.config.tasks)}
        if self.flipped(i):
            clean = hflip(clean)
        item = {"image": torch.from_numpy(clean["image"].astype(np.float32) / 255.0)}
        for name in self.config.tasks:
            target, labelled = self._target(i, name, clean[name])
            item[name] = torch.from_numpy(target)
            if labelled is not None:
                item[f"{name}.mask"] = torch.tensor(labelled)
        return item

    def _target(self, i: int, name: str, value: np.ndarray) -> tuple[np.ndarray, bool | None]:
        """Task ``name``'s target for sample ``i`` and its labelled flag (None: not masked)."""
        c = self.config
        target = to_target(name, value, depth_scale=DEPTH_UNITS[c.depth_unit])
        task_id = zlib.crc32(name.encode())
        rate = c.label_noise.get(name, 0.0)
        if rate > 0:
            rng = sample_rng(c.seed, c.split, i, Stream.LABEL_NOISE, task_id)
            classes = num_classes(name, c.num_objects) if target.dtype == np.int64 else 0
            target = add_label_noise(name, target, rate, rng, classes=classes)
        if name not in c.labelled_fraction:
            return target, None
        rng = sample_rng(c.seed, c.split, i, Stream.LABELLED, task_id)
        labelled = bool(rng.random() < c.labelled_fraction[name])
        return (target if labelled else unlabelled(name, target)), labelled

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in attrs.asdict(self.config).items())
        return f"{type(self).__name__}({fields})"


@hookimpl
def pymtl_register_datasets() -> list[type[Dataset]]:
    return [SyntheticScenes]
