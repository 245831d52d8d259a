"""MultiMNIST (``multi_mnist``): two overlapping digits per image, classify the left and right one.

Reference: Sabour et al. 2017 (MultiMNIST); the MGDA variant of Sener & Koltun, NeurIPS 2018
[C:isl-org/MultiObjectiveOptimization] and the ParetoMTL pickles of Lin et al., NeurIPS 2019
[C:Xi-L/ParetoMTL]; SPEC-data §1e.

Formats (``format = "auto"`` takes the first that exists):

* ``mgda``: ``root/processed/multi_{training,test}.pt``, torch-saved tuples
  ``(images [N, 28, 28] float64 0..255, labels_l [N] int64, labels_r [N] int64)``;
* ``paretomtl``: ``root/<pickle_name>`` (``multi_mnist.pickle``, ``multi_fashion.pickle``,
  ``multi_fashion_and_mnist.pickle``), a pickled ``(trainX, trainLabel, testX, testLabel)``
  of numpy arrays: N·36·36 pixels per X, labels [N, 2]. Only numpy arrays are unpickled (a
  restricted unpickler), so a file cannot run code. Pixels in [0, 1] or [0, 255] (detected:
  the file's maximum).

:func:`build_multi_mnist` writes the ``mgda`` files from the raw MNIST idx files with MGDA's
recipe and a seeded pairing; it is *not* bit-identical to MGDA's files (theirs are unseeded).
Both formats have train and test only; ``val_fraction`` holds out the tail of the training
file as ``val``. Items: ``image`` [3, H, W] (grey replicated on 3 channels, MNIST mean/std
0.1307/0.3081), ``left`` and ``right`` int64 class indices.
"""

from __future__ import annotations

import codecs
import gzip
import math
import pickle
import struct
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from torch import Tensor

from pymtl.data.base import Dataset
from pymtl.errors import ConfigError
from pymtl.hookspecs import hookimpl
from pymtl.tasks.base import ClassificationTask, Task

__all__ = ["MultiMNIST", "MultiMNISTConfig", "build_multi_mnist", "read_idx"]

_FILES = {"train": "multi_training.pt", "test": "multi_test.pt"}
_LAYOUT = (
    "processed/multi_training.pt + processed/multi_test.pt (MGDA) or multi_mnist.pickle (ParetoMTL)"
)
_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _fraction(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"dataset 'multi_mnist': val_fraction must be in [0, 1) (got {value})")


@attrs.frozen(kw_only=True)
class MultiMNISTConfig:
    """Options of ``multi_mnist``.

    Attributes:
        root: folder holding ``processed/`` (MGDA) or the ParetoMTL pickle.
        split: ``train``, ``val`` (tail of the training file) or ``test``.
        format: ``auto``, ``mgda`` or ``paretomtl``.
        pickle_name: the ParetoMTL file to read.
        val_fraction: share of the training file held out as ``val`` (0: no ``val``).
        mean, std: normalisation of the [0, 1] grey values (MNIST's).
    """

    root: str = ""
    split: str = attrs.field(
        default="train", validator=attrs.validators.in_(("train", "val", "test"))
    )
    format: str = attrs.field(
        default="auto", validator=attrs.validators.in_(("auto", "mgda", "paretomtl"))
    )
    pickle_name: str = "multi_mnist.pickle"
    val_fraction: float = attrs.field(default=0.0, validator=_fraction)
    mean: float = 0.1307
    std: float = attrs.field(default=0.3081, validator=attrs.validators.gt(0.0))


