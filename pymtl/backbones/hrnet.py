"""HRNet backbone (``hrnet``): four parallel resolutions with repeated exchange, HRNet-V2 output.

Reference: Wang et al., "Deep High-Resolution Representation Learning for Visual Recognition",
TPAMI 2020 [P]; the HRNet-W18-small-v2 the survey's MTI-Net / PAD-Net / HRNet baselines use
(SPEC-methods §1 [C:SimonVandenhende/Multi-Task-Learning-PyTorch seg_hrnet.py, hrnet_w18.yml]).

Layout (defaults = W18-small-v2): stem of two 3×3 stride-2 conv-BN-ReLU (64 ch, stride 4);
layer1 = ``blocks`` Bottlenecks (64 -> 256); then stages 2, 3, 4 with 2, 3, 4 branches at
strides 4, 8, 16, 32 and widths w, 2w, 4w, 8w (18, 36, 72, 144). A transition before each
stage adapts the existing branches (a 3×3 conv where the width changes) and opens the new
coarsest branch with a 3×3 stride-2 conv-BN-ReLU from the previous coarsest one. A stage is
``modules[k]`` exchange units: each runs ``blocks`` BasicBlocks per branch, then every output
branch i sums all branches j — j = i as is; j > i through 1×1 conv + BN and bilinear upsampling;
j < i through i−j 3×3 stride-2 convs (BN, ReLU between them, BN only after the last) — and
applies ReLU. ``forward`` is the HRNet-V2 representation: the four branches upsampled to
stride 4 and concatenated (15·w channels: 270 for W18).

Module names follow the HRNet code (``conv1``, ``layer1``, ``transition1``,
``stage2.0.branches.0.0.conv1``, ``stage2.0.fuse_layers.1.0.0.0`` ...), so the backbone part of
``hrnet_w18_small_model_v2.pth`` loads once its classifier keys (``incre_modules``,
``downsamp_modules``, ``final_layer``, ``classifier``) are dropped.

How it can differ from the reference [R] / [pymtl]:

* HRNet-W18-small-v2 is ``width=18, blocks=2, modules=(1, 3, 2)``; the full HRNet-W18 is
  ``blocks=4, modules=(1, 4, 3)``. Smaller ``width`` / ``blocks`` / ``modules`` /
  ``stem_width`` give the CPU-sized nets of tests and synthetic runs; they are pymtl's, not
  HRNet's, and no result of the paper applies to them.
* BatchNorm momentum is PyTorch's 0.1 (HRNet's code: 0.01; only running statistics differ) and
  convs get He-normal init (HRNet's code: N(0, 0.001); both are followed by BatchNorm).
* Exchange-unit upsampling is bilinear with align_corners=False, as in the segmentation HRNet
  code MTL-PyTorch uses (the classification code uses nearest).
"""

from __future__ import annotations

from typing import Any, cast

import attrs
import torch
from torch import Tensor, nn

from pymtl.backbones._common import checked, init_kaiming, positive_int, resize_to, weights_path
from pymtl.backbones.base import Backbone
from pymtl.backbones.resnet import BasicBlock, Bottleneck
from pymtl.hookspecs import hookimpl

__all__ = ["HRNet", "HRNetConfig"]


def _as_tuple(value: Any) -> Any:
    """Lists (TOML arrays) become tuples; anything else is left for the validator to refuse."""
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _modules(instance: Any, attribute: attrs.Attribute[Any], value: tuple[int, ...]) -> None:
    if (
        not isinstance(value, tuple)
        or len(value) != 3
        or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in value)
    ):
        raise ValueError(
            f"'modules' must be 3 integers >= 1, the exchange units of stages 2, 3, 4 "
            f"(got {value!r})"
        )


@attrs.frozen(kw_only=True)
class HRNetConfig:
    """Options of ``hrnet``.

    Attributes:
        width: channels of the stride-4 branch; the branches have w, 2w, 4w, 8w.
        blocks: residual blocks per branch in every exchange unit, and Bottlenecks in layer1.
        modules: exchange units in stages 2, 3 and 4.
        stem_width: channels of the stem convs and bottleneck width of layer1 (output ×4).
        weights: a local ``.pt`` / ``.pth`` / ``.safetensors`` state dict ("": random init).
    """

    width: int = attrs.field(default=18, validator=positive_int)
    blocks: int = attrs.field(default=2, validator=positive_int)
    modules: tuple[int, ...] = attrs.field(
        default=(1, 3, 2), converter=_as_tuple, validator=_modules
    )
    stem_width: int = attrs.field(default=64, validator=positive_int)
    weights: str = attrs.field(default="", validator=weights_path)


