"""CelebA (``celeba``): aligned face crops with 40 binary attributes.

Reference: Liu et al., "Deep Learning Face Attributes in the Wild", ICCV 2015 (data); used as a
40-task problem by Sener & Koltun, NeurIPS 2018 [C:isl-org/MultiObjectiveOptimization];
SPEC-data §1e, §2.7.

Layout under ``root``:

* ``Anno/list_attr_celeba.txt``: the image count, the attribute names, then one
  ``000001.jpg -1 1 …`` row per image; −1 → 0, 1 → 1;
* ``Eval/list_eval_partition.txt``: ``000001.jpg 0|1|2`` for train/val/test;
* images: ``Img/img_align_celeba_png/000001.png`` (MGDA's PNG copies) or
  ``Img/img_align_celeba/000001.jpg`` (the original release); ``image_format = "auto"`` takes
  the PNG folder when it exists. Names are matched by stem, so both work with the same lists.

Every image of the split is checked to exist at construction (one folder listing). Images are
resized to ``size`` × ``size`` (bilinear, aspect not kept, as MGDA does: 178×218 → 64×64), scaled
to [0, 1] and normalised by ``mean``/``std`` (ImageNet's by default; MGDA's BGR mean subtraction
is undone by its own resize, so there is nothing to reproduce).

Tasks (``as_tasks``): ``per_attribute`` (default, as in MGDA and SPEC-data §2.7) declares one
2-class :class:`ClassificationTask` per attribute, named like the attribute, target int64 0/1,
so accuracy is reported per attribute; ``multilabel`` declares one :class:`MultiLabelTask`
``attributes`` whose target is the float [40] vector of 0/1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from PIL import Image
from torch import Tensor

from pymtl.data.base import Dataset
from pymtl.errors import ConfigError
from pymtl.hookspecs import hookimpl
from pymtl.tasks.base import ClassificationTask, MultiLabelTask, Task

__all__ = ["CelebA", "CelebAConfig", "read_attributes", "read_partition"]

ATTR_FILE = "Anno/list_attr_celeba.txt"
PARTITION_FILE = "Eval/list_eval_partition.txt"
IMAGE_DIRS = {"png": "Img/img_align_celeba_png", "jpg": "Img/img_align_celeba"}
_SPLITS = {"train": "0", "val": "1", "test": "2"}
_LAYOUT = (
    f"{ATTR_FILE}, {PARTITION_FILE} and {IMAGE_DIRS['png']}/*.png or {IMAGE_DIRS['jpg']}/*.jpg"
)


def _three(instance: Any, attribute: attrs.Attribute[Any], value: tuple[float, ...]) -> None:
    if len(value) != 3 or (attribute.name == "std" and min(value) <= 0):
        raise ValueError(f"dataset 'celeba': {attribute.name} must be 3 numbers (got {value})")


@attrs.frozen(kw_only=True)
class CelebAConfig:
    """Options of ``celeba``.

    Attributes:
        root: folder holding ``Anno/``, ``Eval/`` and ``Img/``.
        split: ``train``, ``val`` or ``test`` (the official partition).
        size: output side in pixels.
        image_format: ``auto``, ``png`` (MGDA's copies) or ``jpg`` (original release).
        as_tasks: ``per_attribute`` (40 binary tasks) or ``multilabel`` (one task).
        mean, std: RGB normalisation after scaling to [0, 1].
    """

    root: str = ""
    split: str = attrs.field(default="train", validator=attrs.validators.in_(tuple(_SPLITS)))
    size: int = attrs.field(default=64, validator=attrs.validators.gt(0))
    image_format: str = attrs.field(
        default="auto", validator=attrs.validators.in_(("auto", "png", "jpg"))
    )
    as_tasks: str = attrs.field(
        default="per_attribute", validator=attrs.validators.in_(("per_attribute", "multilabel"))
    )
    mean: tuple[float, float, float] = attrs.field(default=(0.485, 0.456, 0.406), validator=_three)
    std: tuple[float, float, float] = attrs.field(default=(0.229, 0.224, 0.225), validator=_three)


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"celeba: {path} does not exist; expected {_LAYOUT}") from None


def read_attributes(path: Path) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
    """Attribute names and, per image stem, its 0/1 labels (uint8) from ``list_attr_celeba.txt``."""
    lines = [ln for ln in _lines(path) if ln.strip()]
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise ValueError(f"celeba: {path}:1: expected the image count, got {lines[:1]!r}")
    names = tuple(lines[1].split())
    if not names or len(set(names)) != len(names):
        raise ValueError(f"celeba: {path}:2: expected distinct attribute names, got {lines[1]!r}")
    rows: dict[str, np.ndarray] = {}
    for lineno, line in enumerate(lines[2:], start=3):
        cells = line.split()
        values = cells[1:]
        if len(values) != len(names) or any(v not in ("-1", "1") for v in values):
            raise ValueError(
                f"celeba: {path}:{lineno}: expected a file name and {len(names)} values of -1/1, "
                f"got {line[:80]!r}"
            )
        rows[Path(cells[0]).stem] = (np.array(values, dtype=np.int8) > 0).astype(np.uint8)
    if int(lines[0]) != len(rows):
        raise ValueError(
            f"celeba: {path}: the first line says {int(lines[0])} images, the file lists "
            f"{len(rows)}"
        )
    return names, rows


def read_partition(path: Path, split: str) -> list[str]:
    """Stems of the images of ``split`` in ``list_eval_partition.txt``, in file order."""
    stems = []
    for lineno, line in enumerate(_lines(path), start=1):
        cells = line.split()
        if not cells:
            continue
        if len(cells) != 2 or cells[1] not in ("0", "1", "2"):
            raise ValueError(f"celeba: {path}:{lineno}: expected '<file> 0|1|2', got {line[:80]!r}")
        if cells[1] == _SPLITS[split]:
            stems.append(Path(cells[0]).stem)
    return stems


def _image_dir(root: Path, image_format: str) -> tuple[Path, str]:
    formats = ("png", "jpg") if image_format == "auto" else (image_format,)
    for fmt in formats:
        if (root / IMAGE_DIRS[fmt]).is_dir():
            return root / IMAGE_DIRS[fmt], fmt
    wanted = " or ".join(str(root / IMAGE_DIRS[f]) for f in formats)
    raise FileNotFoundError(f"celeba: no image folder {wanted}; expected {_LAYOUT}")


class CelebA(Dataset):
    """CelebA with its 40 binary attributes as tasks; accuracy per attribute [S].

    Reference: Liu et al., ICCV 2015; Sener & Koltun, NeurIPS 2018 (40 tasks, 64×64 images)
    [C:isl-org/MultiObjectiveOptimization].
    See the module docstring for the layout and the two task declarations.

    Args: the fields of :class:`CelebAConfig`.

    Example:
        >>> ds = CelebA(root="~/data/celeba", split="val")  # doctest: +SKIP
        >>> ds[0]["Smiling"]  # doctest: +SKIP
        tensor(1)
    """

    name = "celeba"
    Config = CelebAConfig

    def __init__(
        self,
        *,
        root: str = "",
        split: str = "train",
        size: int = 64,
        image_format: str = "auto",
        as_tasks: str = "per_attribute",
        mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
        std: tuple[float, float, float] = (0.229, 0.224, 0.225),
    ) -> None:
        self.config = CelebAConfig(
            root=root, split=split, size=size, image_format=image_format, as_tasks=as_tasks,
            mean=mean, std=std,
        )  # fmt: skip
        if not root:
            raise ConfigError(
                "dataset 'celeba': dataset.root is not set; set it to the folder holding " + _LAYOUT
            )
        base = Path(root).expanduser()
        self.names, rows = read_attributes(base / ATTR_FILE)
        stems = read_partition(base / PARTITION_FILE, split)
        self.image_dir, self.image_format = _image_dir(base, image_format)
        self._files = _check_files(stems, rows, self.image_dir, self.image_format, base)
        self._labels = torch.from_numpy(np.stack([rows[s] for s in stems]))  # [N, 40] uint8
        self._mean = torch.tensor(mean).view(3, 1, 1)
        self._std = torch.tensor(std).view(3, 1, 1)
        if as_tasks == "per_attribute":
            self._tasks: tuple[Task, ...] = tuple(
                ClassificationTask(name=n, num_classes=2) for n in self.names
            )
        else:
            k = len(self.names)
            self._tasks = (MultiLabelTask(name="attributes", num_labels=k, label_names=self.names),)

    @property
    def tasks(self) -> tuple[Task, ...]:
        return self._tasks

    def __len__(self) -> int:
        return len(self._files)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        path = self._files[index]
        try:
            with Image.open(path) as img:
                if img.mode != "RGB":
                    raise ValueError(f"celeba: {path}: expected an RGB image, got mode {img.mode}")
                size = self.config.size
                small = img.resize((size, size), Image.Resampling.BILINEAR)
                array = np.asarray(small, dtype=np.float32)
        except OSError as exc:
            raise ValueError(f"celeba: cannot read image {path}: {exc}") from None
        image = (torch.from_numpy(array).permute(2, 0, 1) / 255.0 - self._mean) / self._std
        labels = self._labels[index]
        if self.config.as_tasks == "multilabel":
            return {"image": image, "attributes": labels.float()}
        return {"image": image} | {n: labels[k].long() for k, n in enumerate(self.names)}


def _check_files(
    stems: list[str], rows: dict[str, np.ndarray], image_dir: Path, fmt: str, root: Path
) -> list[Path]:
    """The image path of each stem, checked to exist and to have attribute labels."""
    if not stems:
        raise ValueError(f"celeba: {root / PARTITION_FILE} lists no image for this split")
    unlabelled = [s for s in stems if s not in rows]
    if unlabelled:
        raise ValueError(
            f"celeba: {len(unlabelled)} image(s) of the split have no row in {root / ATTR_FILE}, "
            f"e.g. {unlabelled[0]}.jpg"
        )
    present = {p.name for p in image_dir.iterdir()}
    missing = [s for s in stems if f"{s}.{fmt}" not in present]
    if missing:
        raise FileNotFoundError(
            f"celeba: {len(missing)} of {len(stems)} images of the split are missing from "
            f"{image_dir}, e.g. {missing[0]}.{fmt}"
        )
    return [image_dir / f"{s}.{fmt}" for s in stems]


@hookimpl
def pymtl_register_datasets() -> list[type[Dataset]]:
    return [CelebA]
