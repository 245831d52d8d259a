"""Taskonomy (``taskonomy``): indoor views with dense labels, in the 5-task setting of Standley.

Reference: Zamir et al., "Taskonomy", CVPR 2018; layout and encodings from the dataset README
[S][C:StanfordVL/taskonomy]; the task set and target standardisation of Standley et al., ICML
2020 [C:tstandley/taskgrouping]; SPEC-data §1d, SPEC-methods §4.1.

Layouts, detected from the PNG files under ``root/rgb``:

* flat (the sample building): ``root/{domain}/point_{p}_view_{v}_domain_{domain}.png``. It is
  a single building without a split, so ``split`` must be ``"all"``;
* nested (omnidata): ``root/{domain}/taskonomy/{building}/point_…_domain_{domain}.png`` (any
  depth of folders works; the building is the folder holding the files).

A label's path is the RGB path with ``rgb`` replaced by the domain in the first folder and in
the file name's ``_domain_rgb`` suffix. Buildings are chosen by ``buildings``, else by
``split_file``: the Taskonomy split CSV (``name,train,val,test`` rows of 0/1, header optional;
``split`` picks the column) or a list of buildings, one a line (Standley's
``train_models.txt``), else all of them when ``split = "all"``.

Targets (task name = domain name), resized to ``size`` × ``size``:

* ``segment_semantic``: 8-bit labels, 0 = uncertain (ignored), 1 = background, 2..17 = COCO
  classes (named in the order of Taskonomy's ``coco_selected_classes.txt``; that label k is
  line k − 1 of it is an inference). Nearest. [H, W] int64; 18 head channels as Standley.
* ``depth_zbuffer``: 16-bit, units of 1/512 m. A pixel is valid iff raw < 2**13 (16 m; larger
  values are sky or far/invalid), the mask Standley uses. Nearest, so invalid values never mix
  into valid ones. ``targets="metric"``: metres, invalid pixels 0 (a ``DepthTask``).
* ``normal``: 8-bit RGB, 127-centred; decoded ``x/255*2 − 1``, bilinear, re-normalised to unit
  length; pixels with invalid depth are the zero vector (ignored by ``NormalsTask``, whose
  loss is declared L1 as in Standley's code).
* ``keypoints2d``, ``edge_texture``, ``edge_occlusion``: 16-bit; bilinear; ``"metric"``:
  ``raw / 65535`` in [0, 1]. ``edge_occlusion`` is NaN where depth is invalid (Standley masks
  it); keypoints and texture edges are never masked (nor are they in Standley's code).

``targets="standley"`` standardises as Standley's loader does: depth ``(raw − 1500)/1000``,
keypoints ``(raw − 50)/100``, texture edges ``(raw − 718)/1070``, occlusion edges
``(raw − 56.0248)/239.1265``, invalid pixels NaN; depth is then a ``DenseRegressionTask``.
The image is bilinear-resized RGB in [0, 1], normalised by ``mean``/``std`` (Standley feeds
[0, 1]: mean 0, std 1). No augmentation: flips belong to the transforms.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, ClassVar

import attrs
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from pymtl.data.base import Dataset
from pymtl.errors import ConfigError
from pymtl.hookspecs import hookimpl
from pymtl.tasks.base import DepthTask, NormalsTask, SegmentationTask, Task
from pymtl.tasks.dense_regression import DenseRegressionTask

__all__ = ["DOMAINS", "SEMANTIC_CLASSES", "STANDLEY_TASKS", "Taskonomy", "TaskonomyConfig"]

DOMAINS = ("segment_semantic", "depth_zbuffer", "normal", "keypoints2d", "edge_texture",
           "edge_occlusion")  # fmt: skip
STANDLEY_TASKS = ("segment_semantic", "depth_zbuffer", "normal", "keypoints2d", "edge_occlusion")
"""s, d, n, k, e of Standley et al.: their code maps ``e`` to ``edge_occlusion``."""
SEMANTIC_CLASSES = ("uncertain", "background", "bottle", "chair", "couch", "potted plant", "bed",
                    "dining table", "toilet", "tv", "microwave", "oven", "toaster", "sink",
                    "refrigerator", "book", "clock", "vase")  # fmt: skip
DEPTH_UNITS_PER_METRE = 512.0
DEPTH_VALID_BELOW = 2**13
_STANDLEY = {"depth_zbuffer": (1500.0, 1000.0), "keypoints2d": (50.0, 100.0),
             "edge_texture": (718.0, 1070.0), "edge_occlusion": (56.0248, 239.1265)}  # fmt: skip
_MODES = {"rgb": ("RGB",), "segment_semantic": ("L", "P"), "normal": ("RGB",)}
_MODES_16BIT = ("I;16", "I;16B", "I")
_SUFFIX = "_domain_rgb.png"
_LAYOUT = (
    "rgb/point_0_view_0_domain_rgb.png (sample building) or "
    "rgb/taskonomy/<building>/point_0_view_0_domain_rgb.png (omnidata), with the same names "
    "under one folder per domain (depth_zbuffer/…_domain_depth_zbuffer.png, ...)"
)


def _tasks_ok(instance: Any, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    unknown = [t for t in value if t not in DOMAINS]
    if not value or unknown or len(set(value)) != len(value):
        raise ValueError(
            f"dataset 'taskonomy': tasks must be distinct names from {', '.join(DOMAINS)} "
            f"(got {value!r})"
        )


def _positive3(instance: Any, attribute: attrs.Attribute[Any], value: tuple[float, ...]) -> None:
    if len(value) != 3 or (attribute.name == "std" and min(value) <= 0):
        raise ValueError(f"dataset 'taskonomy': {attribute.name} must be 3 numbers (got {value})")


@attrs.frozen(kw_only=True)
class TaskonomyConfig:
    """Options of ``taskonomy``.

    Attributes:
        root: folder holding ``rgb/`` and one folder per domain.
        split: ``train``, ``val``, ``test`` (needs ``split_file`` or ``buildings``) or ``all``.
        split_file: Taskonomy split CSV, or a list of buildings one a line.
        buildings: explicit buildings (overrides ``split_file``).
        tasks: domains to load, in head order (default: Standley's s, d, n, k, e).
        size: output side in pixels (RGB is 512).
        targets: ``metric`` (metres, [0, 1]) or ``standley`` (standardised as Standley).
        skip_incomplete: drop views lacking a label file (and absent buildings) instead of
            failing.
        mean, std: RGB normalisation after scaling to [0, 1] (default: ImageNet's).
    """

    root: str = ""
    split: str = attrs.field(default="train", validator=attrs.validators.in_(
        ("train", "val", "test", "all")))  # fmt: skip
    split_file: str = ""
    buildings: tuple[str, ...] = ()
    tasks: tuple[str, ...] = attrs.field(default=STANDLEY_TASKS, validator=_tasks_ok)
    size: int = attrs.field(default=256, validator=attrs.validators.gt(0))
    targets: str = attrs.field(default="metric", validator=attrs.validators.in_(
        ("metric", "standley")))  # fmt: skip
    skip_incomplete: bool = False
    mean: tuple[float, float, float] = attrs.field(default=(0.485, 0.456, 0.406),
                                                   validator=_positive3)  # fmt: skip
    std: tuple[float, float, float] = attrs.field(default=(0.229, 0.224, 0.225),
                                                  validator=_positive3)  # fmt: skip


def _open(path: Path, domain: str, modes: tuple[str, ...]) -> np.ndarray:
    """The PNG at ``path`` as an array, checked to be in one of ``modes``."""
    try:
        with Image.open(path) as img:
            img.load()
            mode, array = img.mode, np.asarray(img)
    except FileNotFoundError:
        raise FileNotFoundError(f"taskonomy: {domain} file {path} does not exist") from None
    except OSError as exc:
        raise ValueError(f"taskonomy: cannot read {domain} image {path}: {exc}") from None
    if mode not in modes:
        raise ValueError(
            f"taskonomy: {path}: {domain} must be a PNG of mode {' or '.join(modes)}, got {mode}"
        )
    return array


def _resize(x: Tensor, size: int, *, nearest: bool) -> Tensor:
    """[C, H, W] float → [C, size, size]: nearest (pixel centres) or antialiased bilinear."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    if nearest:
        return F.interpolate(x[None], size=(size, size), mode="nearest-exact")[0]
    out = F.interpolate(x[None], (size, size), mode="bilinear", align_corners=False, antialias=True)
    return out[0]


def _scan(rgb_root: Path) -> dict[tuple[str, ...], list[str]]:
    """Folders under ``rgb_root`` (as path parts) → the sorted stems of their RGB files."""
    found: dict[tuple[str, ...], list[str]] = {}
    for dirpath, _dirs, files in os.walk(rgb_root):
        names = sorted(f for f in files if f.endswith(".png"))
        bad = [f for f in names if not f.endswith(_SUFFIX)]
        if bad:
            raise ValueError(
                f"taskonomy: {Path(dirpath) / bad[0]}: RGB file names must end in {_SUFFIX!r}"
            )
        if names:
            found[Path(dirpath).relative_to(rgb_root).parts] = [f[: -len(_SUFFIX)] for f in names]
    if not found:
        raise FileNotFoundError(
            f"taskonomy: no *{_SUFFIX} files under {rgb_root}; expected {_LAYOUT}"
        )
    if () in found and len(found) > 1:
        raise ValueError(
            f"taskonomy: {rgb_root} mixes the flat and nested layouts; expected {_LAYOUT}"
        )
    return found


def _read_split_file(path: Path, split: str) -> set[str]:
    """Buildings of ``split`` in a Taskonomy split CSV, or every line of a building list."""
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    except FileNotFoundError:
        raise FileNotFoundError(f"taskonomy: split_file {path} does not exist") from None
    rows = [(i + 1, ln) for i, ln in enumerate(lines) if ln]
    if not any("," in ln for _, ln in rows):
        return {ln for _, ln in rows}
    if split == "all":
        raise ConfigError(
            f"taskonomy: split_file {path} is a split CSV; set split to train/val/test"
        )
    column = ("train", "val", "test").index(split) + 1
    chosen = set()
    for k, (lineno, line) in enumerate(rows):
        cells = [c.strip() for c in line.split(",")]
        flags_ok = len(cells) == 4 and all(c in ("0", "1") for c in cells[1:])
        if not flags_ok and k == 0 and len(cells) == 4:
            continue  # header row
        if not flags_ok:
            raise ValueError(
                f"taskonomy: {path}:{lineno}: expected 'building,train,val,test' with 0/1 flags, "
                f"got {line!r}"
            )
        if cells[column] == "1":
            chosen.add(cells[0])
    return chosen


def _selected_dirs(
    found: dict[tuple[str, ...], list[str]], config: TaskonomyConfig, rgb_root: Path
) -> dict[tuple[str, ...], list[str]]:
    """The folders of the buildings the config selects (see the module docstring)."""
    if () in found:
        if config.split != "all" or config.split_file or config.buildings:
            raise ConfigError(
                f"taskonomy: {rgb_root} has the flat layout of one building, which has no "
                f"train/val/test split (got split={config.split!r}, split_file="
                f"{config.split_file!r}, buildings={config.buildings!r}); set dataset.split = "
                "'all' and leave split_file and buildings empty"
            )
        return found
    by_building: dict[str, tuple[str, ...]] = {}
    for parts in found:
        if parts[-1] in by_building:
            raise ValueError(
                f"taskonomy: building {parts[-1]!r} appears twice under {rgb_root}: "
                f"{'/'.join(by_building[parts[-1]])} and {'/'.join(parts)}"
            )
        by_building[parts[-1]] = parts
    if config.buildings:
        wanted = set(config.buildings)
    elif config.split_file:
        wanted = _read_split_file(Path(config.split_file).expanduser(), config.split)
    elif config.split == "all":
        wanted = set(by_building)
    else:
        raise ConfigError(
            f"taskonomy: split {config.split!r} needs dataset.split_file (a Taskonomy split "
            f"CSV or a list of buildings) or dataset.buildings; {rgb_root} holds "
            f"{len(by_building)} buildings (or set split = 'all' to use every one)"
        )
    missing = sorted(wanted - set(by_building))
    if missing and not config.skip_incomplete:
        raise FileNotFoundError(
            f"taskonomy: {len(missing)} selected building(s) are not under {rgb_root}: "
            f"{', '.join(missing[:5])}; set dataset.skip_incomplete = true to skip them"
        )
    return {by_building[b]: found[by_building[b]] for b in sorted(wanted & set(by_building))}


def _records(
    root: Path, dirs: dict[tuple[str, ...], list[str]], domains: tuple[str, ...], *, skip: bool
) -> tuple[list[tuple[tuple[str, ...], str]], int]:
    """(folder parts, stem) of every view that has a file for each of ``domains``."""
    records: list[tuple[tuple[str, ...], str]] = []
    missing: list[Path] = []
    for parts, stems in dirs.items():
        listing = {}
        for d in domains:
            folder = root.joinpath(d, *parts)
            listing[d] = set(os.listdir(folder)) if folder.is_dir() else set()
        for stem in stems:
            lacking = [d for d in domains if f"{stem}_domain_{d}.png" not in listing[d]]
            if lacking:
                missing.append(root.joinpath(lacking[0], *parts, f"{stem}_domain_{lacking[0]}.png"))
            else:
                records.append((parts, stem))
    if missing and not skip:
        total = len(records) + len(missing)
        raise FileNotFoundError(
            f"taskonomy: {len(missing)} of {total} views lack a label file, e.g. {missing[0]}; "
            "set dataset.skip_incomplete = true to drop them"
        )
    if not records:
        raise FileNotFoundError(
            f"taskonomy: no complete view under {root} for {', '.join(domains)}"
        )
    return records, len(missing)


def _root(root: str) -> Path:
    if not root:
        raise ConfigError(
            f"dataset 'taskonomy': dataset.root is not set; set it to the folder laid out as "
            f"{_LAYOUT}"
        )
    path = Path(root).expanduser()
    if not (path / "rgb").is_dir():
        raise FileNotFoundError(
            f"dataset 'taskonomy': {path / 'rgb'} is not a folder; expected {_LAYOUT}"
        )
    return path


class Taskonomy(Dataset):
    """Taskonomy views with segmentation, depth, normals, keypoints and edges [S].

    Reference: Zamir et al., CVPR 2018 (data); Standley et al., ICML 2020 (task set, masks,
    standardisation) [C:tstandley/taskgrouping]. See the module docstring for layouts,
    encodings and units.

    Args: the fields of :class:`TaskonomyConfig`.

    Example:
        >>> ds = Taskonomy(root="~/taskonomy-sample-model-1", split="all")  # doctest: +SKIP
        >>> ds[0]["depth_zbuffer"].shape  # doctest: +SKIP
        torch.Size([1, 256, 256])
    """

    name = "taskonomy"
    Config = TaskonomyConfig
    _MASKED: ClassVar[tuple[str, ...]] = ("depth_zbuffer", "normal", "edge_occlusion")

    def __init__(
        self,
        *,
        root: str = "",
        split: str = "train",
        split_file: str = "",
        buildings: tuple[str, ...] = (),
        tasks: tuple[str, ...] = STANDLEY_TASKS,
        size: int = 256,
        targets: str = "metric",
        skip_incomplete: bool = False,
        mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
        std: tuple[float, float, float] = (0.229, 0.224, 0.225),
    ) -> None:
        self.config = TaskonomyConfig(
            root=root, split=split, split_file=split_file, buildings=tuple(buildings),
            tasks=tuple(tasks), size=size, targets=targets, skip_incomplete=skip_incomplete,
            mean=mean, std=std,
        )  # fmt: skip
        self.root = _root(self.config.root)
        found = _scan(self.root / "rgb")
        self.layout = "flat" if () in found else "nested"
        dirs = _selected_dirs(found, self.config, self.root / "rgb")
        self._needs_depth = any(t in self._MASKED for t in self.config.tasks)
        extra = ("depth_zbuffer",) if self._needs_depth else ()
        domains = tuple(dict.fromkeys(("rgb", *self.config.tasks, *extra)))
        self._records, self.skipped = _records(
            self.root, dirs, domains, skip=self.config.skip_incomplete
        )
        self._mean = torch.tensor(self.config.mean).view(3, 1, 1)
        self._std = torch.tensor(self.config.std).view(3, 1, 1)
        self._tasks = tuple(_task(t, self.config.targets) for t in self.config.tasks)
        self._checked = False

    @property
    def tasks(self) -> tuple[Task, ...]:
        return self._tasks

    def __len__(self) -> int:
        return len(self._records)

    def path(self, index: int, domain: str) -> Path:
        """The file of view ``index`` for ``domain`` (``"rgb"`` or a task)."""
        parts, stem = self._records[index]
        return self.root.joinpath(domain, *parts, f"{stem}_domain_{domain}.png")

    def _load(self, index: int, domain: str, hw: tuple[int, int]) -> Tensor:
        """The raw [C, H, W] float values of a label file, checked against the RGB size."""
        path = self.path(index, domain)
        array = _open(path, domain, _MODES.get(domain, _MODES_16BIT))
        if array.shape[:2] != hw:
            raise ValueError(
                f"taskonomy: {path}: {domain} is {array.shape[1]}x{array.shape[0]}, expected the "
                f"RGB's {hw[1]}x{hw[0]}"
            )
        x = torch.from_numpy(array.astype(np.float32))
        return x.permute(2, 0, 1) if x.dim() == 3 else x[None]

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        rgb = _open(self.path(index, "rgb"), "rgb", _MODES["rgb"])
        hw = (rgb.shape[0], rgb.shape[1])
        image = torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1) / 255.0
        image = (_resize(image, self.config.size, nearest=False) - self._mean) / self._std
        item = {"image": image}
        raw_depth = None  # [1, size, size] raw 16-bit values, nearest-resized
        if self._needs_depth:
            raw_depth = _resize(
                self._load(index, "depth_zbuffer", hw), self.config.size, nearest=True
            )
        for task in self.config.tasks:
            item[task] = self._target(index, task, hw, raw_depth)
        self._checked = True
        return item

    def _target(
        self, index: int, task: str, hw: tuple[int, int], raw_depth: Tensor | None
    ) -> Tensor:
        size, metric = self.config.size, self.config.targets == "metric"
        if task in self._MASKED:
            assert raw_depth is not None  # loaded whenever a masked task is selected
            valid = raw_depth < DEPTH_VALID_BELOW
        if task == "segment_semantic":
            labels = self._load(index, task, hw)
            if labels.max() >= len(SEMANTIC_CLASSES):
                raise ValueError(
                    f"taskonomy: {self.path(index, task)}: labels must be in 0..17, got "
                    f"{int(labels.max())}"
                )
            return _resize(labels, size, nearest=True)[0].long()
        if task == "normal":
            normals = self._load(index, task, hw) * (2.0 / 255.0) - 1.0
            if not self._checked:
                _check_normals(normals, self.path(index, task))
            normals = F.normalize(_resize(normals, size, nearest=False), dim=0)
            return normals * valid
        if task == "depth_zbuffer":
            assert raw_depth is not None
            if metric:
                return torch.where(valid, raw_depth / DEPTH_UNITS_PER_METRE, 0.0)
            offset, scale = _STANDLEY[task]
            return torch.where(valid, (raw_depth - offset) / scale, math.nan)
        raw = _resize(self._load(index, task, hw), size, nearest=False)
        offset, scale = (0.0, 65535.0) if metric else _STANDLEY[task]
        values = (raw - offset) / scale
        if task == "edge_occlusion":
            values = torch.where(valid, values, math.nan)
        return values


def _check_normals(normals: Tensor, path: Path) -> None:
    """First-sample check: decoded 127-centred normals have length ≈ 1 (median over pixels)."""
    median = float(normals.norm(dim=0).median())
    if not 0.8 <= median <= 1.2:
        raise ValueError(
            f"taskonomy: {path}: decoded normals have median length {median:.3f}, expected ≈ 1 "
            "(8-bit, 127-centred x/255*2-1)"
        )


def _task(domain: str, targets: str) -> Task:
    """The task declaration of one domain."""
    if domain == "segment_semantic":
        return SegmentationTask(
            name=domain, num_classes=len(SEMANTIC_CLASSES), ignore_index=0,
            class_names=SEMANTIC_CLASSES,
        )  # fmt: skip
    if domain == "normal":
        return NormalsTask(name=domain, loss_type="l1")
    if domain == "depth_zbuffer" and targets == "metric":
        return DepthTask(name=domain, invalid_value=0.0)
    return DenseRegressionTask(name=domain)


@hookimpl
def pymtl_register_datasets() -> list[type[Dataset]]:
    return [Taskonomy]
