"""The cost of distillation per training step, with a live teacher and with the teacher cache.

The case: the student is ``hps`` (``convnet`` width 16, ASPP heads) with ``ew`` on one batch
of 32 ``synthetic`` 64×64 images with the ``standard`` preset's six tasks, Adam, on the CPU;
one :class:`~pymtl.engine.step.TrainStep` plus the optimiser step per call. Implementations
(``extra_info["impl"]``), in one group:

* ``none``: no distillation (the baseline of the ratios);
* ``kd4mtl``, ``bam``: single-task teachers (``stl``: six ``convnet`` + head networks, as the
  baselines store holds them) run live, under no-grad, every step;
* ``kdam``: one multi-task teacher, ``hps`` with a ``convnet`` twice as wide, run live;
* ``kd4mtl_cached``, ``bam_cached``, ``kdam_cached``: the same losses with the teacher's
  signals read from a :class:`~pymtl.engine.teacher_cache.TeacherCache` (memory-mapped
  ``.npy`` files written once for the batch's items; warm in the page cache, as after the
  first epoch).

Teachers have random weights: the cost of a forward pass does not depend on them.
``extra_info`` holds ``ratio_to_none`` (min time over ``none``'s, same run) and, for ``none``
and the cached variants, ``peak_mib``: the peak memory of one step (torch's ``MemTracker``:
parameters, gradients, optimiser state, activations, temporaries, the cached signals). It is
not measured with a live teacher: the tracker hooks every module output for the backward
pass, which the teacher's no-grad outputs cannot take.

**Correctness, in both modes**: a cached run's distillation terms equal the live run's on the
same batch from the same initial state.

Run: ``pytest bench/bench_distill_step.py --benchmark-only --benchmark-columns=min,median,rounds``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from pymtl.architectures.hps import HardSharing
from pymtl.architectures.stl import SingleTask
from pymtl.backbones.convnet import ConvNetConfig
from pymtl.balancers.ew import EqualWeights
from pymtl.config import BackboneSection
from pymtl.data.synthetic.config import SyntheticConfig
from pymtl.data.synthetic.dataset import SyntheticScenes
from pymtl.distillation.bam import BAM
from pymtl.distillation.kd4mtl import KD4MTL
from pymtl.distillation.kdam import KDAM
from pymtl.engine.data import loader
from pymtl.engine.step import TrainStep, zero_grad
from pymtl.engine.teacher import Teacher, check_compatible
from pymtl.engine.teacher_cache import TeacherCache

BATCH = 32
IMPLS = ["none", "kd4mtl", "kd4mtl_cached", "bam", "bam_cached", "kdam", "kdam_cached"]
_TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def data() -> tuple[SyntheticScenes, dict[str, torch.Tensor]]:
    scenes = SyntheticScenes.from_config(SyntheticConfig(train_size=BATCH, hflip=False))
    assert isinstance(scenes, SyntheticScenes)
    batch = next(iter(loader(scenes, [list(range(BATCH))])))
    return scenes, batch


def _backbone(width: int) -> BackboneSection:
    return BackboneSection(name="convnet", options=ConvNetConfig(width=width))


def _teacher(kind: str, tasks: Any, layers: tuple[str, ...]) -> Teacher:
    torch.manual_seed(1)
    cls = HardSharing if kind == "kdam" else SingleTask
    model = cls(tasks, 3, backbone=_backbone(32 if kind == "kdam" else 16))
    return Teacher(model=model.eval().requires_grad_(False), source=Path(kind), layers=layers)


def _setup(impl: str, scenes: SyntheticScenes, batch: dict[str, torch.Tensor], tmp: Path) -> Any:
    torch.manual_seed(0)
    model = HardSharing(scenes.tasks, 3, backbone=_backbone(16))
    kind = impl.removesuffix("_cached")
    loss = {"kd4mtl": KD4MTL, "bam": BAM, "kdam": KDAM}.get(kind)
    distiller = loss(scenes.tasks) if loss is not None else None
    teacher = None
    if distiller is not None:
        teacher = _teacher(kind, scenes.tasks, distiller.layers)
        distiller.prepare(*check_compatible(model, teacher, distiller, batch["image"]))
        if impl.endswith("_cached"):
            live = teacher

            def compute(x: torch.Tensor) -> Any:
                with torch.no_grad():
                    return live.model.signals(x, live.layers)

            teacher = copy.copy(teacher)
            teacher.cache = TeacherCache.open_or_build(
                tmp / kind,
                kind,
                compute,
                scenes,
                outputs=distiller.reads_outputs,
                layers=len(distiller.layers),
                batch_size=BATCH,
            )
    balancer = EqualWeights(scenes.task_names)
    step = TrainStep(model, scenes.tasks, balancer, distiller=distiller, teacher=teacher)
    params = list(model.parameters()) + (list(distiller.parameters()) if distiller else [])
    return step, torch.optim.Adam(params, lr=1e-3)


def _run(step: TrainStep, opt: torch.optim.Optimizer, batch: dict[str, torch.Tensor]) -> Any:
    zero_grad(step.model)
    if step.distiller is not None:
        zero_grad(step.distiller)
    result = step(batch, progress=0.5, indices=list(range(BATCH)))
    opt.step()
    return result


def _peak_mib(step: TrainStep, opt: torch.optim.Optimizer, batch: dict[str, torch.Tensor]) -> float:
    from torch.distributed._tools.mem_tracker import MemTracker

    tracker = MemTracker()
    tracker.track_external(step.model, opt)
    with tracker:
        _run(step, opt, batch)
    peak = tracker.get_tracker_snapshot("peak")
    return sum(v["Total"] for v in peak.values()) / 2**20


@pytest.mark.parametrize("impl", IMPLS)
def test_distill_step(benchmark: Any, impl: str, data: Any, tmp_path: Path) -> None:
    scenes, batch = data
    step, opt = _setup(impl, scenes, batch, tmp_path)
    if impl.endswith("_cached"):  # the cache gives the live teacher's terms
        live_step, live_opt = _setup(impl.removesuffix("_cached"), scenes, batch, tmp_path)
        a, b = _run(step, opt, batch).distill, _run(live_step, live_opt, batch).distill
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    benchmark.group = "distillation step (hps, 6 tasks, batch 32, 64×64)"
    benchmark.extra_info.update(impl=impl, threads=torch.get_num_threads())
    benchmark.pedantic(_run, args=(step, opt, batch), rounds=10, warmup_rounds=2)
    if benchmark.stats is None:  # --benchmark-disable: correctness only
        return
    _TIMES[impl] = benchmark.stats.stats.min
    if "none" in _TIMES:
        benchmark.extra_info["ratio_to_none"] = _TIMES[impl] / _TIMES["none"]
    if step.teacher is None or step.teacher.cache is not None:
        # torch's MemTracker hooks every module output for the backward pass, and a live
        # teacher's no-grad outputs cannot take such a hook: not measured for live teachers
        benchmark.extra_info["peak_mib"] = _peak_mib(step, opt, batch)
