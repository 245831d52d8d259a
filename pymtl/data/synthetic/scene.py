"""Random scenes of the synthetic dataset: a room, a camera, a light and a few objects.

Scene model of SPEC-data §3.2 [pymtl]. World axes: y is up; the camera stands near the origin
and looks towards +z. The room has a floor y = 0, a back wall z = D, side walls x = ±W and,
in half of the scenes, a ceiling. Objects (spheres, yawed boxes, vertical capped cylinders)
rest on the floor with non-intersecting footprints (rejection sampling). Every number comes
from one ``numpy.random.Generator``, so a scene is a pure function of its seed and of
``num_objects`` (never of the image size).
"""

from __future__ import annotations

import math

import attrs
import numpy as np

__all__ = [
    "BOX",
    "COLOR_NAMES",
    "CYLINDER",
    "KIND_NAMES",
    "PALETTE",
    "SPHERE",
    "Camera",
    "Objects",
    "Scene",
    "sample_scene",
]

SPHERE, BOX, CYLINDER = 0, 1, 2
KIND_NAMES = ("sphere", "box", "cylinder")
COLOR_NAMES = ("red", "green", "blue", "yellow", "cyan", "magenta", "orange", "white")
PALETTE = np.array(
    [[0.85, 0.15, 0.15], [0.20, 0.70, 0.25], [0.20, 0.35, 0.85], [0.90, 0.80, 0.20],
     [0.20, 0.75, 0.80], [0.80, 0.25, 0.75], [0.95, 0.50, 0.10], [0.95, 0.95, 0.95]],
)  # fmt: skip
"""Linear RGB albedo of the 8 object colours (``COLOR_NAMES``); backgrounds are greyish."""

PLAIN, STRIPES, VALUE_NOISE = 0, 1, 2

_SIZE = (0.3, 0.7)  # radius / half-width of objects (m)
_DIST = (1.8, 6.0)  # distance of object centres along z (m)
_GAP = 0.05  # free space between footprints and to the walls (m)
_TRIES = 40  # placement attempts per object


@attrs.frozen(kw_only=True)
class Camera:
    """A pinhole camera: position, yaw (+: towards +x), pitch (+: looking down), horizontal FOV.

    ``forward``, ``right`` and ``up`` are its unit axes in world coordinates.
    """

    position: np.ndarray
    yaw: float
    pitch: float
    hfov: float

    @property
    def forward(self) -> np.ndarray:
        cy, sy, cp, sp = _trig(self.yaw, self.pitch)
        return np.array([sy * cp, -sp, cy * cp])

    @property
    def right(self) -> np.ndarray:
        cy, sy, _, _ = _trig(self.yaw, self.pitch)
        return np.array([cy, 0.0, -sy])

    @property
    def up(self) -> np.ndarray:
        cy, sy, cp, sp = _trig(self.yaw, self.pitch)
        return np.array([sy * sp, cp, cy * sp])

    def to_camera(self) -> np.ndarray:
        """[3, 3] matrix M with ``v_cam = v_world @ M``: x right, y up, z towards the camera."""
        return np.stack([self.right, self.up, -self.forward], axis=1)


def _trig(yaw: float, pitch: float) -> tuple[float, float, float, float]:
    return math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)


@attrs.frozen(kw_only=True)
class Objects:
    """The objects of a scene, one row each (n rows).

    ``half`` holds half-extents in the object's frame: (r, r, r) for a sphere, (a_x, a_y, a_z)
    for a box, (r, h/2, r) for a cylinder; ``center[:, 1] == half[:, 1]`` (resting on the
    floor). ``yaw`` rotates boxes about the vertical axis. ``texture`` is plain / stripes /
    value noise with a ``tex_scale`` (m) and an integer ``tex_seed``.
    """

    kind: np.ndarray  # [n] int
    center: np.ndarray  # [n, 3]
    half: np.ndarray  # [n, 3]
    yaw: np.ndarray  # [n]
    color: np.ndarray  # [n] int, index into PALETTE
    texture: np.ndarray  # [n] int
    tex_scale: np.ndarray  # [n]
    tex_seed: np.ndarray  # [n] int

    def __len__(self) -> int:
        return len(self.kind)


@attrs.frozen(kw_only=True)
class Scene:
    """Everything the renderer needs; ``ceiling`` is the ceiling height, or 0 for none.

    ``light`` is the unit direction towards the directional light. The floor is a checkerboard
    of ``checker`` m squares in the two ``floor_rgb`` tones; the walls carry stripes
    ``stripe`` m wide (vertical or horizontal) in the two ``wall_rgb`` tones.
    """

    camera: Camera
    half_width: float
    depth: float
    ceiling: float
    light: np.ndarray
    floor_rgb: np.ndarray  # [2, 3]
    checker: float
    wall_rgb: np.ndarray  # [2, 3]
    stripe: float
    stripe_vertical: bool
    objects: Objects


