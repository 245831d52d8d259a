"""Procedural albedo of the synthetic scenes: checkerboard floor, striped walls, object textures.

SPEC-data §3.2 [pymtl]. Textures are functions of the hit point in world (room) or object
coordinates, so they stay fixed to surfaces whatever the camera does. Object textures only
modulate brightness, never hue, so an object's palette colour (the ``colorseg`` and
``color_of_largest`` targets) is always what is seen. Value noise is hashed lattice noise
with smoothstep trilinear interpolation; the hash is integer arithmetic on uint32, identical
on every platform.
"""

from __future__ import annotations

import numpy as np

from pymtl.data.synthetic.geometry import BACK_WALL, CEILING, FIRST_OBJECT, FLOOR
from pymtl.data.synthetic.scene import BOX, PALETTE, STRIPES, VALUE_NOISE, Objects, Scene

__all__ = ["albedo", "value_noise"]

_CEILING_RGB = np.array([0.8, 0.8, 0.78])
_STRIPE_DARK = 0.65  # brightness of the dark object stripes
_NOISE_RANGE = (0.55, 1.0)  # brightness range of value-noise textures


def _hash01(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray, seed: int) -> np.ndarray:
    """A pseudo-random value in [0, 1) per integer lattice point (uint32 avalanche hash)."""
    h = (
        ix.astype(np.uint32) * np.uint32(73856093)
        ^ iy.astype(np.uint32) * np.uint32(19349663)
        ^ iz.astype(np.uint32) * np.uint32(83492791)
        ^ np.uint32(seed & 0xFFFFFFFF)
    )
    h ^= h >> np.uint32(15)
    h *= np.uint32(0x2C1B3C6D)
    h ^= h >> np.uint32(12)
    h *= np.uint32(0x297A2D39)
    h ^= h >> np.uint32(15)
    values: np.ndarray = h.astype(np.float64) / 2.0**32
    return values


def value_noise(p: np.ndarray, seed: int) -> np.ndarray:
    """Smooth noise in [0, 1) at points ``p`` [M, 3] (lattice spacing 1)."""
    base = np.floor(p)
    f = p - base
    w = f * f * (3.0 - 2.0 * f)  # smoothstep weights
    i = base.astype(np.int64)
    out = np.zeros(len(p))
    for dx in (0, 1):
        wx = w[:, 0] if dx else 1.0 - w[:, 0]
        for dy in (0, 1):
            wy = w[:, 1] if dy else 1.0 - w[:, 1]
            for dz in (0, 1):
                wz = w[:, 2] if dz else 1.0 - w[:, 2]
                out += wx * wy * wz * _hash01(i[:, 0] + dx, i[:, 1] + dy, i[:, 2] + dz, seed)
    return out


def _object_albedo(p: np.ndarray, objects: Objects, k: int) -> np.ndarray:
    """[M, 3] albedo at points ``p`` [M, 3] on object ``k``."""
    rgb = np.broadcast_to(PALETTE[objects.color[k]], p.shape)
    texture, scale = objects.texture[k], objects.tex_scale[k]
    local = p - objects.center[k]
    if objects.kind[k] == BOX:
        c, s = np.cos(objects.yaw[k]), np.sin(objects.yaw[k])
        local = local @ np.array([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]])
    if texture == STRIPES:
        dark = np.floor((local[:, 1] + objects.half[k, 1]) / scale).astype(np.int64) & 1
        return rgb * np.where(dark == 1, _STRIPE_DARK, 1.0)[:, None]
    if texture == VALUE_NOISE:
        lo, hi = _NOISE_RANGE
        return (
            rgb * (lo + (hi - lo) * value_noise(local / scale, int(objects.tex_seed[k])))[:, None]
        )
    return np.array(rgb)


def _room_albedo(p: np.ndarray, prim: np.ndarray, scene: Scene) -> np.ndarray:
    """[N, 3] albedo of room-surface hits (objects' rows are left at 0)."""
    out = np.zeros((len(p), 3))
    floor = prim == FLOOR
    cells = np.floor(p[floor][:, [0, 2]] / scene.checker).astype(np.int64).sum(axis=1)
    out[floor] = scene.floor_rgb[cells & 1]
    wall = (prim > FLOOR) & (prim < CEILING)
    pw = p[wall]
    if scene.stripe_vertical:  # along the wall: x on the back wall, z on the side walls
        coord = np.where(prim[wall] == BACK_WALL, pw[:, 0], pw[:, 2])
    else:
        coord = pw[:, 1]
    out[wall] = scene.wall_rgb[np.floor(coord / scene.stripe).astype(np.int64) & 1]
    out[prim == CEILING] = _CEILING_RGB
    return out


def albedo(p: np.ndarray, prim: np.ndarray, scene: Scene) -> np.ndarray:
    """[N, 3] linear RGB albedo at hit points ``p`` [N, 3] on primitives ``prim`` [N]."""
    out = _room_albedo(p, prim, scene)
    for k in range(len(scene.objects)):
        idx = np.flatnonzero(prim == FIRST_OBJECT + k)
        if idx.size:
            out[idx] = _object_albedo(p[idx], scene.objects, k)
    return out
