"""Targets of the synthetic dataset: task declarations, tensor layouts, flips, noise, masks.

Layouts follow :mod:`pymtl.tasks.base` [pymtl]: label maps [H, W] int64 (ignore -1), depth
[1, H, W] float32 (invalid 0, never rendered: depth > 0), normals [3, H, W] float32 (invalid:
zero vectors), edges and saliency [1, H, W] float32 in {0, 1} (ignore 255), image-level classes
int64 scalars (ignore -1), presence [3] float32 (ignore NaN). SPEC-data §1g: a horizontal flip
negates normals' x. Label noise and missing labels are defined per target kind (see
:class:`~pymtl.data.synthetic.config.SyntheticConfig`).
"""

from __future__ import annotations

import numpy as np

from pymtl.data.synthetic.labels import PART_NAMES, SEMSEG_NAMES
from pymtl.data.synthetic.sample import NOISE_CLASSES
from pymtl.data.synthetic.scene import COLOR_NAMES, KIND_NAMES
from pymtl.tasks.base import (
    ClassificationTask,
    DepthTask,
    EdgeTask,
    MultiLabelTask,
    NormalsTask,
    PartsTask,
    SaliencyTask,
    SegmentationTask,
    Task,
)

__all__ = [
    "CLASS_MAPS",
    "DEPTH_NOISE",
    "add_label_noise",
    "hflip",
    "make_task",
    "num_classes",
    "to_target",
    "unlabelled",
]

CLASS_MAPS = ("semseg", "parts", "colorseg", "noise")
BINARY_MAPS = ("edges", "saliency")
SCALAR_CLASSES = ("count", "color_of_largest")
DEPTH_NOISE = 0.25
"""Log-space standard deviation of depth label noise (a corrupted depth d becomes d·e^(σε))."""
_BINARY_IGNORE = 255.0


def num_classes(name: str, num_objects: int) -> int:
    """Classes of a class-valued task (``count`` has 0..``num_objects``)."""
    return {
        "semseg": len(SEMSEG_NAMES),
        "parts": len(PART_NAMES),
        "colorseg": 1 + len(COLOR_NAMES),
        "noise": NOISE_CLASSES,
        "count": num_objects + 1,
        "color_of_largest": len(COLOR_NAMES),
    }[name]


def make_task(name: str, *, num_objects: int, depth_mean: float) -> Task:
    """The :class:`~pymtl.tasks.Task` of ``name`` (``depth_mean`` in the target's unit)."""
    classes = num_classes(name, num_objects) if name in (*CLASS_MAPS, *SCALAR_CLASSES) else 0
    if name == "semseg":
        return SegmentationTask(name=name, num_classes=classes, class_names=SEMSEG_NAMES)
    if name == "parts":
        return PartsTask(name=name, num_classes=classes, class_names=PART_NAMES)
    if name == "colorseg":
        colors = ("background", *COLOR_NAMES)
        return SegmentationTask(name=name, num_classes=classes, class_names=colors)
    if name == "noise":
        labels = tuple(f"noise{c}" for c in range(classes))
        return SegmentationTask(name=name, num_classes=classes, class_names=labels)
    if name in SCALAR_CLASSES:
        return ClassificationTask(name=name, num_classes=classes)
    simple: dict[str, Task] = {
        "depth": DepthTask(name=name, invalid_value=0.0, mean=depth_mean),
        "normals": NormalsTask(name=name),
        "edges": EdgeTask(name=name, ignore_value=_BINARY_IGNORE),
        "saliency": SaliencyTask(name=name, ignore_value=_BINARY_IGNORE),
        "presence": MultiLabelTask(name=name, num_labels=len(KIND_NAMES), label_names=KIND_NAMES),
    }
    if name not in simple:
        raise KeyError(f"synthetic: no task named {name!r}")
    return simple[name]


def hflip(sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``sample`` mirrored left-right: every map's last axis reversed, normals' x negated."""
    out = {}
    for key, value in sample.items():
        out[key] = np.ascontiguousarray(value[..., ::-1]) if value.ndim >= 2 else value
    if "normals" in out:
        out["normals"][0] *= -1.0
    return out


def to_target(name: str, value: np.ndarray, *, depth_scale: float) -> np.ndarray:
    """The clean label ``value`` of task ``name`` in its task's dtype and layout (a copy)."""
    if name in CLASS_MAPS or name in SCALAR_CLASSES:
        return value.astype(np.int64)
    if name in BINARY_MAPS:
        return value[None].astype(np.float32)
    if name == "depth":
        return (value[None] * np.float32(depth_scale)).astype(np.float32)
    if name == "normals":
        return value.astype(np.float32)
    if name == "presence":
        return value.astype(np.float32)
    raise KeyError(f"synthetic: no task named {name!r}")


def add_label_noise(
    name: str, target: np.ndarray, rate: float, rng: np.random.Generator, *, classes: int
) -> np.ndarray:
    """``target`` with a fraction ``rate`` of its valid elements corrupted (a new array).

    Class labels move to a uniformly drawn *other* class, binary labels and presence bits
    flip, depth is multiplied by ``exp(DEPTH_NOISE · ε)``, a normal becomes a random unit
    vector. ``classes`` is the task's number of classes (unused for other kinds).
    """
    if name in CLASS_MAPS or name in SCALAR_CLASSES:
        chosen = (rng.random(target.shape) < rate) & (target >= 0)
        shifted = (target + rng.integers(1, classes, size=target.shape)) % classes
        return np.where(chosen, shifted, target)
    if name in BINARY_MAPS or name == "presence":
        return np.where(rng.random(target.shape) < rate, 1.0 - target, target).astype(np.float32)
    if name == "depth":
        factor = np.exp(DEPTH_NOISE * rng.standard_normal(target.shape))
        chosen = rng.random(target.shape) < rate
        return np.where(chosen, target * factor, target).astype(np.float32)
    if name == "normals":
        chosen = rng.random(target.shape[1:]) < rate
        random = rng.standard_normal(target.shape)
        random /= np.linalg.norm(random, axis=0, keepdims=True)
        return np.where(chosen, random, target).astype(np.float32)
    raise KeyError(f"synthetic: no task named {name!r}")


def unlabelled(name: str, target: np.ndarray) -> np.ndarray:
    """A target of ``target``'s shape and dtype that every element of is ignored."""
    if name in CLASS_MAPS or name in SCALAR_CLASSES:
        return np.full_like(target, -1)
    if name in BINARY_MAPS:
        return np.full_like(target, _BINARY_IGNORE)
    if name == "presence":
        return np.full_like(target, np.nan)
    if name in ("depth", "normals"):
        return np.zeros_like(target)
    raise KeyError(f"synthetic: no task named {name!r}")
