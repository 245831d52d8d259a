"""Analytic ray-object hits and normals of the synthetic renderer against ray marching."""

import math

import numpy as np
import pytest

from pymtl.data.synthetic.geometry import hit_object, object_normals, occluded
from pymtl.data.synthetic.scene import BOX, CYLINDER, SPHERE, Objects

STEP = 2e-3


def one_object(kind, half, yaw=0.0):
    half = np.asarray(half, dtype=float)
    return Objects(
        kind=np.array([kind]), center=np.array([[0.3, half[1], 4.0]]), half=half[None],
        yaw=np.array([yaw]), color=np.array([0]), texture=np.array([0]),
        tex_scale=np.array([0.1]), tex_seed=np.array([0]),
    )  # fmt: skip


def inside(objects, p):
    """The solid, written independently of the renderer: [..., 3] points -> bool."""
    rel = p - objects.center[0]
    half, kind = objects.half[0], objects.kind[0]
    if kind == SPHERE:
        return np.linalg.norm(rel, axis=-1) <= half[0]
    if kind == BOX:  # box frame: x' = x cos + z sin, z' = -x sin + z cos
        c, s = math.cos(objects.yaw[0]), math.sin(objects.yaw[0])
        local = np.stack([rel[..., 0] * c + rel[..., 2] * s, rel[..., 1],
                          -rel[..., 0] * s + rel[..., 2] * c], axis=-1)  # fmt: skip
        return (np.abs(local) <= half).all(axis=-1)
    return (np.hypot(rel[..., 0], rel[..., 2]) <= half[0]) & (np.abs(rel[..., 1]) <= half[1])


def rays_at(objects, rng, n, *, shared_origin):
    """Rays towards points well inside the object (so they hit), from one camera-like origin
    or from points 3 m away in every upper-hemisphere direction (so tops are hit too)."""
    if shared_origin:
        origin = np.array([0.0, 1.6, 0.0])
    else:
        u = rng.normal(size=(n, 3))
        u[:, 1] = np.abs(u[:, 1])
        origin = objects.center[0] + 3 * u / np.linalg.norm(u, axis=1, keepdims=True)
    target = objects.center[0] + 0.8 * rng.uniform(-1, 1, (n, 3)) * objects.half[0] / math.sqrt(3)
    d = target - origin
    return origin, d / np.linalg.norm(d, axis=-1, keepdims=True)


SHAPES = [
    (SPHERE, [0.5, 0.5, 0.5], 0.0),
    (BOX, [0.3, 0.6, 0.5], 0.4),
    (BOX, [0.7, 0.3, 0.3], -0.7),
    (CYLINDER, [0.4, 0.7, 0.4], 0.0),
]


@pytest.mark.parametrize(("kind", "half", "yaw"), SHAPES)
@pytest.mark.parametrize("shared_origin", [True, False])
def test_hits_match_ray_marching(kind, half, yaw, shared_origin):
    objects = one_object(kind, half, yaw)
    rng = np.random.default_rng(kind)
    o, d = rays_at(objects, rng, 64, shared_origin=shared_origin)
    t = hit_object(o, d, objects, 0)
    steps = np.arange(0, 8, STEP)
    marched = np.broadcast_to(o, d.shape)[:, None] + steps[None, :, None] * d[:, None]
    first = inside(objects, marched).argmax(axis=1)
    assert np.isfinite(t).all()
    np.testing.assert_allclose(t, steps[first], atol=STEP * 1.01)
    # rays aimed away from the object miss it
    assert np.isinf(hit_object(o, -d, objects, 0)).all()


@pytest.mark.parametrize(("kind", "half", "yaw"), SHAPES)
def test_normals_point_out_of_the_solid(kind, half, yaw):
    objects = one_object(kind, half, yaw)
    o, d = rays_at(objects, np.random.default_rng(7), 64, shared_origin=False)
    p = o + hit_object(o, d, objects, 0)[:, None] * d
    n, top = object_normals(p, objects, 0)
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-12)
    assert not inside(objects, p + 1e-6 * n).any()
    assert inside(objects, p - 1e-6 * n).all()
    if kind == SPHERE:
        assert np.array_equal(top, n[:, 1] >= 0)
    else:  # box top face / cylinder cap: exactly the upward normals
        assert np.array_equal(top, n[:, 1] > 0.5)
        assert top.any()


def test_occlusion_by_an_object():
    objects = one_object(SPHERE, [0.5, 0.5, 0.5])
    below = np.array([[0.3, 1e-6, 4.0], [0.3, 1e-6, 5.0]])  # under the sphere / beside it
    up = np.array([0.0, 1.0, 0.0])
    assert occluded(below, up, objects, eps=1e-9).tolist() == [True, False]
    on_top = np.array([[0.3, 1.0 + 1e-6, 4.0]])  # leaving the sphere's own surface
    assert occluded(on_top, up, objects, eps=1e-9).tolist() == [False]
