"""PASCAL-Part person annotations → 7-class human-parts maps [S][C:MTL-PyTorch].

Reference: SPEC-data §1c, SPEC-methods §5.7. ``human_parts/{id}.mat`` holds the PASCAL-Part
struct ``anno`` with a struct array ``objects`` (fields ``class``, ``class_ind``, ``mask``,
``parts``); each part has ``part_name`` and ``mask``. Persons are ``class_ind`` 15. The 24 part
names are grouped into the 6 parts of ASTMT's ``HUMAN_PART[6]`` mapping (a fact about the
benchmark, restated here): 1 head (hair, head, ears, eyebrows, eyes, mouth, nose), 2 torso (torso,
neck), 3 upper arm, 4 lower arm (with the hand), 5 upper leg, 6 lower leg (with the foot);
0 is background. An image whose map is all background (no person with parts) is unlabelled:
ASTMT turns it into an all-ignore (255) target, and so does :func:`human_parts_map`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pymtl.data._checks import check_shape, fail, load_mat

__all__ = ["HUMAN_PART_NAMES", "PART_GROUPS", "PERSON_CLASS", "human_parts_map"]

PERSON_CLASS = 15
"""``class_ind`` of 'person' among the 20 PASCAL VOC object classes."""

HUMAN_PART_NAMES = (
    "background", "head", "torso", "upper_arm", "lower_arm", "upper_leg", "lower_leg",
)  # fmt: skip

_HEAD = ("hair", "head", "lear", "lebrow", "leye", "mouth", "nose", "rear", "rebrow", "reye")
PART_GROUPS: dict[str, int] = {
    **dict.fromkeys(_HEAD, 1),
    **dict.fromkeys(("neck", "torso"), 2),
    **dict.fromkeys(("luarm", "ruarm"), 3),
    **dict.fromkeys(("lhand", "llarm", "rhand", "rlarm"), 4),
    **dict.fromkeys(("luleg", "ruleg"), 5),
    **dict.fromkeys(("lfoot", "llleg", "rfoot", "rlleg"), 6),
}
"""PASCAL-Part person part name → human-parts class (1..6)."""

_WHAT = "PASCAL human_parts annotation"


def _structs(value: Any, fields: tuple[str, ...], *, path: Path) -> list[Any]:
    """The records of a MATLAB struct array as scipy loads it ([] for an empty array)."""
    arr = np.asarray(value)
    if arr.size == 0:
        return []
    names = arr.dtype.names or ()
    if not set(fields) <= set(names):
        fail(
            path,
            _WHAT,
            "unexpected struct layout",
            got=f"fields {list(names)}",
            expected=f"a struct with fields {list(fields)}",
        )
    return list(arr.ravel())


def _scalar(value: Any) -> Any:
    return np.asarray(value).ravel()[0]


def human_parts_map(path: Path, size: tuple[int, int], *, ignore: int = 255) -> np.ndarray:
    """[H, W] int64 human-parts classes of one image, all ``ignore`` when it has no parts."""
    records = _structs(load_mat(path, "anno", what=_WHAT), ("objects",), path=path)
    if len(records) != 1:
        fail(
            path,
            _WHAT,
            "'anno' is not a single struct",
            got=f"{len(records)} records",
            expected="1 record",
        )
    anno = records[0]
    target = np.zeros(size, dtype=np.int64)
    for obj in _structs(anno["objects"], ("class_ind", "mask", "parts"), path=path):
        if int(_scalar(obj["class_ind"])) != PERSON_CLASS:
            continue
        for part in _structs(obj["parts"], ("part_name", "mask"), path=path):
            name = str(_scalar(part["part_name"]))
            if name not in PART_GROUPS:
                fail(
                    path,
                    _WHAT,
                    "unknown person part name",
                    got=repr(name),
                    expected=f"one of {sorted(PART_GROUPS)}",
                )
            mask = np.asarray(part["mask"])
            check_shape(mask, size, path=path, what=f"{_WHAT} mask of part {name!r}")
            target[mask.astype(bool)] = PART_GROUPS[name]
    if not target.any():
        target.fill(ignore)
    return target
