"""The architecture contract [pymtl] (SPEC-methods §1, STYLE rule 7).

An architecture is an ``nn.Module`` with one forward contract, ``forward(x) -> {task: output}``
(outputs in the layouts :mod:`pymtl.tasks` documents, at the input's resolution for dense
tasks), plus declared ways for the training step to reach

* its **shared parameters** θ_s (what gradient balancers take per-task gradients of),
* each task's **specific parameters** θ_t (scaled by the balancer's ``s_t``), and
* its **shared representation** Z (what representation-level balancers such as MGDA-UB and
  feature distillation hook into): :meth:`encode` returns Z and :meth:`decode` maps Z to the
  task outputs, so ``forward(x) == decode(encode(x))``.

**Deep supervision.** In training mode, ``forward`` may also return intermediate predictions
of a task (PAD-Net's and MTI-Net's initial predictions, JTRL's coarse states) under keys
``"{task}/{tag}"`` (:func:`aux_key`), in the task's output layout at the input's resolution.
The training step adds their losses to that task's loss with the same weight (SPEC-methods
§1.8: "the same weights at both levels"), so balancers still see one loss per task; evaluation
reads only the plain task keys, and in eval mode architectures return those alone.

**Features for distillation.** :meth:`encode_layers` returns Z together with the backbone's
coarsest feature map (``"mid"``) from the same pass, and :meth:`signals` packs features and
outputs as :class:`~pymtl.distillation.Signals`, the inputs of distillation losses (one
multi-task network: every task sees the same features; ``stl``: each task its own network's).

Architectures whose tasks never share one activation (one network per task, cross-stitch)
set ``has_shared_representation = False`` and override :meth:`forward` only. Every parameter
is either shared or belongs to exactly one task; :func:`pymtl.testing.check_architecture`
checks the partition.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

from torch import Tensor, nn

from pymtl.balancers.base import check_tasks
from pymtl.component import Component
from pymtl.distillation.base import Signals
from pymtl.errors import ConfigError
from pymtl.tasks.base import Task

__all__ = ["AUX_SEPARATOR", "Architecture", "aux_key", "split_outputs"]

AUX_SEPARATOR = "/"


def aux_key(task: str, tag: str) -> str:
    """The output key of a deep-supervision prediction ``tag`` of ``task``."""
    return f"{task}{AUX_SEPARATOR}{tag}"


def split_outputs(outputs: Mapping[str, Tensor], tasks: Sequence[str]) -> dict[str, list[Tensor]]:
    """Every task's outputs, the final one first, then its deep-supervision predictions.

    Raises:
        ValueError: a task has no output, or a key names no task.
    """
    grouped: dict[str, list[Tensor]] = {t: [] for t in tasks}
    for t in tasks:
        if t not in outputs:
            raise ValueError(
                f"the model returned no output for task {t!r} (got keys {sorted(outputs)})"
            )
        grouped[t].append(outputs[t])
    for key, value in outputs.items():
        task, sep, _ = key.partition(AUX_SEPARATOR)
        if key in grouped:
            continue
        if not sep or task not in grouped:
            raise ValueError(
                f"the model returned output {key!r}, which is neither a task ({list(tasks)}) nor "
                f"a deep-supervision key 'TASK{AUX_SEPARATOR}TAG' of one"
            )
        grouped[task].append(value)
    return grouped


class Architecture(Component, nn.Module):
    """Base class of multi-task networks.

    Subclasses set ``name`` and ``Config``, take ``tasks`` (the dataset's
    :class:`~pymtl.tasks.Task` declarations) and ``in_channels`` first in ``__init__``, followed
    by their ``Config`` fields as keyword arguments, and implement :meth:`shared_parameters`,
    :meth:`task_parameters` and either :meth:`encode` + :meth:`decode` or :meth:`forward`.
    """

    kind: ClassVar[str] = "architecture"
    has_shared_representation: ClassVar[bool] = True

    def __init__(self, tasks: Sequence[Task], in_channels: int = 3) -> None:
        super().__init__()
        self.task_specs = tuple(tasks)
        self.tasks = check_tasks([t.name for t in tasks], where=f"architecture {self.name!r}")
        self.in_channels = in_channels

    @classmethod
    def from_config(
        cls, config: Any, *, tasks: Sequence[Task], in_channels: int = 3
    ) -> Architecture:
        """Build from a ``Config`` instance for the dataset's tasks."""
        return cls(tasks, in_channels, **cls.config_fields(config))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Predictions for every task, keyed by task name: ``decode(encode(x))``."""
        return self.decode(self.encode(x), x.shape[-2:])

    def encode(self, x: Tensor) -> Tensor:
        """The shared representation Z of a batch ``x``."""
        raise NotImplementedError(
            f"architecture {self.name!r} has no single shared representation "
            "(has_shared_representation is False)"
        )

    def decode(self, z: Tensor, size: Sequence[int]) -> dict[str, Tensor]:
        """Task outputs from the shared representation ``z``; dense outputs at ``size`` (H, W)."""
        raise NotImplementedError(
            f"architecture {self.name!r} has no single shared representation "
            "(has_shared_representation is False)"
        )

    def encode_layers(self, x: Tensor, layers: Sequence[str]) -> tuple[Tensor, dict[str, Tensor]]:
        """Z = :meth:`encode` ``(x)`` and the features at ``layers`` other than ``"last"`` (Z
        itself), from one pass. The default exposes ``"last"`` only; architectures built on a
        walkable backbone add ``"mid"``, its coarsest stage output."""
        other = sorted(set(layers) - {"last"})
        if other:
            raise ConfigError(
                f"architecture {self.name!r} exposes only the shared representation ('last'); "
                f"got layers {list(layers)}: use layers = 'last' or an architecture that also "
                "exposes 'mid' (hps, on a backbone with stages)"
            )
        return self.encode(x), {}

    def signals(self, x: Tensor, layers: Sequence[str] = ()) -> Signals:
        """Features at ``layers`` (every task: the same shared tensors) and outputs of one
        pass, for distillation; with no layers, just the outputs of :meth:`forward`."""
        if not layers:
            return Signals({}, self(x))
        if not self.has_shared_representation:
            raise ConfigError(
                f"architecture {self.name!r} has no shared representation, so it has no "
                f"features at layers {list(layers)} to distil; use an architecture with a shared "
                "encoder (hps), or a loss that reads outputs only (bam, hinton_kd, kdam)"
            )
        z, extra = self.encode_layers(x, layers)
        outputs = self.decode(z, x.shape[-2:])
        features = [z if layer == "last" else extra[layer] for layer in layers]
        return Signals(dict.fromkeys(self.tasks, features), outputs)

    def regularizer(self) -> Tensor | None:
        """A penalty on the architecture's own parameters that the training step adds to the
        objective, unweighted by the balancer (sluice's subspace orthogonality, SPEC-methods
        §1.4); ``None`` (the default) when there is none."""
        return None

    def lr_groups(self) -> list[tuple[float, list[nn.Parameter]]]:
        """Parameters that train at a multiple of the run's learning rate, as
        ``[(multiplier, params), …]`` (cross-stitch units and NDDR layers: 100×, SPEC-methods
        §1.3, §1.5). Every other parameter uses the run's rate. Default: none."""
        return []

    @abstractmethod
    def shared_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters used by more than one task (θ_s)."""

    @abstractmethod
    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        """Parameters used by ``task`` alone (θ_t)."""
