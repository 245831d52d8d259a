"""Ray generation, analytic ray-primitive intersections and surface normals.

Formulas of SPEC-data §3.2 [pymtl]: plane ``t = (c - n·o)/(n·d)``; sphere
``t = -b - sqrt(b² - |o-c|² + r²)`` with ``b = d·(o-c)``; vertical capped cylinder: a quadratic
in xz with a height test plus the top-cap plane with a radius test; yawed box: the slab method
in the box frame, its normal from the dominant normalised coordinate. Every function is
vectorised over rays: ``o`` is [N, 3] or one [3] origin shared by all rays, ``d`` is [N, 3]
unit directions, and misses are ``inf``. Intersections closer than ``eps`` are ignored, which
lets shadow rays start on a surface.

Primitive ids: 0 floor, 1 back wall, 2 left wall (x = -W), 3 right wall (x = +W), 4 ceiling,
``FIRST_OBJECT + k`` object k. The bottom faces of objects are never tested: they lie on the
floor, where no camera or shadow ray can reach them.
"""

from __future__ import annotations

import numpy as np

from pymtl.data.synthetic.scene import BOX, CYLINDER, SPHERE, Camera, Objects, Scene

__all__ = [
    "BACK_WALL",
    "CEILING",
    "FIRST_OBJECT",
    "FLOOR",
    "NUM_SURFACES",
    "camera_rays",
    "hit_object",
    "nearest_hit",
    "object_normals",
    "occluded",
    "surface_normals",
]

