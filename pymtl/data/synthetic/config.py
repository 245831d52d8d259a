"""Options of the ``synthetic`` dataset and its named presets.

Presets follow SPEC-data §3.5 [pymtl]: ``smoke`` (CI), ``standard`` (the default ``Config()``,
scenario A "clean") and the standard scenarios B-D: ``imbalanced`` (depth in centimetres, so
the depth loss is 100× larger for the same problem), ``distractor`` (plus the unpredictable
``noise`` task) and ``partial_labels`` (half of the depth labels missing).
``pymtl data preview synthetic --preset smoke`` starts from a preset; explicit options
override it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

from pymtl.data.synthetic.sample import SPLITS

__all__ = ["DEPTH_UNITS", "PRESETS", "TASK_NAMES", "SyntheticConfig"]

TASK_NAMES = (
    "semseg", "depth", "normals", "edges", "parts", "saliency",
    "count", "presence", "color_of_largest", "colorseg", "noise",
)  # fmt: skip
"""Every task the dataset can produce, in item order."""

DEPTH_UNITS: dict[str, float] = {"m": 1.0, "cm": 100.0, "mm": 1000.0}
"""Depth target scale per unit (the loss-scale imbalance knob)."""

MAX_IMAGE_SIZE = 1024
MAX_OBJECTS = 10


def _int_in(lo: int, hi: int | None = None) -> Any:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{attribute.name!r} must be an integer (got {value!r})")
        if value < lo or (hi is not None and value > hi):
            bounds = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
            raise ValueError(f"{attribute.name!r} must be {bounds} (got {value!r})")

    return check


def _one_of(choices: tuple[str, ...]) -> Any:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in choices:
            raise ValueError(
                f"{attribute.name!r} must be one of {', '.join(choices)} (got {value!r})"
            )

    return check


def _bool(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{attribute.name!r} must be true or false (got {value!r})")


def _as_tuple(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise TypeError(f"'tasks' must be a list of task names (got {value!r})")
    return tuple(value)


def _as_dict(name: str, value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{name!r} must be a table of task name -> number (got {value!r})")
    return dict(value)


def _label_noise_dict(value: Any) -> dict[str, float]:
    return _as_dict("label_noise", value)


def _labelled_fraction_dict(value: Any) -> dict[str, float]:
    return _as_dict("labelled_fraction", value)


def _loss_scale_dict(value: Any) -> dict[str, float]:
    return _as_dict("loss_scale", value)


def _scales(instance: Any, attribute: attrs.Attribute[Any], value: Mapping[str, float]) -> None:
    """Keys are tasks of this config; values are finite numbers > 0."""
    for task, scale in value.items():
        where = f"'loss_scale'[{task!r}]"
        if task not in instance.tasks:
            raise ValueError(
                f"{where}: {task!r} is not one of the configured tasks "
                f"({', '.join(instance.tasks)})"
            )
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise TypeError(f"{where} must be a number > 0 (got {scale!r})")
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"{where} must be finite and > 0 (got {scale!r})")


def _tasks(instance: Any, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    if not value:
        raise ValueError(f"'tasks' must name at least one of {', '.join(TASK_NAMES)} (got none)")
    unknown = [t for t in value if t not in TASK_NAMES]
    if unknown:
        raise ValueError(
            f"'tasks' has unknown task(s) {', '.join(map(repr, unknown))} "
            f"(expected some of {', '.join(TASK_NAMES)})"
        )
    repeated = sorted({t for t in value if value.count(t) > 1})
    if repeated:
        raise ValueError(f"'tasks' lists {', '.join(map(repr, repeated))} more than once")


def _rates(instance: Any, attribute: attrs.Attribute[Any], value: Mapping[str, float]) -> None:
    """Keys are tasks of this config; values are numbers in [0, 1]."""
    for task, rate in value.items():
        where = f"{attribute.name!r}[{task!r}]"
        if task not in instance.tasks:
            raise ValueError(
                f"{where}: {task!r} is not one of the configured tasks "
                f"({', '.join(instance.tasks)})"
            )
        if isinstance(rate, bool) or not isinstance(rate, (int, float)):
            raise TypeError(f"{where} must be a number in [0, 1] (got {rate!r})")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{where} must be in [0, 1] (got {rate!r})")


def _sensor_noise(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"'sensor_noise' must be a number (got {value!r})")
    if not (math.isfinite(value) and 0.0 <= value <= 0.5):
        raise ValueError(f"'sensor_noise' must be in [0, 0.5] (got {value!r})")


def _optional_str(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not (isinstance(value, str) and value):
        raise TypeError(
            f"{attribute.name!r} must be a non-empty path string or unset (got {value!r})"
        )


@attrs.frozen(kw_only=True)
class SyntheticConfig:
    """Options of ``synthetic``; the defaults are the ``standard`` preset.

    Attributes:
        image_size: height and width of the images (pixels).
        split: ``train``, ``val`` or ``test``; each split has its own scenes.
        train_size, val_size, test_size: samples per split.
        seed: dataset seed; sample i of a split is a pure function of (seed, split, i).
        num_objects: at most this many objects per scene (1..``num_objects``).
        tasks: the tasks items carry, some of :data:`TASK_NAMES`.
        depth_unit: ``m``, ``cm`` or ``mm``: scales depth targets by 1, 100 or 1000, the same
            problem with a 100× or 1000× larger depth loss (loss-scale imbalance).
        loss_scale: per task, a constant factor on its loss (``Task.loss_scale``): loss-scale
            imbalance for any task, targets and metrics unchanged.
        label_noise: per task, the fraction of target elements corrupted (fixed per sample):
            class labels move to another class, binary labels flip, depth is multiplied by
            exp(0.25·ε), normals become random unit vectors, presence bits flip.
        labelled_fraction: per task, the fraction of samples that carry its label; the others
            get an ignore-valued target and ``"<task>.mask"`` False (fixed per sample).
        hflip: mirror half of the train samples (val/test never), normals' x negated; the
            choice is fixed per (sample, epoch), see ``SyntheticScenes.set_epoch``.
        supersample: shade 2×2 rays per pixel (RGB only; about 4× slower).
        sensor_noise: standard deviation of Gaussian noise on each RGB channel, in [0, 1]
            units, before 8-bit quantisation.
        cache_dir: if set, the split is rendered once into this folder (keyed by the generator
            version and the options that change renders) and read back from there.
    """

    image_size: int = attrs.field(default=64, validator=_int_in(8, MAX_IMAGE_SIZE))
    split: str = attrs.field(default="train", validator=_one_of(SPLITS))
    train_size: int = attrs.field(default=4096, validator=_int_in(1))
    val_size: int = attrs.field(default=2048, validator=_int_in(1))
    test_size: int = attrs.field(default=2048, validator=_int_in(1))
    seed: int = attrs.field(default=0, validator=_int_in(0))
    num_objects: int = attrs.field(default=6, validator=_int_in(1, MAX_OBJECTS))
    tasks: tuple[str, ...] = attrs.field(
        default=("semseg", "depth", "normals", "edges", "parts", "count"),
        converter=_as_tuple,
        validator=_tasks,
    )
    depth_unit: str = attrs.field(default="m", validator=_one_of(tuple(DEPTH_UNITS)))
    label_noise: Mapping[str, float] = attrs.field(
        factory=dict, converter=_label_noise_dict, validator=_rates
    )
    labelled_fraction: Mapping[str, float] = attrs.field(
        factory=dict, converter=_labelled_fraction_dict, validator=_rates
    )
    loss_scale: Mapping[str, float] = attrs.field(
        factory=dict, converter=_loss_scale_dict, validator=_scales
    )
    hflip: bool = attrs.field(default=True, validator=_bool)
    supersample: bool = attrs.field(default=False, validator=_bool)
    sensor_noise: float = attrs.field(default=0.01, validator=_sensor_noise)
    cache_dir: str | None = attrs.field(default=None, validator=_optional_str)

    @property
    def size(self) -> int:
        """Samples in the configured split."""
        sizes = {"train": self.train_size, "val": self.val_size, "test": self.test_size}
        return sizes[self.split]


_STANDARD = SyntheticConfig()
PRESETS: dict[str, SyntheticConfig] = {
    "smoke": attrs.evolve(
        _STANDARD,
        train_size=256,
        val_size=128,
        test_size=128,
        tasks=("semseg", "depth", "normals", "count"),
    ),
    "standard": _STANDARD,
    "imbalanced": attrs.evolve(_STANDARD, depth_unit="cm"),
    "distractor": attrs.evolve(_STANDARD, tasks=(*_STANDARD.tasks, "noise")),
    "partial_labels": attrs.evolve(_STANDARD, labelled_fraction={"depth": 0.5}),
}
"""Named configurations (SPEC-data §3.5); ``standard`` equals ``SyntheticConfig()``."""
