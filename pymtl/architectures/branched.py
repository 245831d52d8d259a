"""Branched multi-task network (``branched``): task groups, one encoder per group [S].

Reference: SPEC-methods §1.7 [S] (branched MTL as in the survey of Vandenhende et al.; groups
from Standley et al., ICML 2020, SPEC-methods §4). The network is built from a **grouping**
(:mod:`pymtl.architectures.grouping`): each group g ⊆ tasks gets its own copy of the backbone
— optionally width-scaled, ``width = 0.5`` being Standley's "half-size" network — shared by
the tasks of g, plus one head per (group, task):

    ŷ_t^g = head_{g,t}(encoder_g(x))   for every group g and task t ∈ g
    ŷ_t   = ŷ_t^{c(t)}                  c(t) = choose[t], default the first group with t [pymtl]

Standley's min rule picks c(t) as the group with the lowest validation loss for t
(``pymtl group select`` writes it in the file's ``[choose]`` table). In training mode, every
other group's prediction of t is returned as the deep-supervision key ``t/group{g}``
(:func:`~pymtl.architectures.base.aux_key`), so every head trains on t's loss; in eval mode,
only the chosen heads run.

Parameters: an encoder serving one task belongs to that task, an encoder serving several is
shared; heads belong to their task. With exactly one group (the default: one group of every
task), the network *is* ``hps`` and has its shared representation Z = the encoder's output;
with several there is no single Z. Automatic branching (FAFS, BMN, BMTAS, LTB) is out of scope.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, cast

import attrs
from torch import Tensor, nn

from pymtl.architectures.base import Architecture, aux_key
from pymtl.architectures.grouping import Group, Grouping, read_grouping
from pymtl.architectures.heads import make_head
from pymtl.architectures.hps import HardSharingConfig, _default_backbone
from pymtl.backbones.base import build_backbone
from pymtl.config import BackboneSection
from pymtl.errors import ConfigError
from pymtl.hookspecs import hookimpl
from pymtl.tasks.base import Task

__all__ = ["Branched", "BranchedConfig"]


def _to_groups(value: Any) -> Any:
    if isinstance(value, (list, tuple)) and all(isinstance(g, (list, tuple)) for g in value):
        return tuple(tuple(g) for g in value)
    return value


def _one_source(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value and instance.grouping:
        raise ValueError(
            f"'grouping' ({instance.grouping!r}) and 'groups' ({[list(g) for g in value]}) are "
            "alternatives; expected only one of them"
        )


@attrs.frozen(kw_only=True)
class BranchedConfig(HardSharingConfig):
    """Options of ``branched``: those of ``hps`` (backbone, heads) and

    Attributes:
        grouping: path of a grouping file (``pymtl train --grouping FILE``); "" with no
            ``groups``: one group of every task, i.e. ``hps``.
        groups: inline alternative, each group a list of task names (full width), e.g.
            ``[["semseg", "depth"], ["normals"]]``.
    """

    grouping: str = ""
    groups: tuple[tuple[str, ...], ...] = attrs.field(
        default=(), converter=_to_groups, validator=_one_source
    )


class Branched(Architecture):
    """A tree of encoders: one (optionally width-scaled) backbone per task group [S].

    Reference: SPEC-methods §1.7, §4 (module docstring for the equations). Works with every
    backbone; a group of width ≠ 1 needs a backbone with a ``width`` option (all built-ins).
    Cost: Σ_g width_g encoders (Standley's SNT) plus one head per (group, task).

    Args:
        tasks: the dataset's task declarations.
        in_channels: input image channels.
        backbone, head_channels, head_rates, head_norm: as in ``hps``.
        grouping: a grouping file's path, or a :class:`Grouping`.
        groups: inline groups of task names (see :class:`BranchedConfig`).

    Example:
        >>> from pymtl.tasks import DepthTask, NormalsTask
        >>> tasks = [DepthTask(name="depth"), NormalsTask(name="normals")]
        >>> net = Branched(tasks, groups=(("depth",), ("depth", "normals")))
        >>> sorted(net.train()(torch.zeros(2, 3, 32, 32)))
        ['depth', 'depth/group1', 'normals']
    """

    name = "branched"
    Config = BranchedConfig
    has_shared_representation = False  # True on instances with exactly one group

    def __init__(
        self,
        tasks: Sequence[Task],
        in_channels: int = 3,
        *,
        backbone: BackboneSection | None = None,
        head_channels: int = 16,
        head_rates: Sequence[int] = (2, 4),
        head_norm: str = "batch",
        grouping: str | Grouping = "",
        groups: Sequence[Sequence[str]] = (),
    ) -> None:
        super().__init__(tasks, in_channels)
        self.grouping = _resolve(grouping, groups, self.tasks)
        section = backbone or _default_backbone()
        specs = {t.name: t for t in self.task_specs}
        encoders, heads = [], []
        for k, group in enumerate(self.grouping.groups):
            encoder = build_backbone(_scaled(section, group.width, k), in_channels=in_channels)
            encoders.append(encoder)
            head = {
                t: make_head(
                    encoder.out_channels,
                    specs[t],
                    channels=head_channels,
                    rates=tuple(head_rates),
                    norm=head_norm,
                )
                for t in group.tasks
            }
            heads.append(nn.ModuleDict(head))
        self.encoders = nn.ModuleList(encoders)
        self.heads = nn.ModuleList(heads)
        self.chosen = {t: self.grouping.chosen(t) for t in self.tasks}
        # one group: encode/decode like hps (an instance attribute over the class default)
        self.__dict__["has_shared_representation"] = len(encoders) == 1

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        size = x.shape[-2:]
        out: dict[str, Tensor] = {}
        aux: dict[str, Tensor] = {}
        for k, group in enumerate(self.grouping.groups):
            wanted = [t for t in group.tasks if self.training or self.chosen[t] == k]
            if not wanted:
                continue
            z = self.encoders[k](x)
            for t in wanted:
                y = self._head(k, t)(z, size)
                if self.chosen[t] == k:
                    out[t] = y
                else:
                    aux[aux_key(t, f"group{k}")] = y
        return {**{t: out[t] for t in self.tasks}, **aux}

    def _head(self, k: int, task: str) -> nn.Module:
        """Group ``k``'s head of ``task``."""
        return cast(nn.ModuleDict, self.heads[k])[task]

    def encode(self, x: Tensor) -> Tensor:
        """The single group's encoder output (only with exactly one group)."""
        if not self.has_shared_representation:
            return super().encode(x)
        z: Tensor = self.encoders[0](x)
        return z

    def decode(self, z: Tensor, size: Sequence[int]) -> dict[str, Tensor]:
        """Every task's output from the single group's ``z`` (only with exactly one group)."""
        if not self.has_shared_representation:
            return super().decode(z, size)
        return {t: self._head(0, t)(z, size) for t in self.tasks}

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        for group, encoder in zip(self.grouping.groups, self.encoders, strict=True):
            if len(group.tasks) > 1:
                yield from encoder.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        """Heads of ``task`` (the chosen group's first) and encoders serving ``task`` alone."""
        first = self.chosen[task]
        for k in (first, *(k for k in range(len(self.encoders)) if k != first)):
            group = self.grouping.groups[k]
            if task not in group.tasks:
                continue
            yield from self._head(k, task).parameters()
            if group.tasks == (task,):
                yield from self.encoders[k].parameters()


def _resolve(
    grouping: str | Grouping, groups: Sequence[Sequence[str]], tasks: Sequence[str]
) -> Grouping:
    """The grouping from a file, a :class:`Grouping`, inline ``groups`` or the default (one
    group of every task), checked against the dataset's tasks."""
    where = "architecture 'branched'"
    if grouping and groups:
        raise ConfigError(
            f"{where}: 'grouping' and 'groups' are alternatives (got both); expected one of them"
        )
    if isinstance(grouping, Grouping):
        result = grouping
    elif grouping:
        result = read_grouping(grouping)
        where = f"grouping file {grouping!r}"
    elif groups:
        result = Grouping.from_document(
            {"group": [{"tasks": list(g)} for g in groups]}, source=f"{where} option 'groups'"
        )
    else:
        result = Grouping(groups=(Group(tasks=tuple(tasks)),))
    result.check_tasks(tasks, where=where)
    return result


def _scaled(section: BackboneSection, width: float, k: int) -> BackboneSection:
    """``section`` with its ``width`` option multiplied by ``width`` (rounded)."""
    if width == 1:
        return section
    from pymtl.plugins import get_registry

    options = section.options
    if options is None:
        options = get_registry().get("backbone", section.name).Config()
    fields = [f.name for f in attrs.fields(type(options))]
    where = f"architecture 'branched': group {k} has width {width}"
    if "width" not in fields:
        raise ConfigError(
            f"{where}, but backbone {section.name!r} has no 'width' option to scale (its options: "
            f"{', '.join(fields)}); expected width = 1.0 or a backbone with a 'width' option"
        )
    scaled = round(options.width * width)
    if scaled < 1:
        raise ConfigError(
            f"{where}: backbone width {options.width} × {width} rounds to {scaled}; expected a "
            "width factor that leaves at least 1 channel"
        )
    return attrs.evolve(section, options=attrs.evolve(options, width=scaled))


@hookimpl
def pymtl_register_architectures() -> list[type[Architecture]]:
    return [Branched]
