"""Multi-Task Attention Network (``mtan``): per-task soft attention over one shared backbone.

Reference: Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019;
SPEC-methods §1.6 [S][C:lorenmt/mtan, C:MTL-PyTorch]. The shared backbone is walked stage by
stage (:meth:`pymtl.backbones.base.Backbone.walk`); it is never changed by the attention. At
each attended stage k, with the stage's features u_k^b (``before``: the input of its last
block) and u_k^t (``after``: its output), task t computes a soft mask and a masked feature:

* ``m_k^t = a_k^t(u_k^b)`` at the first attended stage, and
  ``m_k^t = a_k^t(concat(u_k^b, p_{k-1}^t))`` later;
* ``q_k^t = m_k^t ⊙ u_k^t`` (the mask is resized bilinearly when ``before`` and ``after``
  differ in resolution, e.g. LeNet's pooled stages [R]);
* ``p_{k-1}^t = Resize(Refine_k(q_{k-1}^t))``: the previous task feature through a refinement
  block **shared** by all tasks, mapping its channels to stage k's ``before`` channels, then
  resized to that resolution;
* ``a(x) = σ(BN(Conv1×1_{mid→out}(ReLU(BN(Conv1×1_{in→mid}(x))))))`` [S], one per (task,
  stage), out = the stage's ``after`` channels; mid = out for SegNet-like backbones and out/4
  for ResNet (option ``attention_mid``).

Task t's head (:func:`~pymtl.architectures.heads.make_head`, as in ``hps``) reads q of the last
attended stage. **ResNet version** (resnet18/34/50, stages layer1..layer4): exact as the
survey's code builds it [C:MTL-PyTorch] — the refinement is a Bottleneck C_k→C_{k+1} followed
by a max-pool where the resolution drops (2×2 when it halves). **Other backbones** [R]: the
refinement is a shared conv3×3-BN-ReLU and the resize is bilinear (align_corners=False); the
SegNet version of lorenmt/mtan is approximated this way, not reproduced.

There is no single shared representation (``has_shared_representation = False``): every task
reads its own masked features, so representation-level balancers and feature distillation have
no one Z to use. Attention and refinement use BatchNorm as the source does.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import cast

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pymtl.architectures.base import Architecture
from pymtl.architectures.heads import make_head
from pymtl.architectures.hps import HardSharingConfig, _default_backbone
from pymtl.backbones.base import Backbone, Stage, StageShape, build_backbone, probe_stages
from pymtl.backbones.resnet import Bottleneck, ResNet
from pymtl.config import BackboneSection
from pymtl.errors import ConfigError
from pymtl.hookspecs import hookimpl
from pymtl.tasks.base import Task

__all__ = ["MTAN", "Attention", "MTANConfig"]

MIDS = ("auto", "out", "quarter")


@attrs.frozen(kw_only=True)
class MTANConfig(HardSharingConfig):
    """Options of ``mtan``: those of ``hps`` (backbone, heads) and

    Attributes:
        stages: names of the backbone stages to attend, e.g. ``["layer1", "layer2", "layer3",
            "layer4"]`` for the SPEC's ResNet version; empty: every stage of the backbone.
        attention_mid: hidden width of the attention layers: ``out`` (SegNet version),
            ``quarter`` (out/4, ResNet version) or ``auto`` (quarter on ResNet, else out).
    """

    stages: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    attention_mid: str = attrs.field(default="auto", validator=attrs.validators.in_(MIDS))


class Attention(nn.Module):
    """``σ(BN(Conv1×1_{mid→out}(ReLU(BN(Conv1×1_{in→mid}(x))))))``: a soft mask in (0, 1) [S]."""

    def __init__(self, in_channels: int, mid: int, out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, out, 1, bias=False),
            nn.BatchNorm2d(out),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        mask: Tensor = self.body(x)
        return mask


class MTAN(Architecture):
    """MTAN: one shared backbone, per-task attention masks at every attended stage [S].

    Reference: Liu et al., CVPR 2019; SPEC-methods §1.6 (module docstring for the equations).
    Works with backbones that have stages (convnet, resnet18/34/50, segnet, lenet); others
    (hrnet) are refused. Cost: small over ``hps`` [S] — per task, two 1×1 convs per attended
    stage; the refinement blocks are shared (survey Table V(a): 197 vs 133 GFLOPs, 72 vs 56 M
    parameters on ResNet-50).

    Parameters: shared = the backbone and the refinement blocks; task t = its attention
    modules and its head.

    Args:
        tasks: the dataset's task declarations.
        in_channels: input image channels.
        backbone, head_channels, head_rates, head_norm: as in ``hps``.
        stages, attention_mid: see :class:`MTANConfig`.

    Example:
        >>> from pymtl.tasks import DepthTask
        >>> net = MTAN([DepthTask(name="depth")], stages=("down1", "down2", "up1", "up0"))
        >>> net(torch.zeros(2, 3, 32, 32))["depth"].shape
        torch.Size([2, 1, 32, 32])
    """

    name = "mtan"
    Config = MTANConfig
    has_shared_representation = False

    def __init__(
        self,
        tasks: Sequence[Task],
        in_channels: int = 3,
        *,
        backbone: BackboneSection | None = None,
        head_channels: int = 16,
        head_rates: Sequence[int] = (2, 4),
        head_norm: str = "batch",
        stages: Sequence[str] = (),
        attention_mid: str = "auto",
    ) -> None:
        super().__init__(tasks, in_channels)
        self.backbone = build_backbone(backbone or _default_backbone(), in_channels=in_channels)
        shapes = _attended(self.backbone, tuple(stages))
        self.stage_names = tuple(s.name for s in shapes)
        self.resnet = isinstance(self.backbone, ResNet)
        self.refine = nn.ModuleList(
            _refinement(prev, cur, resnet=self.resnet) for prev, cur in itertools.pairwise(shapes)
        )
        quarter = attention_mid == "quarter" or (attention_mid == "auto" and self.resnet)
        self.attention = nn.ModuleDict(
            {t: _attentions(shapes, quarter=quarter) for t in self.tasks}
        )
        c = shapes[-1].after_channels
        rates = tuple(head_rates)
        self.heads = nn.ModuleDict(
            {
                t.name: make_head(c, t, channels=head_channels, rates=rates, norm=head_norm)
                for t in self.task_specs
            }
        )

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        feats: dict[str, Tensor] = {}
        for k, stage in enumerate(self._stages(x)):
            for t in self.tasks:
                feats[t] = self._attend(k, t, stage, feats.get(t))[1]
        return {t: self.heads[t](feats[t], x.shape[-2:]) for t in self.tasks}

    def masks(self, x: Tensor) -> dict[str, list[Tensor]]:
        """Every task's masks m_k^t, one per attended stage (for inspection and tests)."""
        out: dict[str, list[Tensor]] = {t: [] for t in self.tasks}
        feats: dict[str, Tensor] = {}
        for k, stage in enumerate(self._stages(x)):
            for t in self.tasks:
                mask, feats[t] = self._attend(k, t, stage, feats.get(t))
                out[t].append(mask)
        return out

    def _stages(self, x: Tensor) -> Iterator[Stage]:
        """The attended stages of one backbone pass; stops after the last one."""
        walk = self.backbone.walk(x)
        left = len(self.stage_names)
        try:
            for stage in walk:
                if stage.name in self.stage_names:
                    yield stage
                    left -= 1
                if not left:
                    return
        finally:
            walk.close()

    def _attend(
        self, k: int, task: str, stage: Stage, prev: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Task ``task``'s mask m_k (at ``before``'s resolution) and masked feature q_k."""
        inp = stage.before
        if prev is not None:
            p = _fit(self.refine[k - 1](prev), stage.before, pool=self.resnet)
            inp = torch.cat([inp, p], dim=1)
        mask: Tensor = cast(nn.ModuleList, self.attention[task])[k](inp)
        return mask, _fit(mask, stage.after, pool=False) * stage.after

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.backbone.parameters()
        yield from self.refine.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        yield from self.attention[task].parameters()
        yield from self.heads[task].parameters()


def _fit(x: Tensor, ref: Tensor, *, pool: bool) -> Tensor:
    """``x`` at ``ref``'s resolution: max-pooled when ``pool`` and it shrinks, else bilinear."""
    size = ref.shape[-2:]
    if x.shape[-2:] == size:
        return x
    if pool and x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_max_pool2d(x, tuple(size))
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def _attended(backbone: Backbone, names: tuple[str, ...]) -> list[StageShape]:
    """Shapes of the stages to attend, in walk order; refuses stage-less backbones and
    unknown stage names."""
    if not backbone.has_stages:
        from pymtl.plugins import get_registry

        ok = [e.name for e in get_registry().entries("backbone") if e.cls.has_stages]
        raise ConfigError(
            f"architecture 'mtan' needs a backbone it can walk stage by stage; backbone "
            f"{backbone.name!r} has no stages (expected one of: {', '.join(ok)})"
        )
    shapes = probe_stages(backbone)
    available = [s.name for s in shapes]
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ConfigError(
            f"architecture 'mtan': unknown stage(s) {unknown} of backbone {backbone.name!r} in "
            f"'stages'; available stages: {', '.join(available)}"
        )
    return [s for s in shapes if not names or s.name in names]


