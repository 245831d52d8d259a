"""Ray casting and shading of one synthetic scene, vectorised over all H·W rays.

SPEC-data §3.2 [pymtl]: the nearest hit over the room's planes and the objects gives the
distance, primitive id, point, analytic normal and part flag of every ray. Shading is one
directional light plus ambient, ``albedo · (0.35 + 0.65 · max(0, n·l) · visibility)``, with hard
shadows from one shadow ray per lit pixel tested against the objects. Optional 2×2
supersampling (RGB only; the labels come from the pixel-centre rays) and Gaussian sensor
noise; the image is quantised to 8 bits like a camera's output.
"""

from __future__ import annotations

import attrs
import numpy as np

from pymtl.data.synthetic.geometry import (
    FIRST_OBJECT,
    NUM_SURFACES,
    camera_rays,
    nearest_hit,
    object_normals,
    occluded,
    surface_normals,
)
from pymtl.data.synthetic.scene import Scene
from pymtl.data.synthetic.textures import albedo

__all__ = ["AMBIENT", "DIFFUSE", "Hits", "cast", "render_image", "shade"]

AMBIENT, DIFFUSE = 0.35, 0.65
_SHADOW_OFFSET = 1e-6  # shadow rays start this far (m) off the surface, along its normal
_SHADOW_EPS = 1e-9


@attrs.frozen(kw_only=True)
class Hits:
    """The first hit of N rays: distance, primitive id, point, world normal, part flag.

    ``top`` is the upper half of a sphere, the top face of a box, the cap of a cylinder.
    """

    dirs: np.ndarray  # [N, 3]
    t: np.ndarray  # [N]
    prim: np.ndarray  # [N] int64
    point: np.ndarray  # [N, 3]
    normal: np.ndarray  # [N, 3]
    top: np.ndarray  # [N] bool


def cast(scene: Scene, dirs: np.ndarray) -> Hits:
    """Cast camera rays ``dirs`` [N, 3] from the scene's camera."""
    origin = scene.camera.position
    t, prim = nearest_hit(origin, dirs, scene)
    point = origin + t[:, None] * dirs
    normal = surface_normals(np.minimum(prim, NUM_SURFACES - 1))
    top = np.zeros(len(t), dtype=bool)
    for k in range(len(scene.objects)):
        idx = np.flatnonzero(prim == FIRST_OBJECT + k)
        if idx.size:
            normal[idx], top[idx] = object_normals(point[idx], scene.objects, k)
    return Hits(dirs=dirs, t=t, prim=prim, point=point, normal=normal, top=top)


def shade(scene: Scene, hits: Hits) -> np.ndarray:
    """[N, 3] linear RGB of the hits (not clipped)."""
    lambert = np.maximum(hits.normal @ scene.light, 0.0)
    lit = np.flatnonzero(lambert > 0)
    if lit.size and len(scene.objects):
        start = hits.point[lit] + _SHADOW_OFFSET * hits.normal[lit]
        lambert[lit[occluded(start, scene.light, scene.objects, eps=_SHADOW_EPS)]] = 0.0
    rgb: np.ndarray = albedo(hits.point, hits.prim, scene) * (AMBIENT + DIFFUSE * lambert)[:, None]
    return rgb


def render_image(
    scene: Scene,
    size: int,
    *,
    centre: Hits,
    supersample: bool,
    sensor_noise: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """[3, size, size] uint8 image of ``scene``.

    Args:
        scene: what to render.
        size: image height and width in pixels.
        centre: the pixel-centre hits (reused for shading without supersampling).
        supersample: shade 2×2 sub-pixel rays per pixel and average them.
        sensor_noise: standard deviation of Gaussian noise added to each channel (0: none).
        rng: source of the sensor noise (not drawn from when ``sensor_noise`` is 0).
    """
    if supersample:
        fine = shade(scene, cast(scene, camera_rays(scene.camera, size, sub=2)))
        rgb = fine.reshape(size, 2, size, 2, 3).mean(axis=(1, 3))
    else:
        rgb = shade(scene, centre).reshape(size, size, 3)
    if sensor_noise > 0:
        rgb = rgb + rng.normal(0.0, sensor_noise, size=rgb.shape)
    image: np.ndarray = np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
    return image.transpose(2, 0, 1)
