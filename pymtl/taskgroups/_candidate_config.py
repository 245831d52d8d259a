"""The run configuration of each candidate of ``pymtl group train`` [S][pymtl].

Reference: SPEC-methods §4.1 (Standley et al., ICML 2020 [S]): every candidate network is
trained the same way, on its own tasks, at its own encoder width. pymtl [pymtl]: an ``hps`` run
with equal weights (``ew``) on the dataset restricted to the candidate's tasks (the dataset's
``tasks`` option; options keyed by task, such as ``label_noise``, keep only the candidate's
tasks), with the backbone's integer ``width`` scaled by the width factor
(``max(1, round(width · factor))``); an ESA network trains for one epoch of
:func:`esa_steps` steps.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from pymtl.config import ArchSection, BackboneSection, DatasetSection, RunConfig
from pymtl.engine import build
from pymtl.engine.data import epoch_batches
from pymtl.errors import ConfigError
from pymtl.plugins import Registry
from pymtl.taskgroups.candidates import default_name

__all__ = ["CandidateSpec", "candidate_config", "check_base", "esa_steps", "restrict_dataset"]


@attrs.frozen
class CandidateSpec:
    """A network to train: its tasks (in task-list order) and encoder width factor."""

    tasks: tuple[str, ...]
    width: float = 1.0

    @property
    def name(self) -> str:
        """Its name in the candidate file (``"+".join(tasks)``, ``@width`` unless 1)."""
        return default_name(self.tasks, self.width)

    @property
    def run_name(self) -> str:
        """Its run directory's name, ``task+task@width``, filesystem-safe."""
        return re.sub(r"[^A-Za-z0-9_.+@-]", "_", f"{'+'.join(self.tasks)}@{self.width:g}")


def _backbone(config: RunConfig) -> BackboneSection:
    assert config.arch is not None  # checked by check_base
    section = getattr(config.arch.options, "backbone", None)
    width = getattr(getattr(section, "options", None), "width", None)
    if not isinstance(section, BackboneSection) or type(width) is not int:
        name = getattr(section, "name", None)
        raise ConfigError(
            f"backbone {name!r} has no integer 'width' option (got {width!r}) @ "
            "$.arch.backbone; pymtl group train scales it for the reduced-width networks: "
            'use a backbone with one, e.g. --set arch.backbone.name="convnet"'
        )
    return section


def check_base(config: RunConfig) -> None:
    """Refuse a base configuration ``pymtl group train`` cannot turn into candidates."""
    if config.dataset is None:
        raise ConfigError("no dataset configured: pass --dataset NAME or set [dataset] name")
    if not attrs.has(type(config.dataset.options)) or not any(
        f.name == "tasks" for f in attrs.fields(type(config.dataset.options))
    ):
        raise ConfigError(
            f"dataset {config.dataset.name!r} has no 'tasks' option; pymtl group train "
            "restricts the dataset to each candidate's tasks and needs one"
        )
    arch = config.arch.name if config.arch is not None else None
    if arch != "hps":
        raise ConfigError(
            f"pymtl group train trains hard-sharing candidates (SPEC §4.1); got --arch "
            f"{arch!r}, expected hps (or no --arch)"
        )
    if config.balancer.name != "ew" or config.distill is not None:
        what = f"--distill {config.distill.name!r}" if config.distill else ""
        what = what or f"--balancer {config.balancer.name!r}"
        raise ConfigError(
            f"pymtl group train trains every candidate with equal weights and no "
            f"distillation (SPEC §4.1); got {what}, expected ew and no --distill"
        )
    _backbone(config)


def restrict_dataset(section: DatasetSection, tasks: Sequence[str], where: str) -> DatasetSection:
    """``section`` (a dataset with a ``tasks`` option) on ``tasks`` only; ``where`` names the
    caller in the error.

    Raises:
        ConfigError: the dataset refuses these tasks.
    """
    options = section.options
    known = set(options.tasks)
    changes: dict[str, Any] = {"tasks": tuple(tasks)}
    for field in attrs.fields(type(options)):
        value = getattr(options, field.name)
        if isinstance(value, Mapping) and value and set(value) <= known:
            changes[field.name] = {t: v for t, v in value.items() if t in tasks}
    try:
        return attrs.evolve(section, options=attrs.evolve(options, **changes))
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{where}: dataset {section.name!r} refuses tasks {list(tasks)}: {exc}"
        ) from None


def candidate_config(
    base: RunConfig, spec: CandidateSpec, *, esa_steps: int | None = None
) -> RunConfig:
    """The run of ``spec``: ``base`` (checked by :func:`check_base`) on the candidate's tasks,
    with the backbone width scaled, and for esa one epoch of ``esa_steps`` steps."""
    check_base(base)
    assert base.dataset is not None
    assert base.arch is not None
    dataset = restrict_dataset(base.dataset, spec.tasks, f"candidate {spec.name!r}")
    arch = base.arch
    if spec.width != 1.0:
        section = _backbone(base)
        width = max(1, round(section.options.width * spec.width))
        backbone = attrs.evolve(section, options=attrs.evolve(section.options, width=width))
        options = attrs.evolve(arch.options, backbone=backbone)
        arch = ArchSection(name=arch.name, options=options)
    train = base.train
    if esa_steps is not None:
        train = attrs.evolve(train, epochs=1, steps_per_epoch=esa_steps)
    return attrs.evolve(base, dataset=dataset, arch=arch, train=train)


def esa_steps(config: RunConfig, registry: Registry, fraction: float) -> int:
    """max(1, ⌈fraction · batches per epoch⌉), counting batches as the training loop does."""
    t = config.train
    size = len(build.build_dataset(config, registry, "train"))
    per_epoch = len(epoch_batches(size, t.batch_size, seed=0, epoch=0, shuffle=False))
    per_epoch = min(per_epoch, t.steps_per_epoch) if t.steps_per_epoch else per_epoch
    return max(1, math.ceil(fraction * per_epoch - 1e-9))
