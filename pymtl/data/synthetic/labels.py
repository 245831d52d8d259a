"""Exact labels of a synthetic scene, derived from its pixel-centre hits.

Definitions of SPEC-data §3.2 [pymtl]:

* ``semseg``: floor 0, wall 1 (back, side walls and ceiling), sphere 2, box 3, cylinder 4;
* ``instance``: object index k for objects, 100 + surface id for the room (floor 100, back
  wall 101, left 102, right 103, ceiling 104);
* ``depth``: z-buffer depth ``t · <d, forward>`` in metres (> 0 everywhere);
* ``normals``: unit normals in the camera frame, x right, y up, z towards the camera;
* ``edges``: 1 where a 4-neighbour has another instance id (both sides of every boundary,
  room creases included), else 0;
* ``parts``: sphere upper 0 / lower 1, box side 2 / top 3, cylinder side 4 / cap 5; -1 off
  objects;
* ``saliency``: the mask of the object with the largest visible area (ties: lowest index);
* ``count``: visible objects; ``presence``: per object class (sphere, box, cylinder) visible;
* ``color_of_largest``: palette index of the salient object (-1 when no object is visible);
* ``colorseg``: 0 off objects, 1 + palette index on objects.
"""

from __future__ import annotations

import numpy as np

from pymtl.data.synthetic.geometry import FIRST_OBJECT, NUM_SURFACES
from pymtl.data.synthetic.render import Hits
from pymtl.data.synthetic.scene import KIND_NAMES, Scene

__all__ = [
    "BACKGROUND_ID",
    "PART_NAMES",
    "SEMSEG_NAMES",
    "boundaries",
    "dense_labels",
    "image_labels",
]

SEMSEG_NAMES = ("floor", "wall", *KIND_NAMES)
PART_NAMES = (
    "sphere_upper",
    "sphere_lower",
    "box_side",
    "box_top",
    "cylinder_side",
    "cylinder_cap",
)
BACKGROUND_ID = 100
"""Instance id of the floor; the other room surfaces follow it (walls 101-103, ceiling 104)."""

_SURFACE_CLASS = np.array([0, 1, 1, 1, 1])  # semseg class of each room surface


def boundaries(instance: np.ndarray) -> np.ndarray:
    """[H, W] uint8: 1 where any 4-neighbour inside the image has a different id."""
    out = np.zeros(instance.shape, dtype=bool)
    rows = instance[1:] != instance[:-1]
    cols = instance[:, 1:] != instance[:, :-1]
    out[1:] |= rows
    out[:-1] |= rows
    out[:, 1:] |= cols
    out[:, :-1] |= cols
    return out.astype(np.uint8)


def dense_labels(scene: Scene, hits: Hits, size: int) -> dict[str, np.ndarray]:
    """Per-pixel labels from the pixel-centre ``hits`` of a ``size`` × ``size`` image."""
    objects = scene.objects
    obj = hits.prim >= FIRST_OBJECT
    k = np.where(obj, hits.prim - FIRST_OBJECT, 0)
    kind = objects.kind[k] if len(objects) else np.zeros_like(k)
    semseg = np.where(obj, 2 + kind, _SURFACE_CLASS[np.minimum(hits.prim, NUM_SURFACES - 1)])
    instance = np.where(obj, k, BACKGROUND_ID + hits.prim)
    parts = np.where(obj, 2 * kind + np.where(kind == 0, ~hits.top, hits.top), -1)
    color = objects.color[k] if len(objects) else np.zeros_like(k)
    camera = scene.camera
    hw = (size, size)
    instance = instance.reshape(hw).astype(np.int16)
    return {
        "semseg": semseg.reshape(hw).astype(np.int8),
        "instance": instance,
        "depth": (hits.t * (hits.dirs @ camera.forward)).reshape(hw).astype(np.float32),
        "normals": (hits.normal @ camera.to_camera()).T.reshape(3, *hw).astype(np.float32),
        "edges": boundaries(instance),
        "parts": parts.reshape(hw).astype(np.int8),
        "colorseg": np.where(obj, 1 + color, 0).reshape(hw).astype(np.int8),
    }


def image_labels(scene: Scene, instance: np.ndarray) -> dict[str, np.ndarray]:
    """Image-level labels and the saliency mask from the ``instance`` map [H, W]."""
    objects = scene.objects
    n = len(objects)
    on_object = instance < BACKGROUND_ID
    area = np.bincount(instance[on_object].ravel(), minlength=n)[:n]
    visible = area > 0
    largest = int(area.argmax()) if visible.any() else -1
    saliency = on_object & (instance == largest) if largest >= 0 else np.zeros_like(on_object)
    presence = np.array([visible[objects.kind == c].any() for c in range(len(KIND_NAMES))])
    color = int(objects.color[largest]) if largest >= 0 else -1
    return {
        "saliency": saliency.astype(np.uint8),
        "count": np.array(int(visible.sum()), dtype=np.int64),
        "presence": presence.astype(np.uint8),
        "color_of_largest": np.array(color, dtype=np.int64),
    }
