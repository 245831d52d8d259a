"""NYUD-v2 in the NYUD_MT layout of MTL-PyTorch (``nyud``): 40-class semseg, depth, normals,
edges [S][C:MTL-PyTorch].

Reference: SPEC-data §1c, SPEC-methods §5. 795 train / 654 val images of 480×640:

* ``images/{id}.jpg`` (RGB), splits ``gt_sets/{train,val}.txt``;
* ``segmentation/{id}.png``: 0 = void → 255 (ignore), 1..40 → class 0..39;
* ``depth/{id}.npy``: float metres, [H, W] or [H, W, 1], 0 = invalid (ASTMT rewrites 0 to a
  255 sentinel; here 0 stays and the task's ``valid_mask`` excludes it);
* ``normals/{id}.npy``: [H, W, 3] unit vectors, all-zero = invalid;
* ``edge/{id}.npy``: binary edge map, [H, W] or [H, W, 1].

Images are ImageNet-normalised by default, as in MTL-PyTorch; the items keep their size unless
``size`` is set. Edges are scored with maxDist 0.011 (brdav/atrc#3) and trained with balanced
BCE, pos_weight 0.95.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import numpy as np
from torch import Tensor

from pymtl.data._checks import (
    check_binary,
    check_dtype,
    check_labels,
    check_normals,
    check_range,
    check_shape,
    load_image,
    load_npy,
    read_split,
    require_files,
    require_root,
)
from pymtl.data._dense import (
    FileDataset,
    image_tensor,
    label_tensor,
    map_tensor,
    optional_size,
    positive_scales,
)
from pymtl.data.base import Dataset
from pymtl.data.transforms import IMAGE_NORMS, resize
from pymtl.hookspecs import hookimpl
from pymtl.tasks.base import DepthTask, EdgeTask, NormalsTask, SegmentationTask, Task

__all__ = ["NYU40_CLASSES", "NYUD", "NYUDConfig"]

NYU40_CLASSES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "refrigerator", "television", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp",
    "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop",
)  # fmt: skip
"""The NYUv2 40-class names (Gupta et al. 2013), in id order 1..40 of the PNGs."""

NYUD_LAYOUT = (
    "<root>/images/{id}.jpg, gt_sets/{train,val}.txt, segmentation/{id}.png (0 void, 1..40), "
    "depth/{id}.npy (metres, 0 invalid), normals/{id}.npy ([H, W, 3]), edge/{id}.npy (binary) "
    "(the NYUD_MT folder of MTL-PyTorch)"
)
_FILES = {
    "semseg": ("segmentation", ".png"),
    "depth": ("depth", ".npy"),
    "normals": ("normals", ".npy"),
    "edges": ("edge", ".npy"),
}


@attrs.frozen(kw_only=True)
class NYUDConfig:
    """Options of ``nyud``.

    Attributes:
        root: the ``NYUD_MT`` folder.
        split: ``train`` or ``val``.
        tasks: task names to load (empty: semseg, depth, normals, edges).
        size: (H, W) every item is resized to; None keeps the stored 480×640.
        augment: random scale-crop by one of ``scales`` and a 50 % horizontal flip.
        scales: zoom factors the augmentation draws from.
        image_norm: ``imagenet`` (MTL-PyTorch), ``none`` ([0, 1]) or ``signed``.
        seed: seed of the per-sample augmentation generators.
    """

    root: str = ""
    split: str = attrs.field(default="train", validator=attrs.validators.in_(("train", "val")))
    tasks: tuple[str, ...] = ()
    size: tuple[int, int] | None = attrs.field(default=None, validator=optional_size)
    augment: bool = False
    scales: tuple[float, ...] = attrs.field(default=(0.75, 1.0, 1.25), validator=positive_scales)
    image_norm: str = attrs.field(default="imagenet", validator=attrs.validators.in_(IMAGE_NORMS))
    seed: int = attrs.field(default=0, validator=attrs.validators.ge(0))


def nyud_tasks() -> tuple[Task, ...]:
    """The tasks of ``nyud``: ignore 255 for labels, 0 for depth and normals."""
    return (
        SegmentationTask(
            name="semseg", num_classes=40, ignore_index=255, class_names=NYU40_CLASSES
        ),
        DepthTask(name="depth", invalid_value=0.0),
        NormalsTask(name="normals", loss_type="l1"),
        EdgeTask(name="edges", ignore_value=255.0, pos_weight=0.95, tolerance=0.011),
    )


class NYUD(FileDataset):
    """NYUD-v2 (NYUD_MT): semseg (40 classes), depth, normals, edges [S][C:MTL-PyTorch].

    Reference: Vandenhende et al., "Multi-Task Learning for Dense Prediction Tasks: A Survey",
    TPAMI 2021; layout of SPEC-data §1c. Items: ``image`` [3, H, W]; ``semseg`` [H, W] int64
    (255 ignore); ``depth`` [1, H, W] (0 invalid); ``normals`` [3, H, W] (zero invalid);
    ``edges`` [1, H, W] in {0, 1}.

    Args:
        root: the ``NYUD_MT`` folder.
        split: ``train`` or ``val``.
        tasks: subset of task names to load (empty: all).
        size: (H, W) to resize every item to, or None.
        augment: random scale-crop and horizontal flip.
        scales: zoom factors of the augmentation.
        image_norm: image normalisation (``imagenet``, ``none``, ``signed``).
        seed: seed of the augmentation.

    Example:
        >>> ds = NYUD(root="data/NYUD_MT", split="val")  # doctest: +SKIP
        >>> ds[0]["semseg"].shape  # doctest: +SKIP
        torch.Size([480, 640])
    """

    name = "nyud"
    Config = NYUDConfig

    def __init__(
        self,
        root: str = "",
        split: str = "train",
        *,
        tasks: tuple[str, ...] = (),
        size: tuple[int, int] | None = None,
        augment: bool = False,
        scales: tuple[float, ...] = (0.75, 1.0, 1.25),
        image_norm: str = "imagenet",
        seed: int = 0,
    ) -> None:
        config = NYUDConfig(
            root=root,
            split=split,
            tasks=tasks,
            size=size,
            augment=augment,
            scales=scales,
            image_norm=image_norm,
            seed=seed,
        )
        self._init_common(nyud_tasks(), config)
        self.root = require_root(root, dataset=self.name, layout=NYUD_LAYOUT)
        self.ids = read_split(self.root / "gt_sets" / f"{split}.txt", what="NYUD_MT split list")
        self.size = size
        require_files((self.root / "images" / f"{i}.jpg" for i in self.ids), what="NYUD images")
        for task in self.task_names:
            require_files((self._file(task, i) for i in self.ids), what=f"NYUD {task} files")

    def __len__(self) -> int:
        return len(self.ids)

    def _file(self, task: str, sid: str) -> Path:
        folder, ext = _FILES[task]
        return self.root / folder / f"{sid}{ext}"

    def _load(self, index: int, *, validate: bool) -> dict[str, Tensor]:
        sid = self.ids[index]
        image = load_image(self.root / "images" / f"{sid}.jpg", what="NYUD image", mode="RGB")
        size = (int(image.shape[0]), int(image.shape[1]))
        item = {"image": image_tensor(image, scale=1 / 255)}
        for task in self.tasks:
            path = self._file(task.name, sid)
            if task.name == "semseg":
                item["semseg"] = label_tensor(_semseg(path, size, validate))
            else:
                item[task.name] = map_tensor(_float_map(task, path, size, validate))
        return resize(item, self.tasks, size=self.size, image_mode="bicubic") if self.size else item


def _semseg(path: Path, size: tuple[int, int], validate: bool) -> np.ndarray:
    """The PNG's ids with void 0 → 255 and 1..40 → 0..39."""
    what = "NYUD segmentation PNG (0 void, 1..40)"
    raw = load_image(path, what=what)
    check_shape(raw, size, path=path, what=what)
    if validate:
        check_labels(raw, 41, 0, path=path, what=what)
    ids = raw.astype(np.int64)
    return np.where(ids == 0, 255, ids - 1)


def _float_map(task: Task, path: Path, size: tuple[int, int], validate: bool) -> np.ndarray:
    """Depth or edges [H, W] / [H, W, 1], or normals [H, W, 3], checked."""
    what = f"NYUD {task.name} array"
    arr = load_npy(path, what=what)
    check_dtype(arr, "fiub" if isinstance(task, EdgeTask) else "f", path=path, what=what)
    if arr.ndim == 2 and task.channels == 1:
        arr = arr[..., None]
    check_shape(arr, (*size, task.channels), path=path, what=what)
    if validate and isinstance(task, DepthTask):
        check_range(arr, 0.0, float("inf"), path=path, what=what)
    elif validate and isinstance(task, NormalsTask):
        check_normals(arr, path=path, what=what)
    elif validate and isinstance(task, EdgeTask):
        check_binary(arr, path=path, what=what)
    return arr


@hookimpl
def pymtl_register_datasets() -> list[type[Dataset]]:
    return [NYUD]
