"""Label-consistent augmentations of dense multi-task items [S][pymtl].

Reference: SPEC-data §1g (the augmentation contract per task kind) and §1a (MTAN's
``RandomScaleCrop`` with scales 1.0/1.2/1.5 and a 50 % horizontal flip [C:lorenmt/mtan]).
An item is a dict with ``"image"`` ([3, H, W] float in [0, 1]) and one target per task in the
layout of :mod:`pymtl.tasks.base`; each task's kind decides how its target follows the image:

* segmentation and parts: nearest neighbour, padded with ``ignore_index``;
* depth: nearest neighbour, padded with ``invalid_value``; a zoom by s divides valid depths by s
  (inverse depth / disparity is multiplied by s);
* normals: bilinear, re-normalised, padded with 0 (or the task's ``ignore_value``); a horizontal
  flip negates x;
* edge and saliency: nearest neighbour, padded with ``ignore_value``.

The image is resampled bilinearly (or bicubically in :func:`resize`, clamped to [0, 1]) and
padded with 0. A normals pixel is valid after resampling where its nearest source pixel was
valid; its direction is the re-normalised bilinear mean of the valid neighbours (invalid
vectors count as zero), a departure from MTAN, which does not re-normalise [S]. Non-dense
targets and other keys (``"<task>.mask"``) pass through unchanged. Randomness comes only from
the generator passed in, so an item is augmented identically given the same generator state
(:func:`sample_generator`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pymtl.tasks.base import (
    DepthTask,
    EdgeTask,
    NormalsTask,
    SaliencyTask,
    SegmentationTask,
    Task,
    vector_norm,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_NORMS",
    "augment",
    "hflip",
    "normalize_image",
    "resize",
    "sample_generator",
    "scale_crop",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_NORMS = ("none", "signed", "imagenet")
"""``none``: [0, 1] as loaded (MTAN); ``signed``: 2x − 1 (Auto-Lambda); ``imagenet``: mean/std."""

Item = dict[str, Tensor]
Window = tuple[int, int, int, int]  # top, left, height, width in source pixels (may overhang)


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator seeded from (seed, epoch, index): reproducible per sample and epoch."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(1, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0]))


def normalize_image(image: Tensor, mode: str) -> Tensor:
    """Map a [3, H, W] image in [0, 1] to the network's input range (see :data:`IMAGE_NORMS`)."""
    if mode == "none":
        return image
    if mode == "signed":
        return image * 2 - 1
    if mode == "imagenet":
        mean = torch.tensor(IMAGENET_MEAN, dtype=image.dtype).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=image.dtype).view(3, 1, 1)
        return (image - mean) / std
    raise ValueError(f"unknown image normalisation {mode!r}; expected one of {IMAGE_NORMS}")


def hflip(item: Mapping[str, Tensor], tasks: Sequence[Task]) -> Item:
    """Mirror the image and every dense target left-right; normals get x negated."""
    size = _image_size(item)
    out = dict(item)
    out["image"] = item["image"].flip(-1)
    for task in _dense_present(item, tasks):
        target = item[task.name]
        _check_layout(task, target, size)
        flipped = target.flip(-1)
        if isinstance(task, NormalsTask):
            valid = task.valid_mask(flipped[None])[0, 0]
            flipped = flipped.clone()
            flipped[0] = torch.where(valid, -flipped[0], flipped[0])
        out[task.name] = flipped
    return out


def scale_crop(
    item: Mapping[str, Tensor],
    tasks: Sequence[Task],
    *,
    scale: float,
    generator: torch.Generator,
    disparity: Collection[str] = (),
) -> Item:
    """Zoom by ``scale``: resample a random (H/s)×(W/s) window back to H×W.

    ``scale > 1`` crops inside the image; ``scale < 1`` takes a window larger than the image,
    whose outside is padded. Depth values are divided by ``scale`` (the scene looks ``scale``
    times closer); tasks named in ``disparity`` hold inverse depth and are multiplied instead.
    """
    if not scale > 0:
        raise ValueError(f"scale_crop: scale must be > 0 (got {scale})")
    H, W = _image_size(item)
    h, w = max(1, round(H / scale)), max(1, round(W / scale))
    top = _randint(min(0, H - h), max(0, H - h), generator)
    left = _randint(min(0, W - w), max(0, W - w), generator)
    return _remap(
        item, tasks, window=(top, left, h, w), size=(H, W), scale=scale, disparity=disparity
    )


def resize(
    item: Mapping[str, Tensor],
    tasks: Sequence[Task],
    *,
    size: tuple[int, int],
    image_mode: str = "bilinear",
) -> Item:
    """Resize the whole item to ``size`` = (H, W); depth values are unchanged."""
    H, W = _image_size(item)
    return _remap(item, tasks, window=(0, 0, H, W), size=size, image_mode=image_mode)


def augment(
    item: Mapping[str, Tensor],
    tasks: Sequence[Task],
    *,
    generator: torch.Generator,
    scales: Sequence[float] = (1.0, 1.2, 1.5),
    flip: bool = True,
    disparity: Collection[str] = (),
) -> Item:
    """MTAN-style augmentation: a scale drawn uniformly from ``scales``, then a 50 % h-flip."""
    if not scales:
        raise ValueError("augment: 'scales' is empty; expected at least one zoom factor")
    pick = int(torch.randint(len(scales), (1,), generator=generator))
    out = scale_crop(item, tasks, scale=scales[pick], generator=generator, disparity=disparity)
    if flip and float(torch.rand(1, generator=generator)) < 0.5:
        out = hflip(out, tasks)
    return out


