"""Distillation teachers: found, checked, frozen [pymtl] (SPEC-methods §3, common contract).

A distillation loss's teacher is an earlier run. Losses with single-task teachers (``kd4mtl``,
``bam``, ``hinton_kd``) take the ``stl`` run of the single-task baselines store for this
setting (the seed of ``teacher.seed``, by default the run's own), or an ``stl`` run named by
``teacher.run``; ``kdam`` takes the multi-task run named by ``teacher.run``. The teacher must
have finished and have seen the same data (its dataset configuration equals the student's,
``split`` aside), and its features at the loss's layers and its outputs must have the
student's shapes: all checked before training, with a message that names the teacher run.

The teacher is rebuilt from its own ``config.toml`` and last checkpoint, put in eval mode with
``requires_grad = False``, and only ever called under ``no_grad``; it is no submodule of the
student and is in no optimiser. With ``teacher.cache`` its signals for the training split are
read from a :class:`~pymtl.engine.teacher_cache.TeacherCache` instead of computed each step.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
import torch.distributed as dist
from torch import Tensor

from pymtl.architectures.base import Architecture
from pymtl.config import RunConfig, TeacherConfig, load_config, to_document
from pymtl.data.base import Dataset
from pymtl.distillation.base import DistillationLoss, Signals, TeacherKind
from pymtl.engine import baselines, build
from pymtl.engine.checkpoint import load_checkpoint
from pymtl.engine.data import loader
from pymtl.engine.distributed import rank_world
from pymtl.engine.teacher_cache import TeacherCache, cache_identity
from pymtl.errors import ConfigError
from pymtl.plugins import Registry

__all__ = [
    "Teacher",
    "check_compatible",
    "find_teacher_run",
    "load_teacher",
    "setup_distillation",
]


@attrs.define(eq=False)
class Teacher:
    """A frozen teacher network, or the cache of its signals on the training split.

    Attributes:
        model: the teacher (eval mode, no gradients).
        source: its run directory.
        layers: the feature layers the distillation loss reads.
        cache: when set, :meth:`signals` reads the training items' signals from it.
    """

    model: Architecture
    source: Path
    layers: tuple[str, ...]
    cache: TeacherCache | None = None

    @torch.no_grad()
    def signals(self, x: Tensor, indices: Sequence[int] | None = None) -> Signals:
        """The teacher's signals for the batch ``x`` (items ``indices`` of the training split
        when a cache is used)."""
        if self.cache is not None:
            if indices is None:
                raise ValueError("a cached teacher needs the batch's item indices")
            return self.cache.read(indices, x.device)
        return self.model.signals(x, self.layers)


def find_teacher_run(config: RunConfig, registry: Registry, loss: DistillationLoss) -> Path:
    """The run directory of ``config``'s teacher (see the module docstring)."""
    tc = config.teacher or TeacherConfig()
    if tc.run:
        return Path(tc.run)
    if loss.teacher is TeacherKind.MULTI_TASK:
        raise ConfigError(
            f"distillation loss {loss.name!r} distils one multi-task teacher: name its run with "
            "--teacher RUN (or teacher.run), a finished `pymtl train` run on the same dataset "
            "configuration, typically with a larger backbone"
        )
    from pymtl.engine.runs import baseline_config

    store = baselines.baseline_file(baseline_config(config), registry)
    records = {r.seed: r for r in baselines.load_baselines(store)}
    if not records:
        raise ConfigError(
            f"distillation loss {loss.name!r} needs single-task teachers, but the baselines "
            f"store has none for this setting ({store}); train them first with `pymtl "
            "baselines` and this run's --dataset/--preset/--set/--arch options, or name an stl "
            "run with --teacher RUN"
        )
    seed = tc.seed if tc.seed >= 0 else config.seed
    if seed not in records:
        raise ConfigError(
            f"the baselines store {store} has no seed {seed} to teach this run (stored seeds: "
            f"{sorted(records)}); train it with `pymtl baselines --seeds {seed}` or choose one "
            "with --set teacher.seed=S"
        )
    return Path(records[seed].source)


def load_teacher(
    config: RunConfig,
    registry: Registry,
    loss: DistillationLoss,
    dataset: Dataset,
    device: torch.device,
) -> Teacher:
    """Find, check and load ``config``'s teacher for ``loss`` on ``dataset``'s tasks."""
    run = find_teacher_run(config, registry, loss)
    teacher_config = _teacher_config(run, registry)
    _check_same_data(run, teacher_config, config, registry)
    arch = teacher_config.arch.name if teacher_config.arch else None
    if loss.teacher is TeacherKind.SINGLE_TASK and arch != "stl":
        raise ConfigError(
            f"distillation loss {loss.name!r} needs single-task teachers, but teacher run "
            f"{str(run)!r} trained architecture {arch!r}; name an stl run (as `pymtl "
            "baselines` trains them) or leave --teacher out to use the baselines store"
        )
    model = build.build_model(teacher_config, registry, dataset)
    # no config-hash check: the run's own config.toml, read with today's option defaults, may
    # hash differently from when it was trained; the weights must fit the network exactly
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise ConfigError(
            f"teacher run {str(run)!r}: its checkpoint does not fit the network its "
            f"config.toml describes ({str(exc).splitlines()[0]})"
        ) from None
    model.to(device).eval().requires_grad_(False)
    return Teacher(model=model, source=run, layers=tuple(loss.layers))