def read_idx(path: str | Path) -> np.ndarray:
    """The array in a (big-endian) idx file such as ``train-images-idx3-ubyte`` (or ``.gz``)."""
    path = Path(path)
    try:
        with gzip.open(path) if path.suffix == ".gz" else path.open("rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"multi_mnist: idx file {path} does not exist") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_DTYPES:
        raise ValueError(
            f"multi_mnist: {path}: not an idx file (magic {data[:4].hex()}; expected 0000, a type "
            "code 08/09/0b/0c/0d/0e and the number of dimensions)"
        )
    ndim, dtype = data[3], np.dtype(_IDX_DTYPES[data[2]])
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", data[4:header]) if len(data) >= header else ()
    expected = header + math.prod(dims) * dtype.itemsize
    if len(dims) != ndim or len(data) != expected:
        raise ValueError(
            f"multi_mnist: {path}: {len(data)} bytes, expected {expected} for dimensions {dims}"
        )
    return np.frombuffer(data, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _pair(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[Any, ...]:
    """MGDA's recipe: left digit at [0:28, 0:28] and a random partner at [6:34, 6:34] of a 36×36
    canvas, pixel max where they overlap, nearest-resized to 28×28 (pixel-centre sampling)."""
    partner = rng.integers(0, len(images), size=len(images))
    canvas = np.zeros((len(images), 36, 36), dtype=np.uint8)
    canvas[:, :28, :28] = images
    canvas[:, 6:34, 6:34] = np.maximum(canvas[:, 6:34, 6:34], images[partner])
    rows = np.floor((np.arange(28) + 0.5) * 36 / 28).astype(np.int64)
    multi = canvas[:, rows][:, :, rows].astype(np.float64)
    return multi, labels.astype(np.int64), labels[partner].astype(np.int64)


def _raw(root: Path, name: str) -> Path:
    plain = root / "raw" / name
    gz = plain.with_name(name + ".gz")
    return gz if not plain.exists() and gz.exists() else plain


def build_multi_mnist(root: str | Path, *, seed: int = 0) -> tuple[Path, Path]:
    """Write ``root/processed/multi_{training,test}.pt`` from ``root/raw`` MNIST idx files.

    Seeded (numpy ``default_rng([seed, split])``), so the same seed gives the same files; not
    bit-identical to MGDA's unseeded files. Returns the two paths.
    """
    root = Path(root).expanduser()
    out = []
    for k, (prefix, split) in enumerate((("train", "train"), ("t10k", "test"))):
        images = read_idx(_raw(root, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_raw(root, f"{prefix}-labels-idx1-ubyte"))
        if (
            images.dtype != np.uint8
            or images.shape[1:] != (28, 28)
            or labels.shape != images[:, 0, 0].shape
        ):
            raise ValueError(
                f"multi_mnist: {root / 'raw'}/{prefix}-*: expected uint8 images [N, 28, 28] and "
                f"labels [N], got {images.dtype} {images.shape} and {labels.shape}"
            )
        multi, left, right = _pair(images, labels, np.random.default_rng([seed, k]))
        path = root / "processed" / _FILES[split]
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(tuple(torch.from_numpy(a) for a in (multi, left, right)), path)
        out.append(path)
    return out[0], out[1]


# What a pickle of numpy arrays refers to, by (last module component, name), for any numpy
# version (numpy.core / numpy._core) and pickle protocol.
_PICKLE_ALLOWED: dict[tuple[str, str], Any] = {
    ("multiarray", "_reconstruct"): np.zeros(1).__reduce__()[0],
    ("multiarray", "scalar"): np.float64(0).__reduce__()[0],
    ("numeric", "_frombuffer"): np.zeros(1).__reduce_ex__(5)[0],
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        key = module.rsplit(".", 1)[-1] if module.startswith("numpy.") else module
        if (key, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays")
        return _PICKLE_ALLOWED[key, name]


def _load_mgda(root: Path, part: str) -> tuple[Tensor, Tensor]:
    """(images [N, 28, 28] float, labels [N, 2] int64) of MGDA's ``train`` or ``test`` file."""
    path = root / "processed" / _FILES[part]
    try:
        data = torch.load(path, weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"multi_mnist: {path} does not exist; expected {_LAYOUT} under {root} (build it "
            "from raw MNIST with pymtl.data.multi_mnist.build_multi_mnist)"
        ) from None
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise ValueError(f"multi_mnist: cannot read {path}: {exc}") from None
    if not (isinstance(data, (tuple, list)) and len(data) == 3):
        raise ValueError(
            f"multi_mnist: {path}: expected a tuple (images, labels_l, labels_r), got "
            f"{type(data).__name__} of length {len(data) if hasattr(data, '__len__') else '?'}"
        )
    images, left, right = data
    ok = isinstance(images, Tensor) and images.dim() == 3 and images.shape[1:] == (28, 28)
    if not ok or not (images.is_floating_point() or images.dtype == torch.uint8):
        got = (
            f"{images.dtype} {tuple(images.shape)}" if isinstance(images, Tensor) else type(images)
        )
        raise ValueError(f"multi_mnist: {path}: images must be [N, 28, 28] float/uint8, got {got}")
    for name, t in (("labels_l", left), ("labels_r", right)):
        if not isinstance(t, Tensor) or t.dtype != torch.int64 or t.shape != (len(images),):
            got = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(
                f"multi_mnist: {path}: {name} must be int64 [{len(images)}], got {got}"
            )
    return images.float(), torch.stack([left, right], dim=1)


def _load_pickle(path: Path, part: str) -> tuple[Tensor, Tensor]:
    """(images [N, 36, 36] float 0..255, labels [N, 2] int64) of a ParetoMTL pickle."""
    try:
        with path.open("rb") as f:
            data = _ArrayUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise FileNotFoundError(f"multi_mnist: {path} does not exist; expected {_LAYOUT}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise ValueError(f"multi_mnist: cannot read {path}: {exc}") from None
    if not (isinstance(data, tuple) and len(data) == 4):
        raise ValueError(f"multi_mnist: {path}: expected (trainX, trainLabel, testX, testLabel)")
    x, y = data[:2] if part == "train" else data[2:]
    name = "trainX/trainLabel" if part == "train" else "testX/testLabel"
    n = len(y) if isinstance(y, np.ndarray) else -1
    ok = n > 0 and y.shape == (n, 2) and y.dtype.kind in "iu"
    if not (ok and isinstance(x, np.ndarray) and x.size == n * 36 * 36):
        raise ValueError(
            f"multi_mnist: {path}: {name} must hold N·36·36 pixels and integer labels [N, 2], "
            f"got {getattr(x, 'shape', type(x))} and {getattr(y, 'shape', type(y))}"
        )
    images = torch.from_numpy(np.asarray(x, dtype=np.float32).reshape(n, 36, 36))
    if images.max() <= 1.0:  # stored in [0, 1]
        images = images * 255.0
    return images, torch.from_numpy(y.astype(np.int64))


def _check(images: Tensor, labels: Tensor, path: Path) -> None:
    """Every pixel finite in [0, 255], every label in 0..9."""
    if not torch.isfinite(images).all() or images.min() < 0 or images.max() > 255:
        raise ValueError(
            f"multi_mnist: {path}: pixels must be in [0, 255], got "
            f"[{float(images.min())}, {float(images.max())}]"
        )
    if labels.min() < 0 or labels.max() > 9:
        raise ValueError(
            f"multi_mnist: {path}: labels must be in 0..9, got "
            f"{int(labels.min())}..{int(labels.max())}"
        )


class MultiMNIST(Dataset):
    """MultiMNIST, left and right digit classification (10 classes each) [S].

    Reference: Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS
    2018 (MGDA files) [C:isl-org/MultiObjectiveOptimization]; Lin et al., "Pareto Multi-Task
    Learning", NeurIPS 2019 (pickles) [C:Xi-L/ParetoMTL]. The whole split is loaded and
    checked (pixel range, label range) at construction.

    Args: the fields of :class:`MultiMNISTConfig`.

    Example:
        >>> build_multi_mnist("~/data/MultiMNIST", seed=0)  # doctest: +SKIP
        >>> MultiMNIST(root="~/data/MultiMNIST", split="test")[0]["left"]  # doctest: +SKIP
        tensor(7)
    """

    name = "multi_mnist"
    Config = MultiMNISTConfig

    def __init__(
        self,
        *,
        root: str = "",
        split: str = "train",
        format: str = "auto",
        pickle_name: str = "multi_mnist.pickle",
        val_fraction: float = 0.0,
        mean: float = 0.1307,
        std: float = 0.3081,
    ) -> None:
        self.config = MultiMNISTConfig(
            root=root, split=split, format=format, pickle_name=pickle_name,
            val_fraction=val_fraction, mean=mean, std=std,
        )  # fmt: skip
        if not root:
            raise ConfigError(
                "dataset 'multi_mnist': dataset.root is not set; set it to the folder holding "
                + _LAYOUT
            )
        base = Path(root).expanduser()
        self.format = _detect(base, format, pickle_name)
        part = "test" if split == "test" else "train"
        if self.format == "mgda":
            path = base / "processed" / _FILES[part]
            images, labels = _load_mgda(base, part)
        else:
            path = base / pickle_name
            images, labels = _load_pickle(path, part)
        _check(images, labels, path)
        self._images, self._labels = _split(images, labels, split, val_fraction)
        self._tasks = (
            ClassificationTask(name="left", num_classes=10),
            ClassificationTask(name="right", num_classes=10),
        )

    @property
    def tasks(self) -> tuple[Task, ...]:
        return self._tasks

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        grey = (self._images[index] / 255.0 - self.config.mean) / self.config.std
        left, right = self._labels[index]
        return {"image": grey.expand(3, -1, -1).clone(), "left": left, "right": right}


def _detect(root: Path, format: str, pickle_name: str) -> str:
    if format != "auto":
        return format
    if any((root / "processed" / f).exists() for f in _FILES.values()):
        return "mgda"
    if (root / pickle_name).exists():
        return "paretomtl"
    raise FileNotFoundError(
        f"multi_mnist: found neither {root / 'processed'}/multi_*.pt nor {root / pickle_name}; "
        f"expected {_LAYOUT} (build the MGDA files from raw MNIST with build_multi_mnist)"
    )


def _split(
    images: Tensor, labels: Tensor, split: str, val_fraction: float
) -> tuple[Tensor, Tensor]:
    """``val`` is the last ``round(N · val_fraction)`` samples of the training file."""
    if split == "test":
        return images, labels
    n_val = round(len(images) * val_fraction)
    if split == "val" and n_val == 0:
        raise ConfigError(
            f"dataset 'multi_mnist': split 'val' is empty with val_fraction={val_fraction}; the "
            "files have train and test only, so set dataset.val_fraction (e.g. 0.1)"
        )
    cut = len(images) - n_val
    return (images[cut:], labels[cut:]) if split == "val" else (images[:cut], labels[:cut])


@hookimpl
def pymtl_register_datasets() -> list[type[Dataset]]:
    return [MultiMNIST]