def _randint(lo: int, hi: int, generator: torch.Generator) -> int:
    """Uniform integer in [lo, hi]."""
    return lo + int(torch.randint(hi - lo + 1, (1,), generator=generator))


def _image_size(item: Mapping[str, Tensor]) -> tuple[int, int]:
    image = item.get("image")
    if image is None or image.dim() != 3 or image.shape[0] != 3:
        got = None if image is None else tuple(image.shape)
        raise ValueError(f"item 'image': wrong layout (got shape {got}; expected [3, H, W])")
    return int(image.shape[1]), int(image.shape[2])


def _dense_present(item: Mapping[str, Tensor], tasks: Sequence[Task]) -> list[Task]:
    return [t for t in tasks if t.dense and t.name in item]


def _check_layout(task: Task, target: Tensor, size: tuple[int, int]) -> None:
    """Target layouts of :mod:`pymtl.tasks.base`: [H, W] int64 labels, [C, H, W] float maps."""
    expected: tuple[int, ...] = size
    if isinstance(task, SegmentationTask):
        ok_dtype = target.dtype == torch.int64
    else:
        expected, ok_dtype = (task.channels, *size), target.dtype.is_floating_point
    if tuple(target.shape) != expected or not ok_dtype:
        raise ValueError(
            f"item {task.name!r} ({task.kind} target): wrong layout (got {tuple(target.shape)} "
            f"{target.dtype}; expected {expected} "
            f"{'int64' if isinstance(task, SegmentationTask) else 'float'}, matching the image)"
        )


def _remap(
    item: Mapping[str, Tensor],
    tasks: Sequence[Task],
    *,
    window: Window,
    size: tuple[int, int],
    scale: float = 1.0,
    disparity: Collection[str] = (),
    image_mode: str = "bilinear",
) -> Item:
    src = _image_size(item)
    out = dict(item)
    out["image"] = _resample(item["image"], window, size, mode=image_mode, fill=0.0)
    for task in _dense_present(item, tasks):
        target = item[task.name]
        _check_layout(task, target, src)
        factor = scale if task.name in disparity else 1.0 / scale
        out[task.name] = _remap_target(task, target, window, size, factor)
    return out


def _remap_target(
    task: Task, target: Tensor, window: Window, size: tuple[int, int], depth_factor: float
) -> Tensor:
    if isinstance(task, SegmentationTask):  # parts included
        labels = target.to(torch.float64)[None]
        fill = float(task.ignore_index)
        return _resample(labels, window, size, mode="nearest", fill=fill)[0].to(target.dtype)
    if isinstance(task, DepthTask):
        depth = _resample(target, window, size, mode="nearest", fill=task.invalid_value)
        if depth_factor != 1.0:
            depth = torch.where(task.valid_mask(depth), depth * depth_factor, depth)
        return depth
    if isinstance(task, NormalsTask):
        return _remap_normals(task, target, window, size)
    if isinstance(task, (EdgeTask, SaliencyTask)):
        return _resample(target, window, size, mode="nearest", fill=task.ignore_value)
    raise ValueError(
        f"task {task.name!r}: no augmentation rule for task kind {task.kind!r}; expected one of "
        "segmentation, parts, depth, normals, edge, saliency"
    )


def _remap_normals(
    task: NormalsTask, target: Tensor, window: Window, size: tuple[int, int]
) -> Tensor:
    H, W = target.shape[-2:]
    if window == (0, 0, H, W) and tuple(size) == (H, W):
        return target  # nothing is interpolated, so nothing is re-normalised
    valid = task.valid_mask(target[None])[0].to(target.dtype)  # [1, H, W]
    vectors = _resample(target * valid, window, size, mode="bilinear", fill=0.0)
    keep = _resample(valid, window, size, mode="nearest", fill=0.0) > 0.5
    norm = vector_norm(vectors, dim=0, keepdim=True)
    keep &= norm > 1e-6
    fill = 0.0 if task.ignore_value is None else task.ignore_value
    return torch.where(keep, vectors / norm.clamp_min(1e-12), torch.full_like(vectors, fill))


def _resample(
    x: Tensor, window: Window, size: tuple[int, int], *, mode: str, fill: float
) -> Tensor:
    """Cut ``window`` out of the [C, H, W] ``x`` (padding with ``fill`` outside it) and resize it
    to ``size`` with pixel-centre alignment (``nearest`` picks the nearest source centre)."""
    top, left, h, w = window
    H, W = x.shape[-2:]
    pad = (max(0, -left), max(0, left + w - W), max(0, -top), max(0, top + h - H))
    if any(pad):
        x = F.pad(x, pad, value=fill)
    y0, x0 = top + pad[2], left + pad[0]
    x = x[:, y0 : y0 + h, x0 : x0 + w]
    if (h, w) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x[None], size=size, mode="nearest-exact")[0]
    y = F.interpolate(x[None], size=size, mode=mode, align_corners=False)[0]
    return y.clamp(0.0, 1.0) if mode == "bicubic" else y  # bicubic overshoots; images only
