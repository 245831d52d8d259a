"""PAP-Net (``papnet``): cross-task pattern-affinitive propagation.

Reference: Zhang et al., "Pattern-Affinitive Propagation across Depth, Surface Normal and
Semantic Segmentation", CVPR 2019 [P]; SPEC-methods §1.9 [S][R]; the survey (Vandenhende et al.,
TPAMI 2021, Eq. 3) [S]. The PAD-Net skeleton's blocks come from
:mod:`pymtl.architectures._distill`; the diffusion is the op :func:`pymtl.ops.pap.pap_diffuse`.

* Initial heads, per dense task t [S]: two Bottlenecks (backbone -> ``channels``) give F_t^i; a
  1×1 conv gives ŷ_t^0, upsampled to the input (deep supervision, key ``"t/initial"``).
* Affinity features [R]: ``f_t = Conv1×1(F_t^i)`` (``channels`` -> C' = ``affinity_channels``),
  bilinearly resized to the affinity grid ``(round(H·s), round(W·s))`` (at least 1) of the
  H×W input with s = ``affinity_scale`` (SPEC: 1/4, as EMA-Net); N = h_a·w_a. The features
  diffused are the same reduced maps, X_t = f_t (C = C').
* Affinity of task i [R]: ``A_i = rownorm(f_i f_iᵀ)`` (``norm``: ``softmax`` with τ = 1/√C',
  ``cosine_sum`` (EMA-Net parity) or ``linear_relu``); mixed per target j:
  ``M̂_j = Σ_i α_ij A_i``, ``α_{·j} = softmax(θ_{·j})``, θ ∈ R^{T×T} learnable, initialised to 0.
* Diffusion, K = ``steps`` times [R]: ``X_j ← β M̂_j X_j + (1 − β) X_j^0`` (β fixed).
* Reconstruction heads [S]: two Bottlenecks (C' -> C'), a 1×1 conv to K_j (bias from
  ``head_bias()``), bilinear upsampling to the input.
* Loss: initial plus final predictions, with the same task weight (as PAD-Net).
* Image-level tasks [pymtl]: an ImageHead on the backbone output, no diffusion.

Partition (honest): the backbone, the initial heads' feature blocks, every affinity 1×1 conv
(f_i enters every target's M̂_j) and θ are shared; task t owns its initial 1×1 conv and its
reconstruction head (and an image-level task its ImageHead). Z = the backbone output.

Backbones: any (the backbone output is used; the survey uses a dilated ResNet-50).

Cost: per diffusion step T affinities of N² entries (N = (H/4)(W/4) by default): memory and
FLOPs grow with (H·W)² — SPEC cites 4800 GFLOPs for PAP-Net against 256 for PAD-Net with a
ResNet-50. Defaults are CPU-sized [pymtl]: ``channels`` 64 (SPEC 256) and
``affinity_channels`` 16 (SPEC 128).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import attrs
import torch
from torch import Tensor, nn

from pymtl.architectures._distill import (
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
from pymtl.backbones._common import int_in, one_of
from pymtl.backbones.base import build_backbone
from pymtl.config import BackboneSection
from pymtl.hookspecs import hookimpl
from pymtl.ops.pap import MAX_STEPS, NORMS, pap_diffuse
from pymtl.tasks.base import Task

__all__ = ["AFFINITY_NORMS", "PAPNet", "PAPNetConfig", "affinity_grid"]

AFFINITY_NORMS = NORMS
"""Row normalisations of the affinity f fᵀ (SPEC-methods §1.9), as :mod:`pymtl.ops.pap` has
them."""


def _width(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 4 or value % 4:
        raise ValueError(
            f"{attribute.name!r} must be a multiple of 4, at least 4 (got {value!r}); the "
            "bottleneck blocks have an inner width of width / 4"
        )


def _fraction(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"{attribute.name!r} must be a number in (0, 1] (got {value!r})")


def _beta(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{attribute.name!r} must be a number in [0, 1] (got {value!r})")


@attrs.frozen(kw_only=True)
class PAPNetConfig:
    """Options of ``papnet``.

    Attributes:
        backbone: the shared backbone (any).
        channels: width of the initial task features F_t^i (SPEC 256; default 64).
        affinity_channels: C', width of the affinity features and of the reconstruction heads
            (SPEC 128; default 16, CPU-sized).
        affinity_scale: the affinity grid relative to the input (SPEC 1/4).
        beta: diffusion strength β (SPEC 0.05; 0 makes the diffusion the identity).
        steps: diffusion steps K (1 to 8).
        norm: affinity normalisation: ``softmax`` (default), ``cosine_sum``, ``linear_relu``.
        head_norm: ``batch`` or ``group`` normalisation in the heads.
    """

    backbone: BackboneSection = attrs.field(factory=_default_backbone)
    channels: int = attrs.field(default=64, validator=_width)
    affinity_channels: int = attrs.field(default=16, validator=_width)
    affinity_scale: float = attrs.field(default=0.25, validator=_fraction)
    beta: float = attrs.field(default=0.05, validator=_beta)
    steps: int = attrs.field(default=1, validator=int_in(1, MAX_STEPS))
    norm: str = attrs.field(default="softmax", validator=one_of(*AFFINITY_NORMS))
    head_norm: str = attrs.field(default="batch", validator=one_of("batch", "group"))


def affinity_grid(size: Sequence[int], scale: float) -> tuple[int, int]:
    """The affinity grid (h_a, w_a) of an input of ``size`` (H, W): round(H·s), at least 1."""
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


class PAPNet(Architecture):
    """PAP-Net: initial heads, cross-task affinity diffusion, reconstruction heads [S][P][R].

    Reference: Zhang et al., CVPR 2019 [P]; SPEC-methods §1.9 (see the module docstring).

    Args:
        tasks: the dataset's task declarations.
        in_channels: input image channels.
        backbone, channels, affinity_channels, affinity_scale, beta, steps, norm, head_norm:
            see :class:`PAPNetConfig`.

    Example:
        >>> from pymtl.tasks import DepthTask, SegmentationTask
        >>> net = PAPNet([SegmentationTask(name="seg", num_classes=3), DepthTask(name="depth")])
        >>> sorted(net.train()(torch.zeros(2, 3, 32, 32)))
        ['depth', 'depth/initial', 'seg', 'seg/initial']
    """

    name = "papnet"
    Config = PAPNetConfig

    def __init__(
        self,
        tasks: Sequence[Task],
        in_channels: int = 3,
        *,
        backbone: BackboneSection | None = None,
        channels: int = 64,
        affinity_channels: int = 16,
        affinity_scale: float = 0.25,
        beta: float = 0.05,
        steps: int = 1,
        norm: str = "softmax",
        head_norm: str = "batch",
    ) -> None:
        super().__init__(tasks, in_channels)
        cfg = checked_options(
            PAPNetConfig,
            self.name,
            backbone=backbone or _default_backbone(),
            channels=channels,
            affinity_channels=affinity_channels,
            affinity_scale=affinity_scale,
            beta=beta,
            steps=steps,
            norm=norm,
            head_norm=head_norm,
        )
        self.options = cfg
        dense = dense_tasks(self.name, self.task_specs)
        self.backbone = build_backbone(cfg.backbone, in_channels=in_channels)
        c = self.backbone.out_channels
        self.initial = InitialHeads(c, dense, channels, norm=head_norm)
        self._build_diffusion(dense)
        self.image_heads = nn.ModuleDict(
            {t.name: ImageHead(c, t) for t in self.task_specs if not t.dense}
        )

    def _build_diffusion(self, dense: Sequence[Task]) -> None:
        """The affinity 1×1 convs, θ = 0 (uniform α) and the reconstruction heads."""
        cfg = self.options
        self.reduce = nn.ModuleDict(
            {t.name: nn.Conv2d(cfg.channels, cfg.affinity_channels, 1) for t in dense}
        )
        self.alpha_logits = nn.Parameter(torch.zeros(len(dense), len(dense)))
        self.final = nn.ModuleDict(
            {t.name: FinalHead(cfg.affinity_channels, t, norm=cfg.head_norm) for t in dense}
        )

    def encode(self, x: Tensor) -> Tensor:
        """The backbone output Z."""
        z: Tensor = self.backbone(x)
        return z

    def diffuse(self, features: dict[str, Tensor], size: Sequence[int]) -> dict[str, Tensor]:
        """Reduce each task's features to C', resize them to the affinity grid of an input of
        ``size`` and diffuse them across tasks: ``{t: X_t^(K)}`` [B, C', h_a, w_a]."""
        grid = affinity_grid(size, self.options.affinity_scale)
        names = list(self.reduce)
        f = torch.stack([upsample(self.reduce[t](features[t]), grid) for t in names], dim=1)
        B, T, C, h, w = f.shape
        f = f.flatten(3).transpose(2, 3).contiguous()  # [B, T, N, C']
        y = pap_diffuse(
            f,
            f,
            self.alpha_logits,
            beta=self.options.beta,
            steps=self.options.steps,
            norm=self.options.norm,
        )
        y = y.transpose(2, 3).reshape(B, T, C, h, w)
        return {t: y[:, j] for j, t in enumerate(names)}

    def decode(self, z: Tensor, size: Sequence[int]) -> dict[str, Tensor]:
        """Final outputs, plus ``"t/initial"`` deep-supervision outputs in training mode."""
        features = self.initial(z)
        diffused = self.diffuse(features, size)
        out = {t: head(diffused[t], size) for t, head in self.final.items()}
        out |= {t: head(z, size) for t, head in self.image_heads.items()}
        if self.training:
            out |= deep_supervision(self.initial.predict(features, size), "initial")
        return out

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.backbone.parameters()
        yield from self.initial.blocks.parameters()
        yield from self.reduce.parameters()
        yield self.alpha_logits

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        if task in self.image_heads:
            yield from self.image_heads[task].parameters()
            return
        if task not in self.final:
            raise KeyError(f"architecture 'papnet' has no task {task!r} (tasks: {self.tasks})")
        yield from self.final[task].parameters()  # the last layer's bias first (head-bias check)
        yield from self.initial.predictors[task].parameters()


@hookimpl
def pymtl_register_architectures() -> list[type[Architecture]]:
    return [PAPNet]
