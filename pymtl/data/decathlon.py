"""SVHN + Omniglot (``svhn_omniglot``): two classification domains presented as one 2-task dataset.

Reference: Rebuffi et al., "Learning multiple visual domains with residual adapters", NeurIPS
2017 (Visual Decathlon domains) [S]; MTAN's Decathlon transforms and statistics
[C:lorenmt/mtan]; torchvision's SVHN and Omniglot file formats; SPEC-data §1f.

Design. Every item belongs to one domain: it carries that domain's label and marks the other
task's label missing, with target −1 (the tasks' ``ignore_index``) and ``"<task>.mask"`` False.
The two domains are concatenated, SVHN first (:meth:`SVHNOmniglot.domain_indices` gives each
range). A shuffling loader mixes them, and each task's loss averages over the samples that
carry its label (``Task.loss(..., labelled=mask)``); a sampler over ``domain_indices`` gives
one-domain batches instead (MTAN alternates domains).

Formats (``format = "auto"``: Decathlon when ``root`` holds ``decathlon-1.0-data/`` or
``svhn/train/``, else torchvision):

* ``decathlon``: ``[decathlon-1.0-data/]{svhn,omniglot}/{train,val,test}/<class>/*.png|jpg``.
  A class's index is its folder's position among the sorted ``train`` folders (as
  ``ImageFolder``), whatever the split, so a split missing a class keeps the same indices.
  ``test`` needs class folders too (the Decathlon challenge's test labels are not public).
* ``torchvision``: ``train_32x32.mat`` / ``test_32x32.mat`` (``X`` [32, 32, 3, N] uint8, ``y``
  1..10 with 10 meaning digit 0, remapped to 0) and ``omniglot-py/images_background`` +
  ``images_evaluation/<alphabet>/<character>/*.png`` (all 1623 characters, background first,
  sorted). These files have no val (nor Omniglot test) split: SVHN ``val`` is the last
  ``val_fraction`` of ``train_32x32.mat``; for Omniglot, each character's drawings (sorted by
  name) end with ``test_fraction`` test and, before them, ``val_fraction`` val [pymtl]. The
  Omniglot PNGs draw black strokes on white; ``invert_omniglot`` makes them white on black,
  which Decathlon's statistics imply (mean 0.081) — an inference, not checked on its files.

Images: ``Resize(size)`` of the shorter side (bilinear) and ``CenterCrop(size)``, as MTAN does
with 72; grey is replicated on 3 channels; per-domain normalisation from MTAN's
``decathlon_mean_std.pickle``: SVHN mean (0.4377, 0.4438, 0.4728), std (0.1980, 0.2010, 0.1970);
Omniglot 0.0810 / 0.2705 on each channel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from PIL import Image
from scipy.io import loadmat
from torch import Tensor

from pymtl.data.base import Dataset
from pymtl.errors import ConfigError
from pymtl.hookspecs import hookimpl
from pymtl.tasks.base import ClassificationTask, Task

__all__ = ["DOMAIN_STATS", "SVHNOmniglot", "SVHNOmniglotConfig"]

DOMAINS = ("svhn", "omniglot")
DOMAIN_STATS = {
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "omniglot": ((0.0810,) * 3, (0.2705,) * 3),
}
_MODES = {"svhn": ("RGB",), "omniglot": ("L", "1", "RGB")}
_EXTENSIONS = (".png", ".jpg", ".jpeg")
_LAYOUT = (
    "decathlon-1.0-data/{svhn,omniglot}/{train,val,test}/<class>/*.png (Decathlon) or "
    "train_32x32.mat + test_32x32.mat + omniglot-py/images_{background,evaluation}/ (torchvision)"
)


def _fraction(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0.0 <= value < 0.5:
        raise ValueError(
            f"dataset 'svhn_omniglot': {attribute.name} must be in [0, 0.5) (got {value})"
        )


@attrs.frozen(kw_only=True)
class SVHNOmniglotConfig:
    """Options of ``svhn_omniglot``.

    Attributes:
        root: folder holding ``decathlon-1.0-data/`` (or its domains) or the torchvision files.
        split: ``train``, ``val`` or ``test``.
        format: ``auto``, ``decathlon`` or ``torchvision``.
        size: side of the square crop (MTAN: 72).
        val_fraction: torchvision files only: share held out as ``val``.
        test_fraction: torchvision Omniglot only: share of each character's drawings for test.
        invert_omniglot: torchvision Omniglot only: white strokes on black, as in Decathlon.
    """

    root: str = ""
    split: str = attrs.field(
        default="train", validator=attrs.validators.in_(("train", "val", "test"))
    )
    format: str = attrs.field(
        default="auto", validator=attrs.validators.in_(("auto", "decathlon", "torchvision"))
    )
    size: int = attrs.field(default=72, validator=attrs.validators.gt(0))
    val_fraction: float = attrs.field(default=0.2, validator=_fraction)
    test_fraction: float = attrs.field(default=0.2, validator=_fraction)
    invert_omniglot: bool = True


Entry = tuple[Path | int, int]
"""An image (a file, or an index into the SVHN array) and its class index."""


def _sorted_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def _image_folder(domain_dir: Path, split: str) -> tuple[list[Entry], int]:
    """Entries of ``domain_dir/split/<class>/*`` and the number of classes (``train``'s)."""
    classes = _sorted_dirs(domain_dir / "train")
    if not classes:
        raise FileNotFoundError(
            f"svhn_omniglot: no class folders in {domain_dir / 'train'}; expected {_LAYOUT}"
        )
    index = {c: k for k, c in enumerate(classes)}
    entries: list[Entry] = []
    for name in _sorted_dirs(domain_dir / split):
        if name not in index:
            raise ValueError(
                f"svhn_omniglot: class folder {domain_dir / split / name} has no counterpart in "
                f"{domain_dir / 'train'}, which defines the class indices"
            )
        files = sorted((domain_dir / split / name).iterdir())
        entries += [(f, index[name]) for f in files if f.suffix.lower() in _EXTENSIONS]
    if not entries:
        raise FileNotFoundError(
            f"svhn_omniglot: no labelled images in {domain_dir / split}/<class>/"
        )
    return entries, len(classes)


def _load_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images [N, 32, 32, 3] uint8, labels [N] int64 with 10 → 0) of a torchvision SVHN file."""
    if not path.is_file():
        raise FileNotFoundError(f"svhn_omniglot: {path} does not exist; expected {_LAYOUT}")
    try:
        mat = loadmat(path)
    except (ValueError, NotImplementedError, TypeError) as exc:
        raise ValueError(f"svhn_omniglot: cannot read {path}: {exc}") from None
    x, y = mat.get("X"), mat.get("y")
    if (
        not isinstance(x, np.ndarray)
        or x.dtype != np.uint8
        or x.ndim != 4
        or x.shape[:3] != (32, 32, 3)
    ):
        got = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else repr(type(x))
        raise ValueError(f"svhn_omniglot: {path}: X must be uint8 [32, 32, 3, N], got {got}")
    n = x.shape[3]
    if not isinstance(y, np.ndarray) or y.size != n or y.min() < 1 or y.max() > 10:
        got = f"{y.shape}, {y.min()}..{y.max()}" if isinstance(y, np.ndarray) and y.size else y
        raise ValueError(f"svhn_omniglot: {path}: y must hold {n} labels in 1..10, got {got}")
    return np.transpose(x, (3, 0, 1, 2)), (y.reshape(n).astype(np.int64) % 10)


def _tail_split(n: int, split: str, val_fraction: float, test_fraction: float) -> range:
    """Positions of ``split`` among n ordered items: [train | val | test] from the end."""
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    bounds = {"train": (0, n - n_val - n_test), "val": (n - n_val - n_test, n - n_test)}
    return range(*bounds.get(split, (n - n_test, n)))


def _omniglot_tv(root: Path, config: SVHNOmniglotConfig) -> tuple[list[Entry], int]:
    """Entries of the torchvision Omniglot characters, split per character."""
    base = root / "omniglot-py"
    characters = [
        base / s / a / c
        for s in ("images_background", "images_evaluation")
        for a in _sorted_dirs(base / s)
        for c in _sorted_dirs(base / s / a)
    ]
    if not characters:
        raise FileNotFoundError(f"svhn_omniglot: no characters under {base}; expected {_LAYOUT}")
    entries: list[Entry] = []
    for k, folder in enumerate(characters):
        drawings = sorted(f for f in folder.iterdir() if f.suffix.lower() == ".png")
        part = _tail_split(len(drawings), config.split, config.val_fraction, config.test_fraction)
        if len(part) == 0:
            raise ValueError(
                f"svhn_omniglot: {folder} has {len(drawings)} drawings, too few for a non-empty "
                f"{config.split!r} split with val_fraction={config.val_fraction}, test_fraction="
                f"{config.test_fraction} (Omniglot has 20 per character)"
            )
        entries += [(drawings[i], k) for i in part]
    return entries, len(characters)


def _resize_crop(img: Image.Image, size: int) -> Image.Image:
    """torchvision's Resize(size) (shorter side, bilinear) then CenterCrop(size)."""
    w, h = img.size
    new = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    if new != (w, h):
        img = img.resize(new, Image.Resampling.BILINEAR)
    left, top = round((new[0] - size) / 2.0), round((new[1] - size) / 2.0)
    return img.crop((left, top, left + size, top + size))


def _detect(root: Path, format: str) -> tuple[str, Path]:
    """The format and the folder holding the data."""
    found = next(
        (d for d in (root / "decathlon-1.0-data", root) if (d / "svhn" / "train").is_dir()), None
    )
    if format == "decathlon" or (format == "auto" and found is not None):
        if found is None:
            raise FileNotFoundError(
                f"svhn_omniglot: no Decathlon folders under {root}; expected {_LAYOUT}"
            )
        return "decathlon", found
    return "torchvision", root


class SVHNOmniglot(Dataset):
    """SVHN digits and Omniglot characters as two classification tasks, one domain per item [S].

    Reference: Rebuffi et al., NeurIPS 2017 (Visual Decathlon); MTAN's Decathlon pipeline
    [C:lorenmt/mtan]. Items carry ``svhn``, ``omniglot`` (−1 when missing), ``svhn.mask`` and
    ``omniglot.mask``; see the module docstring for the design, formats and splits.

    Args: the fields of :class:`SVHNOmniglotConfig`.

    Example:
        >>> ds = SVHNOmniglot(root="~/data", split="val")  # doctest: +SKIP
        >>> item = ds[ds.domain_indices("omniglot")[0]]  # doctest: +SKIP
        >>> bool(item["svhn.mask"]), int(item["svhn"])  # doctest: +SKIP
        (False, -1)
    """

    name = "svhn_omniglot"
    Config = SVHNOmniglotConfig

    def __init__(
        self,
        *,
        root: str = "",
        split: str = "train",
        format: str = "auto",
        size: int = 72,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        invert_omniglot: bool = True,
    ) -> None:
        self.config = SVHNOmniglotConfig(
            root=root, split=split, format=format, size=size, val_fraction=val_fraction,
            test_fraction=test_fraction, invert_omniglot=invert_omniglot,
        )  # fmt: skip
        if not root:
            raise ConfigError(
                "dataset 'svhn_omniglot': dataset.root is not set; set it to the folder holding "
                + _LAYOUT
            )
        self.format, data_dir = _detect(Path(root).expanduser(), format)
        self._svhn_array: np.ndarray | None = None
        if self.format == "decathlon":
            svhn, n_svhn = _image_folder(data_dir / "svhn", split)
            omniglot, n_omniglot = _image_folder(data_dir / "omniglot", split)
        else:
            svhn, n_svhn = self._svhn_entries(data_dir), 10
            omniglot, n_omniglot = _omniglot_tv(data_dir, self.config)
        if n_svhn != 10:
            raise ValueError(
                f"svhn_omniglot: {data_dir / 'svhn' / 'train'} has {n_svhn} class folders, "
                "expected 10"
            )
        self._entries = {"svhn": svhn, "omniglot": omniglot}
        self._tasks = (
            ClassificationTask(name="svhn", num_classes=n_svhn),
            ClassificationTask(name="omniglot", num_classes=n_omniglot),
        )
        self._stats = {
            d: (torch.tensor(m).view(3, 1, 1), torch.tensor(s).view(3, 1, 1))
            for d, (m, s) in DOMAIN_STATS.items()
        }

    def _svhn_entries(self, root: Path) -> list[Entry]:
        split = self.config.split
        images, labels = _load_svhn_mat(
            root / f"{'test' if split == 'test' else 'train'}_32x32.mat"
        )
        part = (
            range(len(labels))
            if split == "test"
            else _tail_split(len(labels), split, self.config.val_fraction, 0.0)
        )
        if len(part) == 0:
            raise ValueError(
                f"svhn_omniglot: SVHN split {split!r} is empty with val_fraction="
                f"{self.config.val_fraction} of {len(labels)} images"
            )
        self._svhn_array = images
        return [(i, int(labels[i])) for i in part]

    @property
    def tasks(self) -> tuple[Task, ...]:
        return self._tasks

    def __len__(self) -> int:
        return len(self._entries["svhn"]) + len(self._entries["omniglot"])

    def domain_indices(self, domain: str) -> range:
        """The item indices of ``domain`` (``"svhn"`` or ``"omniglot"``)."""
        n_svhn = len(self._entries["svhn"])
        if domain not in DOMAINS:
            raise KeyError(f"svhn_omniglot: unknown domain {domain!r}; expected svhn or omniglot")
        return range(n_svhn) if domain == "svhn" else range(n_svhn, len(self))

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"svhn_omniglot: index {index} out of range [0, {len(self)})")
        n_svhn = len(self._entries["svhn"])
        domain = "svhn" if index < n_svhn else "omniglot"
        source, label = self._entries[domain][index if domain == "svhn" else index - n_svhn]
        img = _resize_crop(self._open(domain, source), self.config.size).convert("RGB")
        mean, std = self._stats[domain]
        x = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1) / 255.0
        item = {"image": (x - mean) / std}
        for d in DOMAINS:
            item[d] = torch.tensor(label if d == domain else -1)
            item[f"{d}.mask"] = torch.tensor(d == domain)
        return item

    def _open(self, domain: str, source: Path | int) -> Image.Image:
        """The image (RGB for SVHN, L for Omniglot), its mode checked."""
        if isinstance(source, int):
            assert self._svhn_array is not None
            return Image.fromarray(self._svhn_array[source])
        try:
            with Image.open(source) as img:
                if img.mode not in _MODES[domain]:
                    raise ValueError(
                        f"svhn_omniglot: {source}: {domain} images must be of mode "
                        f"{' or '.join(_MODES[domain])}, got {img.mode}"
                    )
                out = img.convert("L" if domain == "omniglot" else "RGB")
        except OSError as exc:
            raise ValueError(f"svhn_omniglot: cannot read image {source}: {exc}") from None
        invert = (
            domain == "omniglot" and self.format == "torchvision" and self.config.invert_omniglot
        )
        return out.point(lambda v: 255 - v) if invert else out


@hookimpl
def pymtl_register_datasets() -> list[type[Dataset]]:
    return [SVHNOmniglot]
