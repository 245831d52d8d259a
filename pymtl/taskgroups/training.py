"""Training the candidate networks of a task-grouping search: ``pymtl group train`` [S][pymtl].

Reference: SPEC-methods §4.1 and §4.3 (Standley et al., ICML 2020 [S]). Candidate lists, by
``mode`` (:func:`candidate_list`; order: by size, the reduced-width singles right after the
full-width ones, then task order):

* ``full``: every non-empty task subset at width 1 plus one reduced-width single-task network
  per task (the paper's C₀: 2^k − 1 + k networks);
* ``hoa``: the singles and pairs at width 1 plus the reduced singles (k + k(k−1)/2 + k), what
  ``pymtl group select --hoa`` needs;
* ``esa``: the ``full`` list, each network trained for ``esa_fraction`` of one epoch
  (``train.epochs = 1``, ``train.steps_per_epoch = max(1, ⌈fraction · batches per epoch⌉)``).

Each candidate is an ``hps`` run with equal weights on the dataset restricted to its tasks, its
backbone width scaled by its width factor (:mod:`pymtl.taskgroups._candidate_config`). It
trains into ``ROOT/<task+task>@<width>/`` (``ROOT/esa-<fraction>/…`` for esa), where its
per-task losses on ``val`` and ``test`` are kept (:mod:`pymtl.taskgroups._candidate_run`), so
re-running skips finished candidates and resumes interrupted ones; ``jobs`` trains them in
parallel processes, ``shard = (i, n)`` only those whose index % n == i − 1.

Splits of the written candidate file [pymtl]: ``full`` and ``hoa`` write ``val`` and ``test``;
``esa`` writes ``esa`` (the early networks' val losses) and ``esa-test`` (their test losses).
The esa names differ from ``val``/``test`` because :func:`~pymtl.taskgroups.merge_candidates`
merges a network present in two files only when their losses on a shared split agree. So::

    pymtl group select ROOT/candidates.toml ROOT/candidates-esa.toml --esa-split esa
    pymtl group select ROOT/candidates-esa.toml --split esa --score-split esa-test

select on the converged val losses and on the early ones, both scored on the converged test
losses (the paper's Table 4), or on the esa file alone. Costs (``cost``): the width factor
(SPEC §4.1), or ``macs``: the network's multiply-adds per image (:mod:`pymtl.engine.info`)
over 1 SNT, the mean multiply-adds of the k full-width single-task networks. Files of both cost
kinds do not merge (a network's cost must agree).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from pymtl.config import RunConfig
from pymtl.errors import ConfigError
from pymtl.plugins import Registry, get_registry
from pymtl.taskgroups._candidate_config import (
    CandidateSpec,
    candidate_config,
    check_base,
    esa_steps,
    restrict_dataset,
)
from pymtl.taskgroups._candidate_run import CandidateJob, network_macs, run_candidates
from pymtl.taskgroups.candidates import CandidateSet, write_candidates

__all__ = [
    "COSTS",
    "MODES",
    "CandidateSpec",
    "GroupTrainPlan",
    "candidate_config",
    "candidate_list",
    "check_base",
    "parse_shard",
    "take_shard",
    "train_candidates",
]

MODES = ("full", "hoa", "esa")
"""Candidate lists of :func:`candidate_list` (see the module docstring)."""
COSTS = ("width", "macs")
"""How a candidate's cost in SNT is measured (see the module docstring)."""
_SCORED = ("val", "test")
_FILE_SPLITS = {"full": _SCORED, "hoa": _SCORED, "esa": ("esa", "esa-test")}


def _check_tasks(tasks: Sequence[str]) -> None:
    twice = sorted({t for t in tasks if list(tasks).count(t) > 1})
    if not tasks or twice or not all(isinstance(t, str) and t for t in tasks):
        raise ConfigError(
            f"tasks {list(tasks)}: expected one or more distinct non-empty task names"
            + (f" ({twice} repeated)" if twice else "")
        )