FLOOR, BACK_WALL, LEFT_WALL, RIGHT_WALL, CEILING = 0, 1, 2, 3, 4
NUM_SURFACES = 5
FIRST_OBJECT = NUM_SURFACES
_SURFACE_NORMALS = np.array(
    [[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]
)  # world normals of the room's surfaces, pointing into the room


def camera_rays(camera: Camera, size: int, sub: int = 1) -> np.ndarray:
    """[(size·sub)², 3] unit ray directions, row-major from the top-left pixel.

    With ``sub > 1`` each pixel gets ``sub × sub`` rays on a regular sub-pixel grid.
    """
    n = size * sub
    span = np.tan(camera.hfov / 2)
    coords = ((np.arange(n) + 0.5) / n * 2.0 - 1.0) * span
    u = np.tile(coords, n)  # column coordinate: right
    v = np.repeat(-coords, n)  # row coordinate: up (row 0 is the top)
    d: np.ndarray = camera.forward + u[:, None] * camera.right + v[:, None] * camera.up
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return d


def _surfaces(o: np.ndarray, d: np.ndarray, scene: Scene, eps: float) -> tuple[np.ndarray, ...]:
    """Distances to the five room surfaces ([N] each; ``inf`` where missed or absent)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        w = scene.half_width
        floor = np.where(d[:, 1] < 0, -o[..., 1] * inv[:, 1], np.inf)
        back = (scene.depth - o[..., 2]) * inv[:, 2]
        left = np.where(d[:, 0] < 0, (-w - o[..., 0]) * inv[:, 0], np.inf)
        right = np.where(d[:, 0] > 0, (w - o[..., 0]) * inv[:, 0], np.inf)
        if scene.ceiling > 0:
            ceiling = np.where(d[:, 1] > 0, (scene.ceiling - o[..., 1]) * inv[:, 1], np.inf)
        else:
            ceiling = np.full(len(d), np.inf)
    return tuple(np.where(t > eps, t, np.inf) for t in (floor, back, left, right, ceiling))


def _sphere(o: np.ndarray, d: np.ndarray, c: np.ndarray, r: float, *, eps: float) -> np.ndarray:
    oc = o - c
    b = oc @ d.T if oc.ndim == 1 else np.einsum("ij,ij->i", oc, d)
    cc = (oc * oc).sum(-1) - r * r
    disc = b * b - cc
    root = np.sqrt(np.maximum(disc, 0.0))
    near, far = -b - root, -b + root
    t = np.where(near > eps, near, np.where(far > eps, far, np.inf))
    return np.where(disc >= 0, t, np.inf)


def _yaw_matrix(yaw: float) -> np.ndarray:
    """R with ``local = (world - c) @ R`` for a box yawed by ``yaw`` about +y."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]])


def _box(
    o: np.ndarray, d: np.ndarray, c: np.ndarray, half: np.ndarray, *, yaw: float, eps: float
) -> np.ndarray:
    R = _yaw_matrix(yaw)
    ol = ((o - c) @ R).T  # [3] or [3, N]: axis-major, so the slab reductions are row-wise
    dl = np.ascontiguousarray((d @ R).T)  # [3, N]
    ol = np.ascontiguousarray(ol) if ol.ndim == 2 else ol[:, None]
    h = half[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / dl
        t1, t2 = (-h - ol) * inv, (h - ol) * inv
    near = np.minimum(t1, t2).max(axis=0)
    far = np.maximum(t1, t2).min(axis=0)
    t = np.where(near > eps, near, np.where(far > eps, far, np.inf))
    return np.where(near <= far, t, np.inf)


def _cylinder(
    o: np.ndarray, d: np.ndarray, c: np.ndarray, half: np.ndarray, *, eps: float
) -> np.ndarray:
    r, hh = half[0], half[1]
    oc = o - c
    ox, oy, oz = oc[..., 0], oc[..., 1], oc[..., 2]
    dx, dy, dz = d[:, 0], d[:, 1], d[:, 2]
    a = dx * dx + dz * dz
    b = ox * dx + oz * dz
    disc = b * b - a * (ox * ox + oz * oz - r * r)
    with np.errstate(divide="ignore", invalid="ignore"):
        side = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
        side_ok = (disc >= 0) & (side > eps) & (np.abs(oy + side * dy) <= hh)
        cap = (hh - oy) / dy
        cx, cz = ox + cap * dx, oz + cap * dz
        cap_ok = (cap > eps) & (cx * cx + cz * cz <= r * r)
    return np.minimum(np.where(side_ok, side, np.inf), np.where(cap_ok, cap, np.inf))


def hit_object(
    o: np.ndarray, d: np.ndarray, objects: Objects, k: int, *, eps: float = 1e-9
) -> np.ndarray:
    """[N] distance along each ray to object ``k`` (``inf`` where missed)."""
    kind, c, half = objects.kind[k], objects.center[k], objects.half[k]
    if kind == SPHERE:
        return _sphere(o, d, c, float(half[0]), eps=eps)
    if kind == BOX:
        return _box(o, d, c, half, yaw=float(objects.yaw[k]), eps=eps)
    return _cylinder(o, d, c, half, eps=eps)


def nearest_hit(o: np.ndarray, d: np.ndarray, scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """The first surface along each ray: distance ``t`` [N] and primitive id [N] (int64).

    The room is closed towards the camera's view (its rays all have d_z > 0), so every ray
    hits something and ``t`` is finite.
    """
    surfaces = np.stack(_surfaces(o, d, scene, 1e-9))
    prim = surfaces.argmin(axis=0)
    t = np.take_along_axis(surfaces, prim[None], axis=0)[0]
    for k in range(len(scene.objects)):
        tk = hit_object(o, d, scene.objects, k)
        closer = tk < t
        t = np.where(closer, tk, t)
        prim[closer] = FIRST_OBJECT + k
    return t, prim


def occluded(p: np.ndarray, direction: np.ndarray, objects: Objects, *, eps: float) -> np.ndarray:
    """[N] bool: does the ray from each point ``p`` [N, 3] along ``direction`` hit an object?"""
    d = np.broadcast_to(direction, p.shape)
    blocked = np.zeros(len(p), dtype=bool)
    for k in range(len(objects)):
        blocked |= np.isfinite(hit_object(p, d, objects, k, eps=eps))
    return blocked


def surface_normals(prim: np.ndarray) -> np.ndarray:
    """World normals [N, 3] of room-surface hits (``prim < NUM_SURFACES``)."""
    normals: np.ndarray = _SURFACE_NORMALS[prim]
    return normals


def object_normals(p: np.ndarray, objects: Objects, k: int) -> tuple[np.ndarray, np.ndarray]:
    """World unit normals [M, 3] at points ``p`` [M, 3] on object ``k``, and the top flag [M].

    ``top`` marks a sphere's upper half, a box's top face, a cylinder's cap.
    """
    kind, c, half = objects.kind[k], objects.center[k], objects.half[k]
    rel = p - c
    if kind == SPHERE:
        return rel / np.linalg.norm(rel, axis=1, keepdims=True), rel[:, 1] >= 0
    if kind == BOX:
        R = _yaw_matrix(float(objects.yaw[k]))
        local = rel @ R
        axis = (np.abs(local) / half).argmax(axis=1)
        n_local = np.zeros_like(local)
        rows = np.arange(len(p))
        n_local[rows, axis] = np.sign(local[rows, axis])
        return n_local @ R.T, (axis == 1) & (local[:, 1] > 0)
    assert kind == CYLINDER, kind
    r, hh = half[0], half[1]
    radial = np.hypot(rel[:, 0], rel[:, 2])
    cap = (hh - rel[:, 1]) / hh < (r - radial) / r
    n = np.zeros_like(rel)
    with np.errstate(divide="ignore", invalid="ignore"):  # radial = 0 only on the cap
        n[:, 0], n[:, 2] = rel[:, 0] / radial, rel[:, 2] / radial
    n[cap] = (0.0, 1.0, 0.0)
    return n, cap