def _teacher_config(run: Path, registry: Registry) -> RunConfig:
    if not (run / "config.toml").is_file():
        raise ConfigError(f"teacher run {str(run)!r} is not a run directory (no config.toml)")
    if not (run / "metrics.json").is_file():
        raise ConfigError(
            f"teacher run {str(run)!r} has not finished (no metrics.json); finish it with "
            f"`pymtl train --resume --out {run}` first"
        )
    return load_config(run / "config.toml", registry)


def _check_same_data(run: Path, teacher: RunConfig, student: RunConfig, registry: Registry) -> None:
    def dataset(config: RunConfig) -> dict[str, Any]:
        doc = to_document(config, registry).get("dataset", {})
        return {k: v for k, v in doc.items() if k != "split"}

    theirs, ours = dataset(teacher), dataset(student)
    diffs = [
        f"{key}: teacher {theirs.get(key)!r}, student {ours.get(key)!r}"
        for key in sorted(set(theirs) | set(ours))
        if theirs.get(key) != ours.get(key)
    ]
    if diffs:
        raise ConfigError(
            f"teacher run {str(run)!r} was trained on another dataset configuration ("
            + "; ".join(diffs)
            + "); a teacher must have seen the student's data"
        )


@torch.no_grad()
def check_compatible(
    student: Architecture, teacher: Teacher, loss: DistillationLoss, x: Tensor
) -> tuple[Signals, Signals]:
    """The student's and the teacher's signals on ``x`` (student in eval mode, restored after),
    after checking that every feature the loss reads, and every output when it reads them,
    has the same per-sample shape in both."""
    was_training = student.training
    student.eval()
    try:
        ours = student.signals(x, loss.layers)
    finally:
        student.train(was_training)
    theirs = teacher.model.signals(x, teacher.layers)
    for task in loss.tasks:
        pairs = [
            (f"features at layer {layer!r}", ours.features[task][j], theirs.features[task][j])
            for j, layer in enumerate(loss.layers)
        ]
        if loss.reads_outputs:
            pairs.append(("outputs", ours.outputs[task], theirs.outputs[task]))
        for what, mine, other in pairs:
            if mine.shape[1:] != other.shape[1:]:
                raise ConfigError(
                    f"teacher run {str(teacher.source)!r}: its {what} of task {task!r} have "
                    f"per-sample shape {tuple(other.shape[1:])}, the student's "
                    f"{tuple(mine.shape[1:])}; distillation loss {loss.name!r} compares them "
                    "as they are: train the teacher with a backbone that gives the student's "
                    "channels and resolution there"
                )
    return ours, theirs


def setup_distillation(
    config: RunConfig,
    registry: Registry,
    model: Architecture,
    dataset: Dataset,
    device: torch.device,
    *,
    out: Path,
    progress: bool = False,
) -> tuple[DistillationLoss, Teacher] | None:
    """The run's distillation loss (its adaptors built) and checked teacher, with the teacher
    cache opened or computed when ``teacher.cache`` is set; None without ``[distill]``.

    Under ``torch.distributed`` the first process computes the cache while the others wait.
    """
    loss = build.build_distiller(config, registry, dataset)
    if loss is None:
        return None
    loss.to(device)
    teacher = load_teacher(config, registry, loss, dataset, device)
    first = next(iter(loader(dataset, [list(range(min(2, len(dataset))))])))
    loss.prepare(*check_compatible(model, teacher, loss, first["image"].to(device)))
    tc = config.teacher or TeacherConfig()
    if tc.cache:
        rank, world = rank_world()
        if rank == 0:
            teacher.cache = _open_cache(config, registry, loss, teacher, dataset, out, progress)
        if world > 1:
            dist.barrier()  # the first process has written the cache: the others open it
        if rank != 0:
            teacher.cache = _open_cache(config, registry, loss, teacher, dataset, out, progress)
    return loss, teacher


def _open_cache(
    config: RunConfig,
    registry: Registry,
    loss: DistillationLoss,
    teacher: Teacher,
    dataset: Dataset,
    out: Path,
    progress: bool,
) -> TeacherCache:
    tc = config.teacher or TeacherConfig()
    checkpoint = (teacher.source / "checkpoints" / "last.pt").stat()
    identity = cache_identity(
        teacher=str(teacher.source.resolve()),
        checkpoint=[checkpoint.st_size, checkpoint.st_mtime_ns],
        dataset=to_document(config, registry).get("dataset", {}),
        layers=list(loss.layers),
        outputs=loss.reads_outputs,
    )
    device = next(teacher.model.parameters()).device

    def compute(x: Tensor) -> Signals:
        with torch.no_grad():
            return teacher.model.signals(x.to(device), teacher.layers)

    return TeacherCache.open_or_build(
        Path(tc.cache_dir) if tc.cache_dir else out / "teacher-cache",
        identity,
        compute,
        dataset,
        outputs=loss.reads_outputs,
        layers=len(loss.layers),
        batch_size=config.train.eval_batch_size or config.train.batch_size,
        progress=progress,
    )
