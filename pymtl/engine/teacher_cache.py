"""The teacher cache: a teacher's signals on the training split, computed once [pymtl].

With ``teacher.cache`` (``pymtl train --teacher-cache``) the frozen teacher runs once over the
training split, in item order, and its features at the loss's layers (and its outputs, when
the loss reads them) are written to one ``.npy`` file per (task, layer) and per task output,
in the teacher's dtype. Training then memory-maps them and reads the rows of each batch, so a
step costs one student forward instead of the student's plus the teacher's (T of them for
single-task teachers). The values are the teacher's exact outputs: the losses equal those
of a live teacher.

An item must be the same in every epoch, so a training split with random augmentation is
refused. ``meta.json`` holds what the cache was computed from (teacher run and checkpoint
step, dataset configuration, layers) and is written last: a cache from another teacher or
dataset, or one interrupted while being written, is recomputed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from pymtl.data.base import Dataset
from pymtl.distillation.base import Signals
from pymtl.engine.data import epoch_batches, loader
from pymtl.errors import ConfigError

__all__ = ["TeacherCache", "cache_identity"]

_VERSION = 1


def cache_identity(**parts: Any) -> str:
    """A hash of what a cache is computed from (JSON-able keyword values)."""
    blob = json.dumps({"version": _VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class TeacherCache:
    """Memory-mapped teacher signals of every training item.

    Args:
        folder: the cache folder (``meta.json`` and one ``.npy`` per array).
        tasks: task names, in loss order.
        layers: number of feature layers per task.
        outputs: whether task outputs are stored.
    """

    def __init__(self, folder: Path, tasks: Sequence[str], layers: int, outputs: bool) -> None:
        self.folder, self.tasks, self.layers, self.outputs = folder, tuple(tasks), layers, outputs
        self.arrays = {
            name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in self._names()
        }

    def _names(self) -> list[str]:
        names = [f"{t}.layer{j}" for t in self.tasks for j in range(self.layers)]
        return names + ([f"{t}.output" for t in self.tasks] if self.outputs else [])

    def read(self, indices: Sequence[int], device: torch.device) -> Signals:
        """The cached signals of items ``indices``, on ``device``."""
        rows = np.asarray(indices, dtype=np.int64)

        def take(name: str) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(self.arrays[name][rows])).to(device)

        features = {t: [take(f"{t}.layer{j}") for j in range(self.layers)] for t in self.tasks}
        outputs = {t: take(f"{t}.output") for t in self.tasks} if self.outputs else {}
        return Signals(features, outputs)

    @classmethod
    def open_or_build(
        cls,
        folder: Path,
        identity: str,
        compute: Any,
        dataset: Dataset,
        *,
        outputs: bool,
        layers: int,
        batch_size: int,
        progress: bool = False,
    ) -> TeacherCache:
        """Open the cache in ``folder`` if it was computed from ``identity``; otherwise run
        ``compute(x) -> Signals`` (the teacher, under no_grad) over ``dataset`` and write it."""
        if dataset.augments:
            raise ConfigError(
                f"--teacher-cache: the training split of dataset {dataset.name!r} is augmented "
                "(its items change between epochs), so the teacher's signals cannot be cached; "
                "turn augmentation off (synthetic: --set dataset.hflip=false) or drop the cache"
            )
        tasks = dataset.task_names
        meta = folder / "meta.json"
        if meta.is_file() and json.loads(meta.read_text()).get("identity") == identity:
            return cls(folder, tasks, layers, outputs)
        meta.unlink(missing_ok=True)
        folder.mkdir(parents=True, exist_ok=True)
        _write(folder, compute, dataset, batch_size, progress=progress, outputs=outputs)
        meta.write_text(json.dumps({"identity": identity, "items": len(dataset)}, indent=2))
        return cls(folder, tasks, layers, outputs)


def _write(
    folder: Path, compute: Any, dataset: Dataset, batch_size: int, *, progress: bool, outputs: bool
) -> None:
    """Run ``compute`` over ``dataset`` in item order and fill one ``.npy`` per array."""
    batches = epoch_batches(
        len(dataset), batch_size, seed=0, epoch=0, shuffle=False, drop_last=False
    )
    files: dict[str, np.memmap] = {}
    bar = tqdm(total=len(dataset), desc="teacher cache", unit="img", disable=not progress)
    for rows, batch in zip(batches, loader(dataset, batches), strict=True):
        signals: Signals = compute(batch["image"])
        for name, value in _arrays(signals, outputs=outputs).items():
            if name not in files:
                files[name] = np.lib.format.open_memmap(
                    folder / f"{name}.npy",
                    mode="w+",
                    dtype=value.dtype,
                    shape=(len(dataset), *value.shape[1:]),
                )
            files[name][rows[0] : rows[-1] + 1] = value
        bar.update(len(rows))
    bar.close()
    for array in files.values():
        array.flush()


def _arrays(signals: Signals, *, outputs: bool) -> Mapping[str, np.ndarray]:
    out = {
        f"{t}.layer{j}": f.detach().cpu().numpy()
        for t, feats in signals.features.items()
        for j, f in enumerate(feats)
    }
    if outputs:
        out.update({f"{t}.output": y.detach().cpu().numpy() for t, y in signals.outputs.items()})
    return out
