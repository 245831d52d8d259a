"""The MTAN ``.npy`` layout shared by ``nyuv2`` and ``cityscapes`` [S][C:lorenmt/mtan].

Reference: SPEC-data §1a, §1b. One folder per split and per array kind, one ``{i}.npy`` per
sample with ``i`` running contiguously from 0 (MTAN's loader counts ``image/*.npy`` and reads
indices 0..N−1). Arrays are channel-last and float (float32 or float64 accepted):

* ``image/{i}.npy``: [H, W, 3] in [0, 1];
* label maps: [H, W] integer-valued class ids, −1 = ignore;
* ``depth/{i}.npy``: [H, W, 1] ≥ 0, 0 = invalid (metres on NYUv2, inverse depth on Cityscapes);
* ``normal/{i}.npy``: [H, W, 3] unit vectors in [−1, 1], all-zero = invalid.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor

from pymtl.data._checks import (
    check_dtype,
    check_labels,
    check_normals,
    check_range,
    check_shape,
    fail,
    load_npy,
    require_root,
)
from pymtl.data._dense import FileDataset, image_tensor, label_tensor, map_tensor
from pymtl.tasks.base import DepthTask, NormalsTask, SegmentationTask, Task

__all__ = ["SPLIT_FOLDERS", "MTANDataset", "count_indexed"]

SPLIT_FOLDERS = {"train": "train", "val": "val", "test": "val"}
"""MTAN has no test split: its "test" set is ``val/`` (``train=False`` reads ``val/``)."""

_INDEXED = re.compile(r"^(\d+)\.npy$")


def count_indexed(folder: Path, *, what: str) -> int:
    """N for a folder holding exactly ``0.npy`` … ``{N-1}.npy``; a clear error otherwise."""
    if not folder.is_dir():
        fail(folder, what, "the folder is missing", got="no folder", expected="a folder of .npy")
    indices = sorted(int(m[1]) for p in folder.iterdir() if (m := _INDEXED.match(p.name)))
    if not indices:
        fail(folder, what, "no samples", got="no {i}.npy files", expected="0.npy, 1.npy, ...")
    if indices != list(range(len(indices))):
        missing = sorted(set(range(indices[-1] + 1)) - set(indices))
        fail(
            folder,
            what,
            "sample indices are not contiguous from 0",
            got=f"{len(indices)} files, max index {indices[-1]}, missing {missing[:5]}",
            expected=f"0.npy ... {len(indices) - 1}.npy",
        )
    return len(indices)


class MTANDataset(FileDataset):
    """Base of the MTAN-layout datasets [S][C:lorenmt/mtan]; subclasses call :meth:`_init_mtan`.

    ``folders`` maps each task name to its array folder inside the split folder.
    """

    title: str = "MTAN"

    def _init_mtan(self, root: str, split: str, folders: Mapping[str, str], *, layout: str) -> None:
        base = require_root(root, dataset=self.name, layout=layout)
        self.split_dir = base / SPLIT_FOLDERS[split]
        self.folders = dict(folders)
        self._len = count_indexed(self.split_dir / "image", what=f"{self.title} images")
        for task in self.tasks:
            folder = self.split_dir / self.folders[task.name]
            n = count_indexed(folder, what=f"{self.title} {task.name} arrays")
            if n != self._len:
                fail(
                    folder,
                    f"{self.title} {task.name} arrays",
                    "sample count differs from image/",
                    got=n,
                    expected=self._len,
                )

    def __len__(self) -> int:
        return self._len

    def _load(self, index: int, *, validate: bool) -> dict[str, Tensor]:
        path = self.split_dir / "image" / f"{index}.npy"
        what = f"{self.title} image"
        image = load_npy(path, what=what)
        check_dtype(image, "f", path=path, what=what)
        if image.ndim != 3 or image.shape[2] != 3:
            fail(path, what, "wrong shape", got=image.shape, expected="(H, W, 3)")
        if validate:
            check_range(image, 0.0, 1.0, path=path, what=what)
        item = {"image": image_tensor(image)}
        for task in self.tasks:
            path = self.split_dir / self.folders[task.name] / f"{index}.npy"
            item[task.name] = self._decode(task, path, image.shape[:2], validate)
        return item

    def _decode(self, task: Task, path: Path, size: tuple[int, ...], validate: bool) -> Tensor:
        what = f"{self.title} {task.name} ({task.kind})"
        arr = load_npy(path, what=what)
        if isinstance(task, SegmentationTask):
            check_dtype(arr, "fiu", path=path, what=what)
            check_shape(arr, (*size,), path=path, what=what)
            if validate:
                check_labels(arr, task.num_classes, task.ignore_index, path=path, what=what)
            return label_tensor(arr)
        check_dtype(arr, "f", path=path, what=what)
        check_shape(arr, (*size, task.channels), path=path, what=what)
        if validate and isinstance(task, DepthTask):
            check_range(arr, 0.0, float("inf"), path=path, what=what)
        elif validate and isinstance(task, NormalsTask):
            check_normals(arr, path=path, what=what)
        return map_tensor(arr)
