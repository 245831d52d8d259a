"""Sluice networks (``sluice``): cross-stitch over channel subspaces, plus layer mixing.

Reference: Ruder et al., "Latent Multi-task Architecture Learning", AAAI 2019; SPEC-methods
§1.4 [C:sebastianruder/sluice-networks]. The reference is an LSTM tagger; this is the dense-
vision adaptation [R]: T copies of a CNN backbone, as for cross-stitch.

* Subspaces: at each selected stage k, task t's output [B, C_k, H, W] is split into G equal
  channel groups h_{t,g} (g-th block of C_k/G channels), and a (T·G)×(T·G) matrix α^k
  (rows/columns indexed t·G + g) mixes all of them:
  ``h̃_{t,g} = Σ_{t',g'} α^k_{(t,g),(t',g')} h_{t',g'}``.
* Layer mixing: the head of task t reads ``Σ_k β_{t,k} h̃_t^k`` over R layers: the selected
  stages plus the backbone's last stage (its output, mixed when selected), so the copies'
  later stages always count [R]. Every layer is resized bilinearly to the last one's
  resolution [R] and, where its width differs, projected to the last one's channels by a
  task-own 1×1 conv without bias [R] (the β-sum needs equal shapes).
* Orthogonality [R] (:meth:`Sluice.regularizer`): ``λ_orth Σ_t Σ_k Σ_{g<g'} ‖W_{t,k,g}
  W_{t,k,g'}ᵀ‖_F²`` where W_{t,k,g} [C_k/G, fan_in] are the filters of the layer producing
  stage k's output in copy t (the last conv / linear run in the stage with C_k outputs) that
  produce subspace g. Off by default (λ_orth = 0, as in the reference; ``regularizer()`` is
  then None). It is a loss on the architecture's parameters, which the training step adds.
* Inits [C:sebastianruder/sluice-networks]: α ``imbalanced`` (default): for G = 1, 0.9 on the
  diagonal and 0.1/(T−1) elsewhere; for G ≥ 2 the reference's pattern, 0.95 where (row r,
  column c) satisfy ``c % G == 0`` if T ≤ r < T+G, else ``(c+1) % G == 0``, and 0.05
  elsewhere (T = G = 2: rows 0 1 0 1 / 0 1 0 1 / 1 0 1 0 / 1 0 1 0 scaled to 0.95/0.05);
  α ``balanced``: 1/(T·G) everywhere. β ``balanced`` (default): 1/R; β ``imbalanced``: 0.9 on
  the last layer, 0.1/(R−1) on the others.
* Optimiser: :meth:`lr_groups` gives α and β ``lr_multiplier`` × the run's rate.

Works with every backbone that has stages (convnet, resnet18/34/50, segnet, lenet) whose
selected stages' widths G divides; hrnet is refused. Heads as in ``hps``. Cost: T backbones
(≈ T single-task networks in parameters and FLOPs). Partition as in
:mod:`pymtl.architectures._stagewise`; β_t and task t's projections belong to task t.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, cast

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pymtl.architectures._stagewise import StagewiseConfig, StagewiseNet, probe_input
from pymtl.architectures.base import Architecture
from pymtl.backbones.base import Backbone
from pymtl.config import BackboneSection
from pymtl.errors import ConfigError
from pymtl.hookspecs import hookimpl
from pymtl.tasks.base import Task

__all__ = ["LayerStitch", "Sluice", "SluiceConfig", "SluiceUnit", "layer_beta", "sluice_alpha"]

INITS = ("imbalanced", "balanced")


def _positive_int(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name!r} must be an integer >= 1 (got {value!r})")


@attrs.frozen(kw_only=True)
class SluiceConfig(StagewiseConfig):
    """Options of ``sluice`` (plus ``backbone``, ``stages``, ``lr_multiplier`` and the ``head_*``
    options of :class:`~pymtl.architectures._stagewise.StagewiseConfig`).

    Attributes:
        subspaces: G, channel groups per task and stage (must divide every selected width).
        alpha_init: ``imbalanced`` (default) or ``balanced``.
        beta_init: ``balanced`` (default) or ``imbalanced``.
        lambda_orth: weight of the orthogonality regulariser (0: off).
    """

    subspaces: int = attrs.field(default=2, validator=_positive_int)
    alpha_init: str = attrs.field(default="imbalanced", validator=attrs.validators.in_(INITS))
    beta_init: str = attrs.field(default="balanced", validator=attrs.validators.in_(INITS))
    lambda_orth: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))


def sluice_alpha(tasks: int, subspaces: int, init: str) -> Tensor:
    """The initial (T·G)×(T·G) α (see the module docstring) [C:sebastianruder/sluice-networks]."""
    T, G = tasks, subspaces
    if init == "balanced":
        return torch.full((T * G, T * G), 1.0 / (T * G))
    if G == 1:
        alpha = torch.full((T, T), 0.1 / max(T - 1, 1))
        return alpha.fill_diagonal_(0.9)
    r = torch.arange(T * G)[:, None]
    c = torch.arange(T * G)[None, :]
    special = (r >= T) & (r < T + G)
    hit = torch.where(special, c % G == 0, (c + 1) % G == 0)
    return torch.where(hit, 0.95, 0.05)


def layer_beta(layers: int, init: str) -> Tensor:
    """The initial β [R]: 1/R (``balanced``) or 0.9 on the last, 0.1/(R−1) on the others."""
    if init == "balanced":
        return torch.full((layers,), 1.0 / layers)
    beta = torch.full((layers,), 0.1 / max(layers - 1, 1))
    beta[-1] = 0.9
    return beta


class SluiceUnit(nn.Module):
    """T stage outputs [B, C, H, W], each split into G channel groups, mixed by α [T·G, T·G]."""

    def __init__(self, tasks: int, subspaces: int, init: str) -> None:
        super().__init__()
        self.subspaces = subspaces
        self.alpha = nn.Parameter(sluice_alpha(tasks, subspaces, init))

    def forward(self, xs: Sequence[Tensor]) -> list[Tensor]:
        x = torch.stack(list(xs))  # [T, B, C, H, W]
        T, B, C, H, W = x.shape
        G = self.subspaces
        h = x.reshape(T, B, G, C // G, H, W).transpose(1, 2).reshape(T * G, B, C // G, H, W)
        m = torch.einsum("pq,qbchw->pbchw", self.alpha, h)
        return list(m.reshape(T, G, B, C // G, H, W).transpose(1, 2).reshape(x.shape).unbind(0))


class LayerStitch(nn.Module):
    """One task's ``Σ_k β_k h̃^k`` over R layers, each projected (1×1 conv, where its width
    differs) to the last one's channels and resized bilinearly to its resolution [R]."""

    def __init__(self, channels: Sequence[int], init: str) -> None:
        super().__init__()
        out = channels[-1]
        self.beta = nn.Parameter(layer_beta(len(channels), init))
        self.proj = nn.ModuleList(
            nn.Identity() if c == out else nn.Conv2d(c, out, 1, bias=False) for c in channels
        )

    def forward(self, layers: Sequence[Tensor]) -> Tensor:
        size = layers[-1].shape[-2:]
        total = torch.zeros_like(layers[-1])
        for k, (proj, h) in enumerate(zip(self.proj, layers, strict=True)):
            h = proj(h)
            if h.shape[-2:] != size:
                h = F.interpolate(h, size=tuple(size), mode="bilinear", align_corners=False)
            total = total + self.beta[k] * h
        return total