def _grey(rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    """A greyish colour: a level in [lo, hi] with a small random tint."""
    return np.clip(rng.uniform(lo, hi) + rng.uniform(-0.06, 0.06, size=3), 0.0, 1.0)


def _footprint(kind: int, half: np.ndarray) -> float:
    """Radius of a circle around the object's footprint."""
    return float(math.hypot(half[0], half[2])) if kind == BOX else float(half[0])


def _object_shape(rng: np.random.Generator, kind: int) -> tuple[np.ndarray, float]:
    """Half-extents and yaw of one object of ``kind``."""
    if kind == SPHERE:
        r = rng.uniform(*_SIZE)
        return np.array([r, r, r]), 0.0
    if kind == BOX:
        half = rng.uniform(*_SIZE, size=3)
        return half, float(rng.uniform(-math.pi / 4, math.pi / 4))
    r = rng.uniform(*_SIZE)
    return np.array([r, rng.uniform(0.3, 0.8), r]), 0.0


def _place_objects(rng: np.random.Generator, camera: Camera, half_width: float, n: int) -> Objects:
    """Up to ``n`` objects in front of the camera, footprints apart (rejection sampling)."""
    rows: list[tuple[int, np.ndarray, np.ndarray, float]] = []
    for _ in range(n):
        kind = int(rng.integers(3))
        half, yaw = _object_shape(rng, kind)
        radius = _footprint(kind, half)
        for _ in range(_TRIES):
            z = rng.uniform(*_DIST)
            angle = camera.yaw + rng.uniform(-0.8, 0.8) * camera.hfov / 2
            x = camera.position[0] + z * math.tan(angle)
            inside = abs(x) <= half_width - radius - _GAP
            apart = all(
                math.hypot(x - c[0], z - c[2]) >= radius + _footprint(k, h) + _GAP
                for k, c, h, _ in rows
            )
            if inside and apart:
                rows.append((kind, np.array([x, half[1], z]), half, yaw))
                break
    m = len(rows)
    return Objects(
        kind=np.array([r[0] for r in rows], dtype=np.int64),
        center=np.array([r[1] for r in rows]).reshape(m, 3),
        half=np.array([r[2] for r in rows]).reshape(m, 3),
        yaw=np.array([r[3] for r in rows], dtype=np.float64),
        color=rng.integers(len(PALETTE), size=m),
        texture=rng.integers(3, size=m),
        tex_scale=rng.uniform(0.08, 0.2, size=m),
        tex_seed=rng.integers(1 << 30, size=m),
    )


def sample_scene(rng: np.random.Generator, num_objects: int) -> Scene:
    """Draw a scene with 1..``num_objects`` objects (fewer when placement fails) from ``rng``."""
    camera = Camera(
        position=np.array([rng.uniform(-0.4, 0.4), rng.uniform(1.2, 2.0), 0.0]),
        yaw=math.radians(rng.uniform(-15.0, 15.0)),
        pitch=math.radians(rng.uniform(15.0, 30.0)),
        hfov=math.radians(rng.uniform(50.0, 65.0)),
    )
    half_width = rng.uniform(2.5, 4.0)
    depth = rng.uniform(8.0, 12.0)
    ceiling = rng.uniform(2.6, 3.4) if rng.random() < 0.5 else 0.0
    elevation, azimuth = math.radians(rng.uniform(35, 70)), rng.uniform(-math.pi, math.pi)
    light = np.array(
        [
            math.cos(elevation) * math.sin(azimuth),
            math.sin(elevation),
            math.cos(elevation) * math.cos(azimuth),
        ]
    )
    floor = _grey(rng, 0.45, 0.7)
    wall = _grey(rng, 0.35, 0.65)
    return Scene(
        camera=camera,
        half_width=half_width,
        depth=depth,
        ceiling=ceiling,
        light=light,
        floor_rgb=np.stack([floor, 0.75 * floor]),
        checker=rng.uniform(0.4, 1.0),
        wall_rgb=np.stack([wall, 0.85 * wall]),
        stripe=rng.uniform(0.15, 0.5),
        stripe_vertical=bool(rng.random() < 0.5),
        objects=_place_objects(rng, camera, half_width, int(rng.integers(1, num_objects + 1))),
    )
