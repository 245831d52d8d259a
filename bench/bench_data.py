"""Rendering throughput of the ``synthetic`` dataset (images per second on one core).

Three implementations of "give me N samples", one group per image size:

* ``render``: :func:`pymtl.data.synthetic.sample.render_sample`, the full render: the scene,
  RGB with shadows and textures, and every label (semseg, instance, depth, normals, edges,
  parts, colorseg, saliency, count, presence, color_of_largest, noise), as numpy arrays;
* ``getitem``: ``SyntheticScenes.__getitem__`` with all eleven tasks: the render plus a flip,
  the conversion to the tasks' tensor layouts, label noise on one task and a labelled mask;
* ``supersample``: ``render`` with 2×2 supersampled RGB (64 px only).

Each round renders the same ``N_IMAGES`` samples (indices 0..N-1, so varied scenes).
``extra_info`` holds impl, image_size, images per round, ``img_per_s`` (images over the median
round time), ``img_per_s_best`` (over the min) and ``cpu_per_wall`` (process CPU time over
wall time of all rounds; 1.0 means the render ran on one core: numpy's ufuncs are
single-threaded and the small [N, 3] matrix products stay below OpenBLAS's threading
threshold). torch is pinned to one thread here.

Run: ``pytest bench/bench_data.py --benchmark-only``; with ``--benchmark-disable`` every body
runs once and checks the shapes and dtypes of what it produced.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch

from pymtl.data.synthetic import TASK_NAMES, SyntheticScenes
from pymtl.data.synthetic.sample import RenderSpec, render_sample

N_IMAGES = 32
CASES = [
    pytest.param("render", 64, id="64-render"),
    pytest.param("getitem", 64, id="64-getitem"),
    pytest.param("supersample", 64, id="64-supersample"),
    pytest.param("render", 128, id="128-render"),
    pytest.param("getitem", 128, id="128-getitem"),
]


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _renderer(impl: str, size: int) -> Callable[[int], dict[str, Any]]:
    if impl == "getitem":
        ds = SyntheticScenes(
            image_size=size, tasks=TASK_NAMES, train_size=N_IMAGES, hflip=True,
            label_noise={"semseg": 0.1}, labelled_fraction={"depth": 0.5},
        )  # fmt: skip
        return ds.__getitem__
    spec = RenderSpec(
        seed=0, split="train", image_size=size, num_objects=6,
        supersample=impl == "supersample", sensor_noise=0.01,
    )  # fmt: skip
    return lambda i: render_sample(spec, i)


def _check(impl: str, size: int, sample: dict[str, Any]) -> None:
    hw = (size, size)
    if impl == "getitem":
        expected = {"image": (3, *hw), "semseg": hw, "depth": (1, *hw), "normals": (3, *hw),
                    "edges": (1, *hw), "parts": hw, "saliency": (1, *hw), "count": (),
                    "presence": (3,), "color_of_largest": (), "colorseg": hw, "noise": hw,
                    "depth.mask": ()}  # fmt: skip
        assert {k: tuple(v.shape) for k, v in sample.items()} == expected
        assert sample["image"].dtype == torch.float32
        assert sample["semseg"].dtype == torch.int64
        return
    expected = {"image": (3, *hw), "semseg": hw, "instance": hw, "depth": hw,
                "normals": (3, *hw), "edges": hw, "parts": hw, "colorseg": hw, "saliency": hw,
                "count": (), "presence": (3,), "color_of_largest": (), "noise": hw}  # fmt: skip
    assert {k: v.shape for k, v in sample.items()} == expected
    assert sample["image"].dtype == np.uint8
    assert sample["depth"].dtype == np.float32
    assert np.isfinite(sample["depth"]).all()
    assert (sample["depth"] > 0).all()


@pytest.mark.parametrize(("impl", "size"), CASES)
def test_render_throughput(benchmark: Any, impl: str, size: int) -> None:
    render = _renderer(impl, size)
    clocks = {"cpu": 0.0, "wall": 0.0}

    def batch() -> list[dict[str, Any]]:
        cpu, wall = time.process_time(), time.perf_counter()
        out = [render(i) for i in range(N_IMAGES)]
        clocks["cpu"] += time.process_time() - cpu
        clocks["wall"] += time.perf_counter() - wall
        return out

    benchmark.group = f"synthetic render {size}x{size}"
    benchmark.extra_info.update(impl=impl, image_size=size, images_per_round=N_IMAGES)
    samples = benchmark.pedantic(batch, rounds=5 if size <= 64 else 3, warmup_rounds=1)
    if not benchmark.disabled:
        stats = benchmark.stats.stats
        benchmark.extra_info["img_per_s"] = round(N_IMAGES / stats.median, 1)
        benchmark.extra_info["img_per_s_best"] = round(N_IMAGES / stats.min, 1)
        benchmark.extra_info["cpu_per_wall"] = round(clocks["cpu"] / clocks["wall"], 2)
    assert len(samples) == N_IMAGES
    for sample in samples[:2]:
        _check(impl, size, sample)
