"""On-disk cache of a rendered split: one ``.npy`` per array, memory-mapped when read.

SPEC-data §3.2 [pymtl]: cache keyed by (generator version, config hash). The folder
``<root>/synthetic-v<version>-<hash>`` holds ``meta.json`` (the version, the render options,
the array keys, the numpy version: all part of the hash) and one ``<key>.npy`` of shape
[N, ...] per array. A split is rendered into a temporary folder that is renamed into place
when complete, so a reader never sees half a cache and concurrent writers do not clash. Only
the clean arrays are stored; flips, label noise and missing labels are applied when items are
read.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
from tqdm import tqdm

from pymtl.data.synthetic.sample import GENERATOR_VERSION, RenderSpec

__all__ = ["SplitCache", "cache_key"]


def _meta(spec: RenderSpec, keys: Sequence[str], length: int) -> dict[str, Any]:
    return {
        "generator_version": GENERATOR_VERSION,
        "spec": attrs.asdict(spec),
        "keys": sorted(keys),
        "length": length,
        "numpy": np.__version__,  # Generator streams are only stable within one numpy build
    }


def cache_key(spec: RenderSpec, keys: Sequence[str], length: int) -> str:
    """Folder name of the cache of ``length`` samples of ``spec`` holding arrays ``keys``."""
    text = json.dumps(_meta(spec, keys, length), sort_keys=True)
    return f"synthetic-v{GENERATOR_VERSION}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


class SplitCache:
    """Read access to a complete cache folder; arrays are opened lazily in each process.

    Args:
        path: the cache folder (see :func:`cache_key`).
        keys: the arrays to read.
    """

    def __init__(self, path: Path, keys: Sequence[str]) -> None:
        self.path = Path(path)
        self.keys = tuple(keys)
        self._arrays: dict[str, np.ndarray] | None = None

    @classmethod
    def open_or_build(
        cls,
        root: str | Path,
        spec: RenderSpec,
        *,
        keys: Sequence[str],
        length: int,
        render: Callable[[int], dict[str, np.ndarray]],
    ) -> SplitCache:
        """The cache of ``spec`` under ``root``, rendering it with ``render`` if missing."""
        path = Path(root) / cache_key(spec, keys, length)
        meta = _meta(spec, keys, length)
        if not (path / "meta.json").is_file():
            _build(path, meta, render)
        found = json.loads((path / "meta.json").read_text())
        if found != meta:
            raise ValueError(
                f"synthetic cache {str(path)!r} does not match its key: meta.json holds "
                f"{found!r}, expected {meta!r}; delete the folder to re-render it"
            )
        return cls(path, keys)

    def _open(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            self._arrays = {k: np.load(self.path / f"{k}.npy", mmap_mode="r") for k in self.keys}
        return self._arrays

    def __len__(self) -> int:
        return len(self._open()[self.keys[0]])

    def load(self, index: int) -> dict[str, np.ndarray]:
        """Sample ``index`` as in-memory arrays."""
        return {k: np.array(v[index]) for k, v in self._open().items()}

    def __getstate__(self) -> dict[str, Any]:  # workers reopen the memory maps themselves
        return {**self.__dict__, "_arrays": None}


def _build(
    path: Path, meta: dict[str, Any], render: Callable[[int], dict[str, np.ndarray]]
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        arrays: dict[str, np.memmap[Any, Any]] = {}
        split = meta["spec"]["split"]
        for i in tqdm(range(meta["length"]), desc=f"rendering synthetic {split}", unit="img"):
            sample = render(i)
            for key in meta["keys"]:
                if key not in arrays:
                    shape = (meta["length"], *sample[key].shape)
                    arrays[key] = np.lib.format.open_memmap(
                        tmp / f"{key}.npy", mode="w+", dtype=sample[key].dtype, shape=shape
                    )
                arrays[key][i] = sample[key]
        for array in arrays.values():
            array.flush()
        del arrays
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.rename(tmp, path)
        except OSError:  # another process finished the same cache first
            if not (path / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