def stage_producers(backbone: Backbone, stages: Sequence[str]) -> dict[str, str]:
    """For each of ``stages``: the name of the last Conv2d / Linear run in that stage (one
    probe pass) whose output width is the stage's; raises ConfigError where there is none."""
    calls: list[str] = []
    hooks = [
        m.register_forward_hook(lambda *_, n=n: calls.append(n))
        for n, m in backbone.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    found: dict[str, str] = {}
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            for s in backbone.walk(probe_input(backbone)):
                width = s.after.shape[1]
                fits = [n for n in calls if _width(backbone.get_submodule(n)) == width]
                if s.name in stages and fits:
                    found[s.name] = fits[-1]
                calls.clear()
    finally:
        for h in hooks:
            h.remove()
        backbone.train(was_training)
    missing = [s for s in stages if s not in found]
    if missing:
        raise ConfigError(
            f"architecture 'sluice': lambda_orth > 0 needs the conv or linear layer producing "
            f"each subspace, but backbone {backbone.name!r} stage(s) {missing} end in none"
        )
    return found


def _width(module: nn.Module) -> int:
    if isinstance(module, nn.Conv2d):
        return module.out_channels
    return cast(nn.Linear, module).out_features


class Sluice(StagewiseNet):
    """Sluice network: T backbone copies mixed over channel subspaces, plus per-task layer
    mixing before the heads [C:sebastianruder/sluice-networks][R].

    Reference: Ruder et al., AAAI 2019; SPEC-methods §1.4. α and β train at ``lr_multiplier``
    × the run's rate (:meth:`lr_groups`); add :meth:`regularizer` to the training loss.

    Args:
        tasks: the dataset's task declarations.
        in_channels: input image channels.
        backbone, stages, subspaces, alpha_init, beta_init, lambda_orth, lr_multiplier,
            head_channels, head_rates, head_norm: see :class:`SluiceConfig`.

    Example:
        >>> from pymtl.tasks import DepthTask, NormalsTask
        >>> net = Sluice([DepthTask(name="depth"), NormalsTask(name="normals")])
        >>> net(torch.zeros(2, 3, 32, 32))["depth"].shape
        torch.Size([2, 1, 32, 32])
    """

    name = "sluice"
    Config = SluiceConfig

    def __init__(
        self,
        tasks: Sequence[Task],
        in_channels: int = 3,
        *,
        backbone: BackboneSection | None = None,
        stages: Sequence[str] = (),
        subspaces: int = 2,
        alpha_init: str = "imbalanced",
        beta_init: str = "balanced",
        lambda_orth: float = 0.0,
        lr_multiplier: float = 100.0,
        head_channels: int = 16,
        head_rates: Sequence[int] = (2, 4),
        head_norm: str = "batch",
    ) -> None:
        super().__init__(
            tasks,
            in_channels,
            backbone=backbone,
            stages=stages,
            lr_multiplier=lr_multiplier,
            head_channels=head_channels,
            head_rates=head_rates,
            head_norm=head_norm,
        )
        self._check_subspaces(subspaces)
        self.subspaces, self.lambda_orth = subspaces, lambda_orth
        for s in self.stage_shapes:
            self.units[s.name] = SluiceUnit(len(self.tasks), subspaces, alpha_init)
        first = self.task_backbone(self.tasks[0])
        self._inner = [s.name for s in self.stage_shapes if s.name != self.walked[-1]]
        widths = [s.after_channels for s in self.stage_shapes if s.name in self._inner]
        widths.append(first.out_channels)
        self.layer_stitch = nn.ModuleDict({t: LayerStitch(widths, beta_init) for t in self.tasks})
        names = [s.name for s in self.stage_shapes]
        orth = lambda_orth > 0 and subspaces > 1
        self._producers = stage_producers(first, names) if orth else {}

    def _check_subspaces(self, G: int) -> None:
        bad = [(s.name, s.after_channels) for s in self.stage_shapes if s.after_channels % G]
        if bad:
            widths = [(s.name, s.after_channels) for s in self.stage_shapes]
            raise ConfigError(
                f"architecture 'sluice': subspaces = {G} does not divide the width of stage(s) "
                f"{bad}; expected a G dividing every selected stage's width {widths} (options "
                "'subspaces', 'stages')"
            )

    def head_inputs(self, outs: list[Tensor], mixed: list[list[Tensor]]) -> list[Tensor]:
        """Task t's ``Σ_k β_{t,k} h̃_t^k``; the last layer is copy t's output."""
        inner = [m for s, m in zip(self.stage_shapes, mixed, strict=True) if s.name in self._inner]
        return [
            self.layer_stitch[t]([m[i] for m in inner] + [outs[i]])
            for i, t in enumerate(self.tasks)
        ]

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        yield from super().task_parameters(task)
        yield from self.layer_stitch[task].parameters()

    def lr_groups(self) -> list[tuple[float, list[nn.Parameter]]]:
        """α (the units) and β (the layer stitches) at ``lr_multiplier`` × the run's rate."""
        betas = [cast(LayerStitch, ls).beta for ls in self.layer_stitch.values()]
        return [(self.lr_multiplier, [*self.units.parameters(), *betas])]

    def regularizer(self) -> Tensor | None:
        """``λ_orth Σ_t Σ_k Σ_{g<g'} ‖W_{t,k,g} W_{t,k,g'}ᵀ‖_F²`` as a 0-d tensor, or None when
        it is off (λ_orth = 0, or G = 1: no pair of subspaces). The training step adds it to
        the loss [R]."""
        terms = []
        for t in self.tasks:
            for path in self._producers.values():
                layer = cast(nn.Conv2d | nn.Linear, self.task_backbone(t).get_submodule(path))
                groups = layer.weight.flatten(1).chunk(self.subspaces)  # G × [C/G, fan_in]
                for g, a in enumerate(groups):
                    terms += [(a @ b.T).square().sum() for b in groups[g + 1 :]]
        if not terms:
            return None
        return self.lambda_orth * torch.stack(terms).sum()


@hookimpl
def pymtl_register_architectures() -> list[type[Architecture]]:
    return [Sluice]
