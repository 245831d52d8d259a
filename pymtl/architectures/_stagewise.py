"""What cross-stitch, sluice and NDDR share: T copies of one backbone, walked in lockstep and
mixed between stages [pymtl].

SPEC-methods §1.3–§1.5 [S][C:MTL-PyTorch]: every task has its own copy of the backbone. The
copies run stage by stage (:func:`pymtl.backbones.base.lockstep`); after each selected stage a
*unit* (``self.units[stage]``, built by the subclass) maps the T stage outputs
[B, C_s, H_s, W_s] to T new ones of the same shapes, which flow on through the copies. Task
t's head (:func:`~pymtl.architectures.heads.make_head`, as in ``hps``) reads copy t's output.

Stages: option ``stages`` names them (:func:`~pymtl.backbones.base.probe_stages` lists a
backbone's); empty selects every stage the backbone walks (ResNet: stem, layer1..layer4;
convnet: down0.., then up{k} coarse to fine).

Partition [pymtl]: after a mix, every copy feeds every task. So the units, and each copy's
parameters that the *last* mixed stage's output depends on (found by autograd on one probe
pass, not by guessing from names), are shared; what copy t runs after the last mixing point
(a decoder's later stages) and head t belong to task t alone.

Cost: T backbones, so parameters and FLOPs are ≈ those of T single-task networks (SPEC §1.3).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, cast

import attrs
import torch
from torch import Tensor, nn

from pymtl.architectures.base import Architecture
from pymtl.architectures.heads import make_head
from pymtl.architectures.hps import HardSharingConfig, _default_backbone
from pymtl.backbones.base import (
    Backbone,
    Stage,
    StageShape,
    build_backbone,
    lockstep,
    probe_stages,
)
from pymtl.config import BackboneSection
from pymtl.errors import ConfigError
from pymtl.tasks.base import Task

__all__ = [
    "StagewiseConfig",
    "StagewiseNet",
    "probe_input",
    "select_stages",
    "upstream_parameters",
]


def _names(instance: Any, attribute: attrs.Attribute[Any], value: tuple[Any, ...]) -> None:
    if any(not isinstance(s, str) or not s for s in value):
        raise ValueError(f"'stages' must be non-empty stage names (got {value!r})")
    repeated = sorted({s for s in value if value.count(s) > 1})
    if repeated:
        raise ValueError(f"'stages' names {repeated} more than once (got {value!r})")


@attrs.frozen(kw_only=True)
class StagewiseConfig(HardSharingConfig):
    """Options of the stage-wise architectures, on top of those of ``hps``.

    Attributes:
        stages: backbone stages after which the units mix the T copies (empty: every stage
            the backbone walks).
        lr_multiplier: learning-rate multiple of the units' parameters (:meth:`lr_groups`;
            100 in SPEC-methods §1.3, §1.5).
    """

    stages: tuple[str, ...] = attrs.field(default=(), converter=tuple, validator=_names)
    lr_multiplier: float = attrs.field(default=100.0, validator=attrs.validators.gt(0))


def probe_input(backbone: Backbone) -> Tensor:
    """The zero batch [1, C_in, 64, 64] (LeNet-like: ``input_size``) probes run on."""
    side = getattr(backbone, "input_size", 64)
    param = next(backbone.parameters(), None)
    device = None if param is None else param.device
    return torch.zeros(1, backbone.in_channels, side, side, device=device)


def upstream_parameters(backbone: Backbone, stage: str) -> set[str]:
    """Names of ``backbone``'s parameters that the output of ``stage`` depends on.

    Read off the autograd graph of one eval-mode probe pass (graph edges, not gradient values,
    so a zero input is enough); frozen parameters are included.
    """
    params = dict(backbone.named_parameters())
    flags = {n: p.requires_grad for n, p in params.items()}
    was_training = backbone.training
    backbone.eval()
    walk = backbone.walk(probe_input(backbone))
    try:
        for p in params.values():
            p.requires_grad_(True)
        with torch.enable_grad():
            for s in walk:
                if s.name == stage:
                    return _reached(params, s.after)
    finally:
        walk.close()
        for n, p in params.items():
            p.requires_grad_(flags[n])
        backbone.train(was_training)
    raise ConfigError(f"backbone {backbone.name!r} walked no stage {stage!r}")


def _reached(params: dict[str, nn.Parameter], out: Tensor) -> set[str]:
    if not out.requires_grad:
        return set()
    grads = torch.autograd.grad(out.sum(), list(params.values()), allow_unused=True)
    return {n for n, g in zip(params, grads, strict=True) if g is not None}


def _require_stages(arch: str, backbone: Backbone) -> None:
    """The backbone's own ConfigError (from ``walk``), prefixed with the architecture."""
    if backbone.has_stages:
        return
    try:
        backbone.walk(probe_input(backbone))
    except ConfigError as exc:
        raise ConfigError(f"architecture {arch!r}: {exc}") from exc
    raise ConfigError(f"architecture {arch!r}: backbone {backbone.name!r} has no stages")


