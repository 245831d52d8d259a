"""PAD-Net (``padnet``): predict every task once, distil across tasks, predict again.

Reference: Xu et al., "PAD-Net: Multi-Tasks Guided Prediction-and-Distillation Network for
Simultaneous Depth Estimation and Scene Parsing", CVPR 2018 [P]; SPEC-methods §1.8 [S]
[C:MTL-PyTorch]. The blocks live in :mod:`pymtl.architectures._distill`.

* Initial heads, per dense task t: two Bottleneck residual blocks (C_in -> ``channels``, 1×1
  projection shortcut when the widths differ) give F_t^i; a 1×1 conv gives ŷ_t^0 (bias from
  ``head_bias()``), upsampled to the input (deep supervision, key ``"t/initial"`` in training).
* Multi-modal distillation (survey Eq. 2): ``F_k^o = F_k^i + Σ_{l≠k} SA_{k,l}(F_l^i)`` with
  ``SA(x) = Conv3×3(x) ⊙ σ(Conv3×3'(x))``, no biases (MTL-PyTorch's separate message and mask
  convs). ``attention_source="receiver"`` gates with F_k^i instead (original paper [P]).
* Final heads: two Bottlenecks, a 1×1 conv to K_k, bilinear upsampling to the input.
* Loss: ``Σ_t w_t L_t(up(ŷ_t^0)) + Σ_k w_k L_k(ŷ_k)`` — the training step adds the
  ``"t/initial"`` loss to task t's loss, so both levels get the same weight.
* Image-level tasks [pymtl]: an ImageHead on the backbone output, outside the exchange.

Partition: the backbone and the initial heads' feature blocks (read by the other tasks'
messages) are shared; task k owns its initial 1×1 conv, SA_{k,·} and its final head.
Z = the backbone features (``encode``); the PAD-Net decoder is ``decode``.

Backbones: any. Single-scale (default): the backbone output (the survey uses a dilated
ResNet-50 at stride 8). ``multi_scale=True``: every ``multi_scale()`` map upsampled to the
finest one and concatenated (the survey's HRNet-18 use, 15·w channels).

Cost: T·(T−1) message blocks of two 3×3 convs at ``channels`` width on the head resolution,
plus 4 bottlenecks per task; SPEC uses ``channels=256`` (about 256 GFLOPs on PASCAL with a
ResNet-50), pymtl's default 64 keeps CPU runs small [pymtl].
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import attrs
import torch
from torch import Tensor, nn

from pymtl.architectures._distill import (
    ATTENTION_SOURCES,
    Distillation,
    FinalHead,
    InitialHeads,
    checked_options,
    deep_supervision,
    dense_tasks,
    upsample,
)
from pymtl.architectures.base import Architecture
from pymtl.architectures.heads import ImageHead
from pymtl.architectures.hps import _default_backbone
from pymtl.backbones.base import build_backbone
from pymtl.config import BackboneSection
from pymtl.hookspecs import hookimpl
from pymtl.tasks.base import Task

__all__ = ["PADNet", "PADNetConfig"]


def _width(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 4 or value % 4:
        raise ValueError(
            f"{attribute.name!r} must be a multiple of 4, at least 4 (got {value!r}); the "
            "bottleneck blocks have an inner width of channels / 4"
        )


@attrs.frozen(kw_only=True)
class PADNetConfig:
    """Options of ``padnet``.

    Attributes:
        backbone: the shared backbone (any).
        channels: width of the task features F_t^i (SPEC and the survey: 256; default 64).
        attention_source: ``sender`` (MTL-PyTorch, default) or ``receiver`` (original paper).
        multi_scale: read every ``multi_scale()`` map, upsampled to the finest and concatenated.
        norm: ``batch`` or ``group`` normalisation in the heads.
    """

    backbone: BackboneSection = attrs.field(factory=_default_backbone)
    channels: int = attrs.field(default=64, validator=_width)
    attention_source: str = attrs.field(
        default="sender", validator=attrs.validators.in_(ATTENTION_SOURCES)
    )
    multi_scale: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    norm: str = attrs.field(default="batch", validator=attrs.validators.in_(("batch", "group")))


class PADNet(Architecture):
    """PAD-Net: initial heads with deep supervision, attention-gated distillation, final heads
    [S][C:MTL-PyTorch].

    Reference: Xu et al., CVPR 2018; SPEC-methods §1.8 (see the module docstring).

    Args:
        tasks: the dataset's task declarations.
        in_channels: input image channels.
        backbone, channels, attention_source, multi_scale, norm: see :class:`PADNetConfig`.

    Example:
        >>> from pymtl.tasks import DepthTask, SegmentationTask
        >>> net = PADNet([SegmentationTask(name="seg", num_classes=3), DepthTask(name="depth")])
        >>> sorted(net.train()(torch.zeros(2, 3, 32, 32)))
        ['depth', 'depth/initial', 'seg', 'seg/initial']
    """

    name = "padnet"
    Config = PADNetConfig

    def __init__(
        self,
        tasks: Sequence[Task],
        in_channels: int = 3,
        *,
        backbone: BackboneSection | None = None,
        channels: int = 64,
        attention_source: str = "sender",
        multi_scale: bool = False,
        norm: str = "batch",
    ) -> None:
        super().__init__(tasks, in_channels)
        cfg = checked_options(
            PADNetConfig,
            self.name,
            backbone=backbone or _default_backbone(),
            channels=channels,
            attention_source=attention_source,
            multi_scale=multi_scale,
            norm=norm,
        )
        dense = dense_tasks(self.name, self.task_specs)
        self.backbone = build_backbone(cfg.backbone, in_channels=in_channels)
        self.use_multi_scale = multi_scale
        c = sum(self.backbone.scale_channels) if multi_scale else self.backbone.out_channels
        self.initial = InitialHeads(c, dense, channels, norm=norm)
        names = [t.name for t in dense]
        self.distill = Distillation(names, channels, attention_source=attention_source)
        self.final = nn.ModuleDict({t.name: FinalHead(channels, t, norm=norm) for t in dense})
        self.image_heads = nn.ModuleDict(
            {t.name: ImageHead(c, t) for t in self.task_specs if not t.dense}
        )

    def encode(self, x: Tensor) -> Tensor:
        """Backbone features; with ``multi_scale`` every scale upsampled to the finest and
        concatenated."""
        if not self.use_multi_scale:
            z: Tensor = self.backbone(x)
            return z
        xs = self.backbone.multi_scale(x)
        size = xs[0].shape[-2:]
        return torch.cat([upsample(y, size) for y in xs], dim=1)

    def decode(self, z: Tensor, size: Sequence[int]) -> dict[str, Tensor]:
        """Final outputs, plus ``"t/initial"`` deep-supervision outputs in training mode."""
        features = self.initial(z)
        distilled = self.distill(features)
        out = {t: head(distilled[t], size) for t, head in self.final.items()}
        out |= {t: head(z, size) for t, head in self.image_heads.items()}
        if self.training:
            out |= deep_supervision(self.initial.predict(features, size), "initial")
        return out

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.backbone.parameters()
        yield from self.initial.blocks.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        if task in self.image_heads:
            yield from self.image_heads[task].parameters()
            return
        yield from self.final[task].parameters()
        yield from self.distill.sa[task].parameters()
        yield from self.initial.predictors[task].parameters()


@hookimpl
def pymtl_register_architectures() -> list[type[Architecture]]:
    return [PADNet]
