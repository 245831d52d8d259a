"""NYUv2 in MTAN's ``.npy`` format (``nyuv2``): 13-class segmentation, depth, surface normals.

Reference: SPEC-data §1a [S][C:lorenmt/mtan, C:LibMTL]. The preprocessed copy used by MTAN,
CAGrad, Nash-MTL, KD4MTL, Auto-Lambda and LibMTL: 795 train / 654 val samples of 288×384,
``{train,val}/{image,label,depth,normal}/{i}.npy``. Labels are 0..12 with −1 = ignore; depth
is in metres with 0 = invalid; normals are unit vectors with all-zero = invalid (their
camera-frame axis convention is undocumented; a horizontal flip negates x). Losses follow
SPEC-methods §5.1: cross-entropy ignoring −1, L1 on depth ≠ 0, ``1 − cos`` on normals ≠ 0.
"""

from __future__ import annotations

import attrs

from pymtl.data._dense import positive_scales
from pymtl.data._mtan import SPLIT_FOLDERS, MTANDataset
from pymtl.data.base import Dataset
from pymtl.data.transforms import IMAGE_NORMS
from pymtl.hookspecs import hookimpl
from pymtl.tasks.base import DepthTask, NormalsTask, SegmentationTask, Task

__all__ = ["NYUV2_CLASSES", "NYUv2", "NYUv2Config"]

NYUV2_CLASSES = (
    "bed",
    "books",
    "ceiling",
    "chair",
    "floor",
    "furniture",
    "objects",
    "picture",
    "sofa",
    "table",
    "tv",
    "wall",
    "window",
)
"""The standard NYUv2 13-class names; that MTAN's ids 0..12 follow this order is unverified."""

NYUV2_LAYOUT = (
    "<root>/{train,val}/image/{i}.npy ([H, W, 3] in [0, 1]), label/{i}.npy ([H, W], 0..12, "
    "-1 ignore), depth/{i}.npy ([H, W, 1] metres, 0 invalid), normal/{i}.npy ([H, W, 3]), "
    "i = 0..N-1 (MTAN's preprocessed NYUv2)"
)


@attrs.frozen(kw_only=True)
class NYUv2Config:
    """Options of ``nyuv2``.

    Attributes:
        root: the folder holding ``train/`` and ``val/`` (MTAN's ``nyuv2`` folder).
        split: ``train`` or ``val`` (``test`` is an alias of ``val``, as in MTAN).
        tasks: task names to load (empty: all of semseg, depth, normals).
        augment: MTAN/LibMTL ``--aug``: random scale-crop by one of ``scales``, then a 50 %
            horizontal flip (normals x negated, depth divided by the scale).
        scales: zoom factors the augmentation draws from.
        image_norm: ``none`` (MTAN: [0, 1]), ``signed`` (Auto-Lambda: 2x − 1) or ``imagenet``.
        seed: seed of the per-sample augmentation generators.
    """

    root: str = ""
    split: str = attrs.field(default="train", validator=attrs.validators.in_(tuple(SPLIT_FOLDERS)))
    tasks: tuple[str, ...] = ()
    augment: bool = False
    scales: tuple[float, ...] = attrs.field(default=(1.0, 1.2, 1.5), validator=positive_scales)
    image_norm: str = attrs.field(default="none", validator=attrs.validators.in_(IMAGE_NORMS))
    seed: int = attrs.field(default=0, validator=attrs.validators.ge(0))


def nyuv2_tasks() -> tuple[Task, ...]:
    """The tasks of ``nyuv2``, with the ignore conventions of the files."""
    return (
        SegmentationTask(name="semseg", num_classes=13, ignore_index=-1, class_names=NYUV2_CLASSES),
        DepthTask(name="depth", invalid_value=0.0),
        NormalsTask(name="normals", loss_type="cosine"),
    )


class NYUv2(MTANDataset):
    """NYUv2 (MTAN preprocessing): semseg (13 classes), depth (m), normals [S][C:lorenmt/mtan].

    Reference: Liu et al., "End-to-End Multi-Task Learning with Attention", CVPR 2019; data
    layout of SPEC-data §1a. Items: ``image`` [3, H, W], ``semseg`` [H, W] int64 (−1 ignore),
    ``depth`` [1, H, W] (0 invalid), ``normals`` [3, H, W] (all-zero invalid).

    Args:
        root: folder with ``train/`` and ``val/``.
        split: ``train``, ``val`` or ``test`` (= ``val``).
        tasks: subset of task names to load (empty: all).
        augment: random scale-crop and horizontal flip.
        scales: zoom factors of the augmentation.
        image_norm: image normalisation (``none``, ``signed``, ``imagenet``).
        seed: seed of the augmentation.

    Example:
        >>> ds = NYUv2(root="data/nyuv2", split="val")  # doctest: +SKIP
        >>> ds[0]["depth"].shape  # doctest: +SKIP
        torch.Size([1, 288, 384])
    """

    name = "nyuv2"
    Config = NYUv2Config
    title = "NYUv2"

    def __init__(
        self,
        root: str = "",
        split: str = "train",
        *,
        tasks: tuple[str, ...] = (),
        augment: bool = False,
        scales: tuple[float, ...] = (1.0, 1.2, 1.5),
        image_norm: str = "none",
        seed: int = 0,
    ) -> None:
        config = NYUv2Config(
            root=root,
            split=split,
            tasks=tasks,
            augment=augment,
            scales=scales,
            image_norm=image_norm,
            seed=seed,
        )
        self._init_common(nyuv2_tasks(), config)
        folders = {"semseg": "label", "depth": "depth", "normals": "normal"}
        self._init_mtan(root, split, folders, layout=NYUV2_LAYOUT)


@hookimpl
def pymtl_register_datasets() -> list[type[Dataset]]:
    return [NYUv2]