def select_stages(
    arch: str, backbone: str, shapes: Sequence[StageShape], wanted: Sequence[str]
) -> list[StageShape]:
    """The ``shapes`` (a backbone's, from :func:`probe_stages`) of the stages named in
    ``wanted`` (all when empty), in walk order."""
    names = [s.name for s in shapes]
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise ConfigError(
            f"architecture {arch!r}: unknown stage(s) {unknown} in option 'stages' for backbone "
            f"{backbone!r}; expected names among its stages {names} (empty: all of them)"
        )
    return [s for s in shapes if not wanted or s.name in wanted]


class StagewiseNet(Architecture):
    """Base of architectures made of T backbone copies mixed after selected stages [pymtl].

    Subclasses set ``name``/``Config``, call ``super().__init__`` and then fill
    ``self.units`` (stage name -> module mapping a list of T tensors to T tensors of the same
    shapes), one per entry of ``self.stage_shapes``.
    """

    has_shared_representation = False

    def __init__(
        self,
        tasks: Sequence[Task],
        in_channels: int = 3,
        *,
        backbone: BackboneSection | None = None,
        stages: Sequence[str] = (),
        lr_multiplier: float = 100.0,
        head_channels: int = 16,
        head_rates: Sequence[int] = (2, 4),
        head_norm: str = "batch",
    ) -> None:
        super().__init__(tasks, in_channels)
        section = backbone or _default_backbone()
        first = build_backbone(section, in_channels=in_channels)
        _require_stages(self.name, first)
        shapes = probe_stages(first)
        self.walked: list[str] = [s.name for s in shapes]
        self.stage_shapes = select_stages(self.name, first.name, shapes, tuple(stages))
        self._upstream = frozenset(upstream_parameters(first, self.stage_shapes[-1].name))
        copies = [first] + [
            build_backbone(section, in_channels=in_channels) for _ in self.task_specs[1:]
        ]
        self.backbones = nn.ModuleDict(dict(zip(self.tasks, copies, strict=True)))
        self.lr_multiplier = lr_multiplier
        c, rates = first.out_channels, tuple(head_rates)
        self.heads = nn.ModuleDict(
            {
                t.name: make_head(c, t, channels=head_channels, rates=rates, norm=head_norm)
                for t in self.task_specs
            }
        )
        self.units = nn.ModuleDict()

    def run(self, x: Tensor) -> tuple[list[Tensor], list[list[Tensor]]]:
        """Every copy's output (task order), and the T mixed outputs of each selected stage
        (walk order)."""
        mixed: list[list[Tensor]] = []

        def mix(stages: Sequence[Stage]) -> list[Tensor] | None:
            if stages[0].name not in self.units:
                return None
            out: list[Tensor] = self.units[stages[0].name]([s.after for s in stages])
            mixed.append(out)
            return out

        outs = lockstep([self.task_backbone(t).walk(x) for t in self.tasks], mix)
        return outs, mixed

    def task_backbone(self, task: str) -> Backbone:
        """Task ``task``'s copy of the backbone."""
        return cast(Backbone, self.backbones[task])

    def head_inputs(self, outs: list[Tensor], mixed: list[list[Tensor]]) -> list[Tensor]:
        """What each task's head reads (default: its copy's output)."""
        return outs

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        feats = self.head_inputs(*self.run(x))
        size = x.shape[-2:]
        return {t: self.heads[t](f, size) for t, f in zip(self.tasks, feats, strict=True)}

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        for t in self.tasks:
            for n, p in self.backbones[t].named_parameters():
                if n in self._upstream:
                    yield p
        yield from self.units.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        for n, p in self.backbones[task].named_parameters():
            if n not in self._upstream:
                yield p
        yield from self.heads[task].parameters()

    def lr_groups(self) -> list[tuple[float, list[nn.Parameter]]]:
        """The units' parameters at ``lr_multiplier`` × the run's rate."""
        return [(self.lr_multiplier, list(self.units.parameters()))]
