"""Cityscapes in MTAN's ``.npy`` format (``cityscapes``): 7- or 19-class segmentation and
inverse depth [S][C:lorenmt/mtan, C:Cranial-XIX/CAGrad, C:LibMTL].

Reference: SPEC-data §1b. 2975 train / 500 val samples (128×256 or 256×512),
``{train,val}/{image,label_7,label_19,depth}/{i}.npy``. Labels use −1 = ignore. Depth is
*inverse* depth (1/m, "disparity-like", values up to ~0.49) with 0 = invalid, so the scale
augmentation multiplies it by the zoom instead of dividing (SPEC-data §1g), and relative errors
are unstable: report the absolute error. LibMTL's repackaged copy stores the 7-class labels in
``label/``; with ``label_dir`` unset that folder is used when ``label_7/`` is absent.
"""

from __future__ import annotations

from pathlib import Path

import attrs

from pymtl.data._checks import require_root
from pymtl.data._dense import positive_scales
from pymtl.data._mtan import SPLIT_FOLDERS, MTANDataset
from pymtl.data.base import Dataset
from pymtl.data.transforms import IMAGE_NORMS
from pymtl.hookspecs import hookimpl
from pymtl.tasks.base import DepthTask, SegmentationTask, Task

__all__ = ["CITYSCAPES_7", "CITYSCAPES_19", "Cityscapes", "CityscapesConfig"]

CITYSCAPES_7 = ("flat", "construction", "object", "nature", "sky", "human", "vehicle")
"""The 7 non-void Cityscapes categories; that MTAN's ids follow this order is unverified."""

CITYSCAPES_19 = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip
"""The 19 Cityscapes evaluation classes in train-id order."""

CITYSCAPES_LAYOUT = (
    "<root>/{train,val}/image/{i}.npy ([H, W, 3] in [0, 1]), label_7/{i}.npy or "
    "label_19/{i}.npy ([H, W], -1 ignore), depth/{i}.npy ([H, W, 1] inverse depth, 0 invalid), "
    "i = 0..N-1 (MTAN's preprocessed Cityscapes)"
)


@attrs.frozen(kw_only=True)
class CityscapesConfig:
    """Options of ``cityscapes``.

    Attributes:
        root: the folder holding ``train/`` and ``val/``.
        split: ``train`` or ``val`` (``test`` is an alias of ``val``, as in MTAN).
        tasks: task names to load (empty: semseg and depth).
        num_classes: 7 (categories, CAGrad/Nash-MTL/LibMTL) or 19 (KD4MTL's ``Cityscapes19``).
        label_dir: label folder inside the split folder; empty: ``label_{num_classes}``, or
            ``label`` (LibMTL's copy) for 7 classes when ``label_7`` is absent.
        augment: random scale-crop by one of ``scales`` (inverse depth multiplied by the scale)
            and a 50 % horizontal flip.
        scales: zoom factors the augmentation draws from.
        image_norm: ``none`` (MTAN: [0, 1]), ``signed`` (2x − 1) or ``imagenet``.
        seed: seed of the per-sample augmentation generators.
    """

    root: str = ""
    split: str = attrs.field(default="train", validator=attrs.validators.in_(tuple(SPLIT_FOLDERS)))
    tasks: tuple[str, ...] = ()
    num_classes: int = attrs.field(default=7, validator=attrs.validators.in_((7, 19)))
    label_dir: str = ""
    augment: bool = False
    scales: tuple[float, ...] = attrs.field(default=(1.0, 1.2, 1.5), validator=positive_scales)
    image_norm: str = attrs.field(default="none", validator=attrs.validators.in_(IMAGE_NORMS))
    seed: int = attrs.field(default=0, validator=attrs.validators.ge(0))


def cityscapes_tasks(num_classes: int) -> tuple[Task, ...]:
    """The tasks of ``cityscapes``: −1 ignore for labels, 0 invalid for inverse depth."""
    names = CITYSCAPES_7 if num_classes == 7 else CITYSCAPES_19
    return (
        SegmentationTask(
            name="semseg", num_classes=num_classes, ignore_index=-1, class_names=names
        ),
        DepthTask(name="depth", invalid_value=0.0),
    )


def _label_folder(split_dir: Path, num_classes: int, label_dir: str) -> str:
    if label_dir:
        return label_dir
    default = f"label_{num_classes}"
    if num_classes == 7 and not (split_dir / default).is_dir() and (split_dir / "label").is_dir():
        return "label"
    return default


class Cityscapes(MTANDataset):
    """Cityscapes (MTAN preprocessing): semseg (7 or 19 classes), inverse depth [S].

    Reference: Liu et al., "End-to-End Multi-Task Learning with Attention", CVPR 2019 (MTAN);
    layout of SPEC-data §1b [C:lorenmt/mtan]. Items: ``image`` [3, H, W], ``semseg`` [H, W]
    int64 (−1 ignore), ``depth`` [1, H, W] inverse depth (0 invalid).

    Args:
        root: folder with ``train/`` and ``val/``.
        split: ``train``, ``val`` or ``test`` (= ``val``).
        tasks: subset of task names to load (empty: all).
        num_classes: 7 or 19.
        label_dir: label folder name (empty: chosen from ``num_classes``).
        augment: random scale-crop and horizontal flip.
        scales: zoom factors of the augmentation.
        image_norm: image normalisation (``none``, ``signed``, ``imagenet``).
        seed: seed of the augmentation.

    Example:
        >>> ds = Cityscapes(root="data/cityscapes", split="val", num_classes=19)  # doctest: +SKIP
        >>> ds.tasks[0].num_classes  # doctest: +SKIP
        19
    """

    name = "cityscapes"
    Config = CityscapesConfig
    title = "Cityscapes"

    def __init__(
        self,
        root: str = "",
        split: str = "train",
        *,
        tasks: tuple[str, ...] = (),
        num_classes: int = 7,
        label_dir: str = "",
        augment: bool = False,
        scales: tuple[float, ...] = (1.0, 1.2, 1.5),
        image_norm: str = "none",
        seed: int = 0,
    ) -> None:
        config = CityscapesConfig(
            root=root,
            split=split,
            tasks=tasks,
            num_classes=num_classes,
            label_dir=label_dir,
            augment=augment,
            scales=scales,
            image_norm=image_norm,
            seed=seed,
        )
        self._init_common(cityscapes_tasks(num_classes), config, disparity=("depth",))
        split_dir = require_root(root, dataset=self.name, layout=CITYSCAPES_LAYOUT)
        split_dir = split_dir / SPLIT_FOLDERS[split]
        folders = {"semseg": _label_folder(split_dir, num_classes, label_dir), "depth": "depth"}
        self._init_mtan(root, split, folders, layout=CITYSCAPES_LAYOUT)


@hookimpl
def pymtl_register_datasets() -> list[type[Dataset]]:
    return [Cityscapes]
