"""Reading and checking the files of on-disk datasets [pymtl].

SPEC-data §1g: a loader validates shapes, dtypes and value ranges and fails loudly. Every error
raised here names what was read, the problem, what was found, what the format expects, and the
file (one shape for every message: what, got, expected, where).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
from PIL import Image, UnidentifiedImageError

from pymtl.errors import ConfigError, DataFormatError

__all__ = [
    "DataFormatError",
    "check_binary",
    "check_dtype",
    "check_labels",
    "check_normals",
    "check_range",
    "check_shape",
    "fail",
    "load_image",
    "load_mat",
    "load_npy",
    "read_split",
    "require_files",
    "require_root",
]


def fail(path: Path | str, what: str, problem: str, *, got: object, expected: object) -> NoReturn:
    """Raise :class:`DataFormatError` in the shared message shape."""
    raise DataFormatError(f"{what}: {problem} (got {got}; expected {expected}) in {path}")


def require_root(root: str, *, dataset: str, layout: str) -> Path:
    """``root`` as a directory; a :class:`ConfigError` saying how to set it otherwise."""
    if not root:
        raise ConfigError(
            f"dataset {dataset!r}: no data folder given (got dataset.root = ''); set "
            f"dataset.root to a folder with this layout: {layout}"
        )
    path = Path(root).expanduser()
    if not path.is_dir():
        raise ConfigError(
            f"dataset {dataset!r}: dataset.root {str(path)!r} is not a directory; expected a "
            f"folder with this layout: {layout}"
        )
    return path


def require_files(paths: Iterable[Path], *, what: str) -> None:
    """Fail naming the first missing file (and how many are missing) when any is absent."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataFormatError(
            f"{what}: {len(missing)} file(s) missing, the first is {missing[0]} "
            "(expected every sample of the split to have one)"
        )


def read_split(path: Path, *, what: str) -> list[str]:
    """The non-empty lines of a split list file (sample ids), which must exist."""
    if not path.is_file():
        fail(path, what, "the split list file is missing", got="no file", expected="a file")
    ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    ids = [i for i in ids if i]
    if not ids:
        fail(path, what, "the split list is empty", got="0 ids", expected="one id per line")
    return ids


def load_npy(path: Path, *, what: str) -> np.ndarray:
    """``np.load`` without pickles; unreadable files raise :class:`DataFormatError`."""
    try:
        arr: np.ndarray = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        fail(path, what, "the file is missing", got="no file", expected="a .npy file")
    except (ValueError, OSError) as exc:
        fail(path, what, "not a readable .npy array", got=repr(exc), expected="a .npy file")
    return arr


def load_image(path: Path, *, what: str, mode: str | None = None) -> np.ndarray:
    """An image file as an array; ``mode`` converts (``"RGB"``), ``None`` keeps the stored
    values (palette PNGs give their indices)."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert(mode) if mode else img).copy()
    except FileNotFoundError:
        fail(path, what, "the file is missing", got="no file", expected="an image file")
    except (UnidentifiedImageError, OSError) as exc:
        fail(path, what, "not a readable image", got=repr(exc), expected="an image file")


def load_mat(path: Path, key: str, *, what: str) -> Any:
    """Variable ``key`` of a MATLAB .mat file."""
    from scipy.io import loadmat

    try:
        data = loadmat(path)
    except FileNotFoundError:
        fail(path, what, "the file is missing", got="no file", expected="a .mat file")
    except (ValueError, OSError, TypeError) as exc:
        fail(path, what, "not a readable .mat file", got=repr(exc), expected="a .mat file")
    if key not in data:
        found = sorted(k for k in data if not k.startswith("__"))
        fail(path, what, f"variable {key!r} is missing", got=found, expected=[key])
    return data[key]


def check_shape(arr: np.ndarray, expected: tuple[int, ...], *, path: Path, what: str) -> None:
    if arr.shape != expected:
        fail(path, what, "wrong shape", got=arr.shape, expected=expected)


def check_dtype(arr: np.ndarray, kinds: str, *, path: Path, what: str) -> None:
    """``arr.dtype.kind`` must be one of ``kinds`` ("f" float, "i"/"u" integers, "b" bool)."""
    if arr.dtype.kind not in kinds:
        names = {"f": "float", "i": "signed int", "u": "unsigned int", "b": "bool"}
        fail(
            path, what, "wrong dtype", got=arr.dtype, expected=" or ".join(names[k] for k in kinds)
        )


def check_range(arr: np.ndarray, lo: float, hi: float, *, path: Path, what: str) -> None:
    """All values finite and within [lo, hi]."""
    if not np.isfinite(arr).all():
        fail(
            path,
            what,
            "non-finite values",
            got=f"{int((~np.isfinite(arr)).sum())} NaN/inf",
            expected="finite values",
        )
    if arr.size and (arr.min() < lo or arr.max() > hi):
        fail(
            path,
            what,
            "values out of range",
            got=f"[{arr.min():g}, {arr.max():g}]",
            expected=f"within [{lo:g}, {hi:g}]",
        )


def check_labels(arr: np.ndarray, num_classes: int, ignore: int, *, path: Path, what: str) -> None:
    """Integer-valued labels in [0, num_classes) or equal to ``ignore``."""
    if arr.dtype.kind == "f":
        check_range(arr, -np.inf, np.inf, path=path, what=what)  # finite
        if not np.array_equal(arr, np.round(arr)):
            fail(path, what, "non-integer class ids", got="fractional values", expected="integers")
    bad = np.unique(arr[((arr < 0) | (arr >= num_classes)) & (arr != ignore)])
    if bad.size:
        fail(
            path,
            what,
            "class ids out of range",
            got=bad[:5].astype(np.int64).tolist(),
            expected=f"ids in [0, {num_classes}) or {ignore} (ignore)",
        )


def check_normals(arr: np.ndarray, *, path: Path, what: str, tol: float = 0.05) -> None:
    """[H, W, 3] components in [-1, 1]; all-zero pixels are invalid, the others unit vectors.

    Resized or quantised normals are not exactly unit, so the median norm of the valid pixels
    must be within ``tol`` of 1 and no norm may exceed 1.5.
    """
    check_range(arr, -1.0 - 1e-3, 1.0 + 1e-3, path=path, what=what)
    norms = np.linalg.norm(arr.reshape(-1, 3).astype(np.float64), axis=1)
    valid = norms[norms > 0]
    if valid.size and (abs(float(np.median(valid)) - 1.0) > tol or valid.max() > 1.5):
        fail(
            path,
            what,
            "normals are not unit vectors",
            got=f"median norm {np.median(valid):.3f}, max {valid.max():.3f} on valid pixels",
            expected=f"norms within {tol} of 1 (all-zero = invalid)",
        )


def check_binary(arr: np.ndarray, *, path: Path, what: str) -> None:
    """Values in {0, 1}."""
    bad = np.unique(arr[(arr != 0) & (arr != 1)])
    if bad.size:
        fail(path, what, "not a binary map", got=bad[:5].tolist(), expected="values in {0, 1}")