def _refinement(prev: StageShape, cur: StageShape, *, resnet: bool) -> nn.Module:
    """Shared block mapping q of stage ``prev`` to ``cur``'s ``before`` channels: a Bottleneck
    on ResNet [C:MTL-PyTorch], a conv3×3-BN-ReLU otherwise [R]."""
    cin, cout = prev.after_channels, cur.before_channels
    if not resnet:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )
    if cout % Bottleneck.expansion:
        raise ConfigError(
            f"architecture 'mtan' on a ResNet: the refinement Bottleneck into stage "
            f"{cur.name!r} needs its {cout} channels to be a multiple of "
            f"{Bottleneck.expansion}; use an even backbone width (a multiple of 4 when the stem "
            "is attended)"
        )
    return Bottleneck(cin, cout // Bottleneck.expansion)


def _attentions(shapes: Sequence[StageShape], *, quarter: bool) -> nn.ModuleList:
    """One task's attention layers: in = before (+ before again after the first stage)."""
    layers = []
    for k, s in enumerate(shapes):
        cin = s.before_channels * (1 if k == 0 else 2)
        out = s.after_channels
        layers.append(Attention(cin, max(1, out // 4) if quarter else out, out))
    return nn.ModuleList(layers)


@hookimpl
def pymtl_register_architectures() -> list[type[Architecture]]:
    return [MTAN]