def candidate_list(
    tasks: Sequence[str], mode: str = "full", *, reduced_width: float = 0.5
) -> list[CandidateSpec]:
    """The networks ``mode`` trains for ``tasks`` (see the module docstring).

    Example:
        >>> [c.name for c in candidate_list(["a", "b"], "hoa")]
        ['a', 'b', 'a@0.5', 'b@0.5', 'a+b']
    """
    _check_tasks(tasks)
    if mode not in MODES:
        raise ConfigError(f"mode {mode!r} is unknown; expected one of {', '.join(MODES)}")
    if not 0 < reduced_width < 1:
        raise ConfigError(f"reduced width must be in (0, 1) (got {reduced_width!r})")
    largest = 2 if mode == "hoa" else len(tasks)
    specs = [CandidateSpec((t,), 1.0) for t in tasks]
    specs += [CandidateSpec((t,), float(reduced_width)) for t in tasks]
    for size in range(2, largest + 1):
        specs += [CandidateSpec(tuple(c), 1.0) for c in itertools.combinations(tasks, size)]
    return specs


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` -> ``(2, 4)``: the second of four shards (1-based)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None or not 1 <= int(match[1]) <= int(match[2]):
        raise ConfigError(
            f"--shard {text!r}: expected I/N with 1 <= I <= N, e.g. 2/4 for the second of "
            "four shards"
        )
    return int(match[1]), int(match[2])


def take_shard(specs: Sequence[CandidateSpec], shard: tuple[int, int]) -> list[CandidateSpec]:
    """The candidates of shard ``(i, n)``: those whose index % n == i − 1.

    Raises:
        ConfigError: the shard holds no candidate (more shards than candidates).
    """
    i, n = shard
    mine = [s for k, s in enumerate(specs) if k % n == i - 1]
    if not mine:
        raise ConfigError(
            f"--shard {i}/{n}: no candidate falls in this shard; there are {len(specs)} "
            f"candidates, so use at most {len(specs)} shards"
        )
    return mine


def _names(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class GroupTrainPlan:
    """What :func:`train_candidates` trains and writes (the ``pymtl group train`` options).

    Attributes:
        tasks: the problem's tasks (empty: the dataset's ``tasks``).
        mode: ``full``, ``hoa`` or ``esa``.
        esa_fraction: part of one epoch each esa network trains for, in (0, 1].
        reduced_width: width factor of the reduced single-task networks, in (0, 1).
        cost: ``width`` or ``macs``.
        root: folder of the run directories.
        jobs: candidates trained in parallel processes.
        shard: ``(i, n)``: train the candidates whose index % n == i − 1; None: all.
        out: the candidate file (None: ``ROOT/candidates[-MODE][-shardIofN].toml``).
    """

    tasks: tuple[str, ...] = attrs.field(default=(), converter=_names)
    mode: str = attrs.field(default="full", validator=attrs.validators.in_(MODES))
    esa_fraction: float = 0.2
    reduced_width: float = 0.5
    cost: str = attrs.field(default="width", validator=attrs.validators.in_(COSTS))
    root: Path = attrs.field(default=Path("runs/group"), converter=Path)
    jobs: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    shard: tuple[int, int] | None = None
    out: Path | None = None

    def __attrs_post_init__(self) -> None:
        if not 0 < self.esa_fraction <= 1:
            raise ConfigError(f"--esa-fraction must be in (0, 1] (got {self.esa_fraction!r})")

    @property
    def out_path(self) -> Path:
        """Where the candidate file goes."""
        if self.out is not None:
            return self.out
        mode = "" if self.mode == "full" else f"-{self.mode}"
        shard = "" if self.shard is None else f"-shard{self.shard[0]}of{self.shard[1]}"
        return self.root / f"candidates{mode}{shard}.toml"

    def run_dir(self, spec: CandidateSpec) -> Path:
        """The run directory of ``spec``."""
        if self.mode == "esa":
            return self.root / f"esa-{self.esa_fraction:g}" / spec.run_name
        return self.root / spec.run_name


def train_candidates(
    base: RunConfig, plan: GroupTrainPlan, *, registry: Registry | None = None
) -> CandidateSet:
    """Train (or resume, or skip when finished) the candidates of ``plan`` and write the
    candidate file ``plan.out_path``; returns its content.

    Example:
        >>> plan = GroupTrainPlan(tasks=("semseg", "depth"), mode="hoa")  # doctest: +SKIP
        >>> cset = train_candidates(config, plan)  # doctest: +SKIP
    """
    registry = registry or get_registry()
    check_base(base)
    assert base.dataset is not None
    tasks = plan.tasks or tuple(base.dataset.options.tasks)
    _check_tasks(tasks)
    full = attrs.evolve(base, dataset=restrict_dataset(base.dataset, tasks, "--tasks"))
    specs = candidate_list(tasks, plan.mode, reduced_width=plan.reduced_width)
    specs = specs if plan.shard is None else take_shard(specs, plan.shard)
    steps = esa_steps(full, registry, plan.esa_fraction) if plan.mode == "esa" else None
    jobs = [
        CandidateJob.make(
            s.name, plan.run_dir(s), candidate_config(full, s, esa_steps=steps), registry
        )
        for s in specs
    ]
    records = run_candidates(jobs, registry=registry, workers=plan.jobs)
    snt = _snt_macs(full, tasks, registry) if plan.cost == "macs" else None
    splits = _FILE_SPLITS[plan.mode]
    entries = [
        _entry(spec, job, record, splits, snt)
        for spec, job, record in zip(specs, jobs, records, strict=True)
    ]
    out = plan.out_path
    cset = CandidateSet.from_entries(tasks, splits, entries, source=f"candidate file {str(out)!r}")
    write_candidates(cset, out)
    return cset


def _entry(
    spec: CandidateSpec,
    job: CandidateJob,
    record: Mapping[str, Any],
    splits: Sequence[str],
    snt: float | None,
) -> dict[str, Any]:
    """The ``[[candidate]]`` table of a trained candidate; its val/test losses go under the
    file's split names ``splits``."""
    loss = {
        name: [record["losses"][split][t] for t in spec.tasks]
        for split, name in zip(_SCORED, splits, strict=True)
    }
    cost = spec.width if snt is None else record["macs"] / snt
    info = {"run": str(job.run_dir), "macs": record["macs"]}
    entry = {"name": spec.name, "tasks": list(spec.tasks), "width": spec.width, "cost": cost}
    return entry | {"loss": loss, "info": info}


def _snt_macs(full: RunConfig, tasks: Sequence[str], registry: Registry) -> float:
    """1 SNT in multiply-adds: the mean of the full-width single-task networks'."""
    macs = [network_macs(candidate_config(full, CandidateSpec((t,))), registry) for t in tasks]
    return sum(macs) / len(macs)
