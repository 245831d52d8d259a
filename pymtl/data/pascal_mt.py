"""PASCAL-Context in the PASCAL_MT layout of ASTMT / MTL-PyTorch (``pascal_context``) [S].

Reference: SPEC-data §1c, SPEC-methods §5 [C:MTL-PyTorch]. Five tasks per image:

* ``semseg``: ``semseg/VOC12/{id}.png`` if present, else ``semseg/pascal-context/{id}.png``;
  class ids 0 (background), 1..20 (VOC classes), 255 = ignore;
* ``human_parts``: ``human_parts/{id}.mat`` (PASCAL-Part), 7 classes, all-255 without persons;
* ``normals``: ``normals_distill/{id}.png`` (uint8 RGB), n = 2x/255 − 1, kept only on pixels
  whose context class (``LabelMap``) the NYU normals data covers; 0 (invalid) elsewhere;
* ``saliency``: ``sal_distill/{id}.png``, binarised as x/255 > 0.5;
* ``edges``: thin(|Laplacian(LabelMap)| > 0) from ``pascal-context/trainval/{id}.mat``.

Images are ``JPEGImages/{id}.jpg``, splits ``ImageSets/Context/{train,val}.txt``. As in ASTMT,
items are resized to 512×512 (image bicubic, labels nearest; normals bilinear then
re-normalised where ASTMT uses cubic) and the image is ImageNet-normalised. Deviations: the
augmentation draws its scale from a fixed set and does not rotate (ASTMT: a scale in
[0.75, 1.25] and ±20° rotation); invalid normals are zero vectors instead of ASTMT's 255
sentinel (the same mask); a task map whose size differs from its image is an error, not resized.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import numpy as np
import torch
from torch import Tensor

from pymtl.data._checks import (
    check_labels,
    check_normals,
    check_shape,
    fail,
    load_image,
    load_mat,
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
from pymtl.data._label_edges import label_edges
from pymtl.data._pascal_parts import HUMAN_PART_NAMES, human_parts_map
from pymtl.data.base import Dataset
from pymtl.data.transforms import IMAGE_NORMS, resize
from pymtl.hookspecs import hookimpl
from pymtl.tasks.base import EdgeTask, NormalsTask, PartsTask, SaliencyTask, SegmentationTask, Task

__all__ = ["NORMALS_CONTEXT_CLASSES", "VOC_CLASSES", "PascalContext", "PascalContextConfig"]

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip

NORMALS_CONTEXT_CLASSES = (
    3, 4, 6, 9, 10, 11, 13, 15, 17, 18, 22, 23, 29, 30, 33, 34, 36, 37, 38, 39, 41, 43, 46, 49,
    50, 51, 53, 55, 56, 59, 61, 62, 65, 66, 68, 69, 72, 73, 78, 83, 84, 85, 87, 88, 95, 96, 101,
    104, 105, 107, 111, 113, 115, 122, 124, 135, 141, 142, 143, 146, 150, 154, 157, 158, 159,
    165, 172, 174, 181, 183, 184, 191, 193, 195, 197, 199, 202, 213, 215, 216, 219, 220, 223,
    225, 228, 230, 232, 233, 238, 239, 242, 243, 246, 250, 251, 252, 255, 260, 261, 263, 269,
    272, 273, 275, 281, 283, 284, 285, 286, 287, 288, 290, 291, 292, 293, 295, 304, 307, 309,
    310, 314, 315, 319, 323, 329, 330, 331, 336, 342, 345, 349, 350, 351, 352, 355, 357, 368,
    370, 371, 374, 379, 380, 383, 384, 397, 401, 403, 405, 407, 408, 411, 412, 413, 414, 417,
    419, 421, 423, 427, 429, 430, 432, 440, 441, 442, 443, 444, 446, 454, 457,
)  # fmt: skip
"""PASCAL-Context ids (1..459, alphabetical ``labels.txt`` order) on which distilled normals are
kept: the 169 context class names that also name an NYUv2 class ('unknown' excluded), plus
'tvmonitor' (427) [C:MTL-PyTorch data/db_info]. Derived here from the two public class lists."""

PASCAL_LAYOUT = (
    "<root>/JPEGImages/{id}.jpg, ImageSets/Context/{train,val}.txt, semseg/VOC12/{id}.png or "
    "semseg/pascal-context/{id}.png, human_parts/{id}.mat, normals_distill/{id}.png, "
    "sal_distill/{id}.png, pascal-context/trainval/{id}.mat (key LabelMap) (the PASCAL_MT "
    "folder of ASTMT / MTL-PyTorch)"
)
_TASK_FILES = {
    "human_parts": ("human_parts", ".mat"),
    "normals": ("normals_distill", ".png"),
    "saliency": ("sal_distill", ".png"),
    "edges": ("pascal-context/trainval", ".mat"),
}


@attrs.frozen(kw_only=True)
class PascalContextConfig:
    """Options of ``pascal_context``.

    Attributes:
        root: the ``PASCAL_MT`` folder.
        split: ``train`` or ``val``.
        tasks: task names to load (empty: semseg, human_parts, normals, saliency, edges).
        size: (H, W) every item is resized to (ASTMT: 512×512); None keeps each image's size.
        augment: random scale-crop by one of ``scales`` and a 50 % horizontal flip.
        scales: zoom factors the augmentation draws from.
        image_norm: ``imagenet`` (ASTMT: mean/std after scaling to [0, 1]), ``none`` or ``signed``.
        seed: seed of the per-sample augmentation generators.
        normals_classes: context class ids with valid normals (empty: NORMALS_CONTEXT_CLASSES).
    """

    root: str = ""
    split: str = attrs.field(default="train", validator=attrs.validators.in_(("train", "val")))
    tasks: tuple[str, ...] = ()
    size: tuple[int, int] | None = attrs.field(default=(512, 512), validator=optional_size)
    augment: bool = False
    scales: tuple[float, ...] = attrs.field(default=(0.75, 1.0, 1.25), validator=positive_scales)
    image_norm: str = attrs.field(default="imagenet", validator=attrs.validators.in_(IMAGE_NORMS))
    seed: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    normals_classes: tuple[int, ...] = ()


def pascal_tasks() -> tuple[Task, ...]:
    """The tasks of ``pascal_context`` (SPEC-methods §5.1: edge pos_weight 0.95, maxDist 0.0075)."""
    return (
        SegmentationTask(name="semseg", num_classes=21, ignore_index=255, class_names=VOC_CLASSES),
        PartsTask(
            name="human_parts", num_classes=7, ignore_index=255, class_names=HUMAN_PART_NAMES
        ),
        NormalsTask(name="normals", loss_type="l1"),
        SaliencyTask(name="saliency", ignore_value=255.0),
        EdgeTask(name="edges", ignore_value=255.0, pos_weight=0.95, tolerance=0.0075),
    )


class PascalContext(FileDataset):
    """PASCAL-Context (PASCAL_MT): semseg, human parts, normals, saliency, edges [S][C:MTL-PyTorch].

    Reference: Vandenhende et al., "Multi-Task Learning for Dense Prediction Tasks: A Survey",
    TPAMI 2021, and Maninis et al., "Attentive Single-Tasking of Multiple Tasks" (ASTMT), CVPR
    2019; layout of SPEC-data §1c. Items: ``image`` [3, H, W]; ``semseg`` and ``human_parts``
    [H, W] int64 (255 ignore) plus ``human_parts.mask`` (False when the image has no person
    parts); ``normals`` [3, H, W] (zero = invalid); ``saliency`` and ``edges`` [1, H, W] in {0, 1}.

    Args:
        root: the ``PASCAL_MT`` folder.
        split: ``train`` or ``val``.
        tasks: subset of task names to load (empty: all).
        size: (H, W) to resize every item to, or None.
        augment: random scale-crop and horizontal flip.
        scales: zoom factors of the augmentation.
        image_norm: image normalisation (``imagenet``, ``none``, ``signed``).
        seed: seed of the augmentation.
        normals_classes: context ids with valid normals (empty: the ASTMT set).

    Example:
        >>> ds = PascalContext(root="data/PASCAL_MT", split="val")  # doctest: +SKIP
        >>> ds[0]["edges"].shape  # doctest: +SKIP
        torch.Size([1, 512, 512])
    """

    name = "pascal_context"
    Config = PascalContextConfig

    def __init__(
        self,
        root: str = "",
        split: str = "train",
        *,
        tasks: tuple[str, ...] = (),
        size: tuple[int, int] | None = (512, 512),
        augment: bool = False,
        scales: tuple[float, ...] = (0.75, 1.0, 1.25),
        image_norm: str = "imagenet",
        seed: int = 0,
        normals_classes: tuple[int, ...] = (),
    ) -> None:
        config = PascalContextConfig(
            root=root,
            split=split,
            tasks=tasks,
            size=size,
            augment=augment,
            scales=scales,
            image_norm=image_norm,
            seed=seed,
            normals_classes=normals_classes,
        )
        self._init_common(pascal_tasks(), config)
        self.root = require_root(root, dataset=self.name, layout=PASCAL_LAYOUT)
        split_file = self.root / "ImageSets" / "Context" / f"{split}.txt"
        self.ids = read_split(split_file, what="PASCAL_MT split list")
        self.size = size
        self.normals_classes = np.asarray(normals_classes or NORMALS_CONTEXT_CLASSES)
        self._check_files()

    def __len__(self) -> int:
        return len(self.ids)

    def _file(self, task: str, sid: str) -> Path:
        if task == "semseg":
            voc = self.root / "semseg" / "VOC12" / f"{sid}.png"
            return voc if voc.is_file() else self.root / "semseg" / "pascal-context" / f"{sid}.png"
        folder, ext = _TASK_FILES[task]
        return self.root / folder / f"{sid}{ext}"

    def _check_files(self) -> None:
        require_files(
            (self.root / "JPEGImages" / f"{i}.jpg" for i in self.ids), what="PASCAL images"
        )
        needed = {t.name for t in self.tasks} | (
            {"edges"} if "normals" in self.task_names else set()
        )
        for task in sorted(needed):
            require_files((self._file(task, i) for i in self.ids), what=f"PASCAL {task} files")

    def _load(self, index: int, *, validate: bool) -> dict[str, Tensor]:
        sid = self.ids[index]
        image = load_image(self.root / "JPEGImages" / f"{sid}.jpg", what="PASCAL image", mode="RGB")
        size = (int(image.shape[0]), int(image.shape[1]))
        item = {"image": image_tensor(image, scale=1 / 255)}
        names = set(self.task_names)
        label_map = self._label_map(sid, size, validate) if names & {"edges", "normals"} else None
        if "semseg" in names:
            item["semseg"] = label_tensor(self._semseg(sid, size, validate))
        if "human_parts" in names:
            parts = human_parts_map(self._file("human_parts", sid), size)
            item["human_parts"] = label_tensor(parts)
            item["human_parts.mask"] = torch.tensor(bool((parts != 255).any()))
        if "normals" in names:
            assert label_map is not None
            item["normals"] = map_tensor(self._normals(sid, size, label_map, validate))
        if "saliency" in names:
            item["saliency"] = map_tensor(self._saliency(sid, size))
        if "edges" in names:
            assert label_map is not None
            item["edges"] = map_tensor(label_edges(label_map))
        return resize(item, self.tasks, size=self.size, image_mode="bicubic") if self.size else item

    def _label_map(self, sid: str, size: tuple[int, int], validate: bool) -> np.ndarray:
        path = self._file("edges", sid)
        what = "PASCAL-Context LabelMap"
        label_map = np.asarray(load_mat(path, "LabelMap", what=what))
        check_shape(label_map, size, path=path, what=what)
        if validate:
            check_labels(label_map, 460, 0, path=path, what=what)
        return label_map

    def _semseg(self, sid: str, size: tuple[int, int], validate: bool) -> np.ndarray:
        path = self._file("semseg", sid)
        what = "PASCAL semseg PNG (class ids)"
        labels = load_image(path, what=what)
        check_shape(labels, size, path=path, what=what)
        if validate:
            check_labels(labels, 21, 255, path=path, what=what)
        return labels

    def _normals(
        self, sid: str, size: tuple[int, int], label_map: np.ndarray, validate: bool
    ) -> np.ndarray:
        path = self._file("normals", sid)
        what = "PASCAL distilled normals PNG"
        rgb = load_image(path, what=what)
        check_shape(rgb, (*size, 3), path=path, what=what)
        if rgb.dtype != np.uint8:
            fail(path, what, "wrong dtype", got=rgb.dtype, expected="uint8 RGB")
        normals = (2.0 * rgb.astype(np.float64) / 255.0 - 1.0).astype(np.float32)
        normals[~np.isin(label_map, self.normals_classes)] = 0.0
        if validate:
            check_normals(normals, path=path, what=what)
        return normals

    def _saliency(self, sid: str, size: tuple[int, int]) -> np.ndarray:
        path = self._file("saliency", sid)
        what = "PASCAL distilled saliency PNG"
        sal = load_image(path, what=what)
        if sal.ndim == 3 and (sal == sal[..., :1]).all():
            sal = sal[..., 0]  # a grey image stored as RGB
        check_shape(sal, size, path=path, what=what)
        return (sal.astype(np.float64) / 255.0 > 0.5).astype(np.float32)


@hookimpl
def pymtl_register_datasets() -> list[type[Dataset]]:
    return [PascalContext]
