"""One synthetic sample: per-sample seeding, the scene, its image and all its clean labels.

Determinism of SPEC-data §3.2 [pymtl]: sample ``index`` of a split is drawn from
``np.random.default_rng([seed, split_id, index])`` (split ids: train 0, val 1, test 2), so
samples are independent of each other, of the order they are rendered in and of the number of
workers, and the splits never share a scene. Other per-sample randomness (the noise task,
flips, label noise, missing labels) comes from separate streams
``[seed, split_id, index, stream, ...]``, so switching it on never changes a scene.
"""

from __future__ import annotations

import attrs
import numpy as np

from pymtl.data.synthetic.geometry import camera_rays
from pymtl.data.synthetic.labels import dense_labels, image_labels
from pymtl.data.synthetic.render import cast, render_image
from pymtl.data.synthetic.scene import Scene, sample_scene

__all__ = [
    "GENERATOR_VERSION",
    "NOISE_CLASSES",
    "SPLITS",
    "RenderSpec",
    "Stream",
    "render_sample",
    "sample_rng",
    "scene_at",
]

GENERATOR_VERSION = 1
"""Bump whenever a change alters any rendered value; caches are keyed by it."""

SPLITS = ("train", "val", "test")
NOISE_CLASSES = 4
"""Classes of the ``noise`` task's random per-pixel target."""


class Stream:
    """Ids of the per-sample random streams besides the scene's own."""

    NOISE_TASK = 1
    FLIP = 2
    LABEL_NOISE = 3
    LABELLED = 4


@attrs.frozen(kw_only=True)
class RenderSpec:
    """What determines the clean samples of one split (the cache key, with the version)."""

    seed: int
    split: str
    image_size: int
    num_objects: int
    supersample: bool
    sensor_noise: float


def sample_rng(seed: int, split: str, index: int, *stream: int) -> np.random.Generator:
    """The generator of ``stream`` (none: the scene's) of sample ``index`` of ``split``."""
    return np.random.default_rng([seed, SPLITS.index(split), index, *stream])


def scene_at(spec: RenderSpec, index: int) -> Scene:
    """The scene of sample ``index``."""
    return sample_scene(sample_rng(spec.seed, spec.split, index), spec.num_objects)


def render_sample(spec: RenderSpec, index: int) -> dict[str, np.ndarray]:
    """Image and every clean label of sample ``index``, as numpy arrays.

    Keys: ``image`` [3, H, W] uint8; ``semseg``, ``parts``, ``colorseg``, ``noise`` [H, W]
    int8; ``instance`` [H, W] int16; ``depth`` [H, W] float32 (m); ``normals`` [3, H, W]
    float32; ``edges``, ``saliency`` [H, W] uint8; ``count``, ``color_of_largest`` int64
    scalars; ``presence`` [3] uint8. See :mod:`pymtl.data.synthetic.labels`.
    """
    rng = sample_rng(spec.seed, spec.split, index)
    scene = sample_scene(rng, spec.num_objects)
    size = spec.image_size
    centre = cast(scene, camera_rays(scene.camera, size))
    out = dense_labels(scene, centre, size)
    out.update(image_labels(scene, out["instance"]))
    out["image"] = render_image(
        scene,
        size,
        centre=centre,
        supersample=spec.supersample,
        sensor_noise=spec.sensor_noise,
        rng=rng,
    )
    noise_rng = sample_rng(spec.seed, spec.split, index, Stream.NOISE_TASK)
    out["noise"] = noise_rng.integers(NOISE_CLASSES, size=(size, size)).astype(np.int8)
    return out
