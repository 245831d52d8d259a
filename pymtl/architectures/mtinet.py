"""MTI-Net (``mtinet``): PAD-Net-style distillation at every scale, with feature propagation.

Reference: Vandenhende et al., "MTI-Net: Multi-Scale Task Interaction Networks for Multi-Task
Learning", ECCV 2020 [P]; SPEC-methods §1.11 [S][C:MTL-PyTorch]. The blocks live in
:mod:`pymtl.architectures._distill`.

For the backbone's scales s = S−1 (coarsest) … 0 (finest), widths C_s, and every dense task t:

* Initial module: two BasicBlocks (→ C_s, 1×1 projection when the width changes) on x_s, or
  for s < S−1 on ``concat(x_s, Up(FPM_{s+1}(…)_t))`` (C_s + C_{s+1} channels), giving F_{t,s};
  a 1×1 conv gives ŷ_{t,s}, upsampled to the input (deep supervision, key ``"t/scale{s}"``).
  ``Up`` resizes bilinearly to x_s's size (×2 for the usual stride ladders) [pymtl].
* FPM at every scale but the finest: ``Φ = concat_t F_{t,s}``, ``S = f(Φ)`` with
  f = BasicBlock(TC→TC/4) → BasicBlock(TC/4) → Conv1×1(TC/4→TC), ``Mask[t,c] = softmax_t
  S[t,c]`` (stated semantics; ``mtl_pytorch_channel_grouping=True`` softmaxes T consecutive
  channels of the task-major concat, MTL-PyTorch's reshape), ``Ψ = Mask ⊙ Φ``,
  ``R = BasicBlock(TC→C_s)(Ψ)``, output ``SE_t(R) + F_{t,s}`` (SE reduction 16, ≥ 1 channel).
* Distillation at every scale: the PAD-Net module with C_s channels, on F_{·,s}.
* Aggregation per task (HRNet head): every scale's distilled features upsampled to the finest,
  concatenated (ΣC_s), 1×1 conv, BN, ReLU, 1×1 conv → K_t (bias from ``head_bias()``), then
  upsampled to the input.
* Loss: Σ over scales and tasks of ``w_t L_t(up(ŷ_{t,s}))`` plus the final ``Σ w_t L_t``.
* Image-level tasks [pymtl]: an ImageHead on the coarsest backbone scale, no exchange.

Partition: the backbone, the width projections, the initial modules' blocks (read by the FPM
and by other tasks' messages) and the FPMs (SE_t included: its output feeds F_{t,s−1}, which
every task reads) are shared; task t owns its per-scale 1×1 prediction convs, its SA_{t,·} at
every scale and its aggregation head. There is no single shared activation (the backbone gives
a list of scales), so ``has_shared_representation`` is False [pymtl].

Backbones: those with ≥ 2 scales in ``multi_scale()``: hrnet (the survey's HRNet-18, C_s =
18, 36, 72, 144), convnet (depth ≥ 2), resnet18/34/50, segnet. ``channels > 0`` caps every
scale at that width with a shared 1×1 conv-BN-ReLU [pymtl] (ResNet-50's 2048 channels are
costly on a CPU); 0 keeps the backbone's widths.

Cost: per scale, 2T BasicBlocks, T(T−1) message blocks and an FPM whose convs run at T·C_s
channels; the survey reports 16 GFLOPs (HRNet-18, NYUD) [S].
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import cast

import attrs
import torch
from torch import Tensor, nn

from pymtl.architectures._distill import (
    ATTENTION_SOURCES,
    FPM,
    Distillation,
    InitialHeads,
    checked_options,
    deep_supervision,
    dense_tasks,
    upsample,
)
from pymtl.architectures.base import Architecture
from pymtl.architectures.heads import ImageHead, _init_bias
from pymtl.architectures.hps import _default_backbone
from pymtl.backbones._common import make_norm
from pymtl.backbones.base import Backbone, build_backbone
from pymtl.config import BackboneSection
from pymtl.errors import ConfigError
from pymtl.hookspecs import hookimpl
from pymtl.tasks.base import Task

__all__ = ["MTINet", "MTINetConfig"]

MULTI_SCALE_BACKBONES = "hrnet, convnet (depth >= 2), resnet18, resnet34, resnet50, segnet"


def _cap(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{attribute.name!r} must be an integer >= 0 (got {value!r})")


@attrs.frozen(kw_only=True)
class MTINetConfig:
    """Options of ``mtinet``.

    Attributes:
        backbone: a multi-scale backbone (see the module docstring).
        channels: cap on every scale's width (a shared 1×1 conv-BN-ReLU projects the wider
            ones); 0 keeps the backbone's ``scale_channels``.
        attention_source: PAD-Net gating, ``sender`` (MTL-PyTorch, default) or ``receiver``.
        mtl_pytorch_channel_grouping: the FPM softmax over T consecutive channels (parity with
            MTL-PyTorch) instead of over tasks per channel.
        norm: ``batch`` or ``group`` normalisation in the decoder.
    """

    backbone: BackboneSection = attrs.field(factory=_default_backbone)
    channels: int = attrs.field(default=0, validator=_cap)
    attention_source: str = attrs.field(
        default="sender", validator=attrs.validators.in_(ATTENTION_SOURCES)
    )
    mtl_pytorch_channel_grouping: bool = attrs.field(
        default=False, validator=attrs.validators.instance_of(bool)
    )
    norm: str = attrs.field(default="batch", validator=attrs.validators.in_(("batch", "group")))


def _scales(arch: str, backbone: Backbone) -> tuple[int, ...]:
    widths = tuple(backbone.scale_channels)
    if len(widths) < 2:
        raise ConfigError(
            f"architecture {arch!r} needs a multi-scale backbone (multi_scale() with at least 2 "
            f"scales); got backbone {backbone.name!r} with {len(widths)} scale; expected one of "
            f"{MULTI_SCALE_BACKBONES}"
        )
    return widths


def _projection(cin: int, cout: int, norm: str) -> nn.Module:
    if cin == cout:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(cin, cout, 1, bias=False), make_norm(norm, cout), nn.ReLU(inplace=True)
    )


class AggregationHead(nn.Module):
    """HRNet head: every scale upsampled to the finest, concat, 1×1, BN, ReLU, 1×1 → K_t,
    upsampled to ``size`` [S][C:MTL-PyTorch]."""

    def __init__(self, widths: Sequence[int], task: Task, *, norm: str = "batch") -> None:
        super().__init__()
        c = sum(widths)
        self.fuse = nn.Sequential(
            nn.Conv2d(c, c, 1, bias=False), make_norm(norm, c), nn.ReLU(inplace=True)
        )
        self.classifier = nn.Conv2d(c, task.channels, 1)
        _init_bias(self.classifier, task)

    def forward(self, xs: Sequence[Tensor], size: Sequence[int]) -> Tensor:
        fine = xs[0].shape[-2:]
        z = torch.cat([upsample(y, fine) for y in xs], dim=1)
        return upsample(self.classifier(self.fuse(z)), size)


class MTINet(Architecture):
    """MTI-Net: multi-scale initial predictions, feature propagation, per-scale distillation
    and multi-scale aggregation [S][C:MTL-PyTorch].

    Reference: Vandenhende et al., ECCV 2020; SPEC-methods §1.11 (see the module docstring).

    Args:
        tasks: the dataset's task declarations.
        in_channels: input image channels.
        backbone, channels, attention_source, mtl_pytorch_channel_grouping, norm: see
            :class:`MTINetConfig`.

    Example:
        >>> from pymtl.tasks import DepthTask, SegmentationTask
        >>> net = MTINet([SegmentationTask(name="seg", num_classes=3), DepthTask(name="depth")])
        >>> sorted(k for k in net.train()(torch.zeros(2, 3, 32, 32)) if k.startswith("seg"))
        ['seg', 'seg/scale0', 'seg/scale1', 'seg/scale2']
    """

    name = "mtinet"
    Config = MTINetConfig
    has_shared_representation = False

    def __init__(
        self,
        tasks: Sequence[Task],
        in_channels: int = 3,
        *,
        backbone: BackboneSection | None = None,
        channels: int = 0,
        attention_source: str = "sender",
        mtl_pytorch_channel_grouping: bool = False,
        norm: str = "batch",
    ) -> None:
        super().__init__(tasks, in_channels)
        cfg = checked_options(
            MTINetConfig,
            self.name,
            backbone=backbone or _default_backbone(),
            channels=channels,
            attention_source=attention_source,
            mtl_pytorch_channel_grouping=mtl_pytorch_channel_grouping,
            norm=norm,
        )
        dense = dense_tasks(self.name, self.task_specs)
        self.backbone = build_backbone(cfg.backbone, in_channels=in_channels)
        raw = _scales(self.name, self.backbone)
        self.widths = tuple(min(c, channels) if channels else c for c in raw)
        self.project = nn.ModuleList(
            _projection(c, w, norm) for c, w in zip(raw, self.widths, strict=True)
        )
        self._build_decoder(dense, cfg)
        self.image_heads = nn.ModuleDict(
            {t.name: ImageHead(raw[-1], t) for t in self.task_specs if not t.dense}
        )

    def _build_decoder(self, dense: Sequence[Task], cfg: MTINetConfig) -> None:
        names = [t.name for t in dense]
        w, S = self.widths, len(self.widths)
        self.initial = nn.ModuleList(
            InitialHeads(
                w[s] + (w[s + 1] if s + 1 < S else 0), dense, w[s], block="basic", norm=cfg.norm
            )
            for s in range(S)
        )
        self.fpm = nn.ModuleDict(
            {
                str(s): FPM(
                    names, w[s], consecutive=cfg.mtl_pytorch_channel_grouping, norm=cfg.norm
                )
                for s in range(1, S)
            }
        )
        self.distill = nn.ModuleList(
            Distillation(names, w[s], attention_source=cfg.attention_source) for s in range(S)
        )
        self.heads = nn.ModuleDict({t.name: AggregationHead(w, t, norm=cfg.norm) for t in dense})

    def _task_features(
        self, xs: Sequence[Tensor], size: Sequence[int], out: dict[str, Tensor]
    ) -> list[dict[str, Tensor]]:
        """F_{t,s} for every scale (fine to coarse), from the coarsest scale to the finest;
        adds the per-scale deep-supervision predictions to ``out`` in training mode."""
        feats: list[dict[str, Tensor]] = [{} for _ in xs]
        propagated: dict[str, Tensor] | None = None
        for s in reversed(range(len(xs))):
            x = self.project[s](xs[s])
            inp: Tensor | dict[str, Tensor] = x
            if propagated is not None:
                inp = {
                    t: torch.cat([x, upsample(p, x.shape[-2:])], 1) for t, p in propagated.items()
                }
            heads = self._initial(s)
            feats[s] = heads(inp)
            if self.training:
                out |= deep_supervision(heads.predict(feats[s], size), f"scale{s}")
            if s > 0:
                propagated = self.fpm[str(s)](feats[s])
        return feats

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Final outputs, plus ``"t/scale{s}"`` deep-supervision outputs in training mode."""
        size = x.shape[-2:]
        xs = self.backbone.multi_scale(x)
        out: dict[str, Tensor] = {}
        feats = self._task_features(xs, size, out)
        distilled = [d(f) for d, f in zip(self.distill, feats, strict=True)]
        for t, head in self.heads.items():
            out[t] = head([d[t] for d in distilled], size)
        for t, head in self.image_heads.items():
            out[t] = head(xs[-1], size)
        return out

    def _initial(self, s: int) -> InitialHeads:
        return cast(InitialHeads, self.initial[s])

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.backbone.parameters()
        yield from self.project.parameters()
        for s in range(len(self.widths)):
            yield from self._initial(s).blocks.parameters()
        yield from self.fpm.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        if task in self.image_heads:
            yield from self.image_heads[task].parameters()
            return
        yield from self.heads[task].parameters()
        for s in range(len(self.widths)):
            yield from cast(Distillation, self.distill[s]).sa[task].parameters()
            yield from self._initial(s).predictors[task].parameters()


@hookimpl
def pymtl_register_architectures() -> list[type[Architecture]]:
    return [MTINet]