def _conv_bn(cin: int, cout: int, k: int, *, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _fuse_path(channels: list[int], i: int, j: int) -> nn.Module:
    """How branch j reaches branch i's resolution and width inside an exchange unit."""
    if j == i:
        return nn.Identity()
    if j > i:  # coarser: 1×1 conv + BN here, bilinear upsampling in forward
        return _conv_bn(channels[j], channels[i], 1, relu=False)
    steps = [_conv_bn(channels[j], channels[j], 3, stride=2) for _ in range(i - j - 1)]
    steps.append(_conv_bn(channels[j], channels[i], 3, stride=2, relu=False))
    return nn.Sequential(*steps)


class ExchangeUnit(nn.Module):
    """Residual blocks on each branch, then the all-to-all multi-resolution fusion [P]."""

    def __init__(self, channels: list[int], blocks: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*(BasicBlock(c, c) for _ in range(blocks))) for c in channels
        )
        n = len(channels)
        self.fuse_layers = nn.ModuleList(
            nn.ModuleList(_fuse_path(channels, i, j) for j in range(n)) for i in range(n)
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs, strict=True)]
        out = []
        for i in range(len(xs)):
            paths = cast(nn.ModuleList, self.fuse_layers[i])
            y = xs[i]
            for j, path in enumerate(paths):
                if j != i:
                    y = y + resize_to(path(xs[j]), xs[i])
            out.append(self.relu(y))
        return out


def _transition(prev: list[int], cur: list[int]) -> nn.ModuleList:
    """Adapt existing branches (identity when the width is unchanged) and open a new one."""
    paths: list[nn.Module] = [
        nn.Identity() if p == c else _conv_bn(p, c, 3) for p, c in zip(prev, cur, strict=False)
    ]
    paths.append(nn.Sequential(_conv_bn(prev[-1], cur[-1], 3, stride=2)))
    return nn.ModuleList(paths)


class HRNet(Backbone):
    """HRNet-V2 backbone, W18-small-v2 by default: 4 branches at strides 4-32 [C:MTL-PyTorch].

    Reference: Wang et al., TPAMI 2020; the HRNet-18 of the survey's MTI-Net and PAD-Net
    experiments (Vandenhende et al., TPAMI 2021). ``forward`` returns the four branches
    upsampled to stride 4 and concatenated, [B, 15·width, ⌈H/4⌉, ⌈W/4⌉]; ``multi_scale``
    returns the branches from fine to coarse (strides 4, 8, 16, 32; widths w, 2w, 4w, 8w), the
    input of MTI-Net. The module docstring lists how configurations differ from HRNet-W18 [R].

    Args:
        in_channels: input image channels.
        width, blocks, modules, stem_width, weights: see :class:`HRNetConfig`.

    Example:
        >>> import torch
        >>> net = HRNet(width=4, blocks=1, modules=(1, 1, 1), stem_width=8)
        >>> net(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 60, 16, 16])
    """

    name = "hrnet"
    Config = HRNetConfig

    def __init__(
        self,
        in_channels: int = 3,
        *,
        width: int = 18,
        blocks: int = 2,
        modules: tuple[int, ...] = (1, 3, 2),
        stem_width: int = 64,
        weights: str = "",
    ) -> None:
        super().__init__(in_channels)
        modules = checked(
            HRNetConfig,
            self.name,
            width=width,
            blocks=blocks,
            modules=modules,
            stem_width=stem_width,
            weights=weights,
        ).modules
        s = stem_width
        self.conv1 = nn.Conv2d(in_channels, s, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(s)
        self.conv2 = nn.Conv2d(s, s, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(s)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(*(Bottleneck(s if b == 0 else 4 * s, s) for b in range(blocks)))
        channels = [width * 2**k for k in range(4)]
        prev = [4 * s]
        for k, n in enumerate(modules, start=2):
            cur = channels[:k]
            setattr(self, f"transition{k - 1}", _transition(prev, cur))
            units = [ExchangeUnit(cur, blocks) for _ in range(n)]
            setattr(self, f"stage{k}", nn.Sequential(*units))
            prev = cur
        self.out_channels = sum(channels)
        self.output_stride = 4
        self._scale_channels = tuple(channels)
        init_kaiming(self)

    def multi_scale(self, x: Tensor) -> list[Tensor]:
        """The four branches, fine to coarse: [B, w·2^k, ⌈H/2^(k+2)⌉, ⌈W/2^(k+2)⌉], k = 0..3."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        xs = [self.layer1(x)]
        for k in (2, 3, 4):
            transition: nn.ModuleList = getattr(self, f"transition{k - 1}")
            stage: nn.Sequential = getattr(self, f"stage{k}")
            inputs = [path(y) for path, y in zip(transition, xs, strict=False)]
            inputs.append(transition[-1](xs[-1]))
            xs = stage(inputs)
        return xs

    def forward(self, x: Tensor) -> Tensor:
        """HRNet-V2 features: all branches upsampled to stride 4 and concatenated."""
        xs = self.multi_scale(x)
        return torch.cat([xs[0]] + [resize_to(y, xs[0]) for y in xs[1:]], dim=1)

    @property
    def scale_channels(self) -> tuple[int, ...]:
        return self._scale_channels

    @property
    def scale_strides(self) -> tuple[int, ...]:
        return (4, 8, 16, 32)


@hookimpl
def pymtl_register_backbones() -> list[type[Backbone]]:
    return [HRNet]
