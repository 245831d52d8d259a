"""Small U-Net-style conv encoder-decoder (``convnet``), sized for synthetic data on a CPU.

[pymtl] A framework design, not a published network (in the spirit of the 2-core feasibility
net of SPEC-data §3.4; U-Net skips after Ronneberger et al., MICCAI 2015 [P]). Encoder: ``depth``
stages, each a 3×3 stride-2 conv-BN-ReLU followed by a 3×3 conv-BN-ReLU, at widths w, 2w, 4w, …
and strides 2, 4, 8, …. Decoder: from the coarsest stage, bilinear ×2 upsampling to the next
finer stage's size, concatenation with that stage's features (skip connection) and one 3×3
conv-BN-ReLU to its width, up to stride 2. With ``output_stride = 1`` a full-resolution 3×3
conv-BN-ReLU stem of width w is added and the decoder climbs to stride 1.

Default stride 2: the task heads then run on 32×32 maps for 64×64 images, which makes a 4-task
step about 4× cheaper than at stride 1 (heads dominate the cost); dense outputs are upsampled
to the input size by the heads. Any input size ≥ 1 works: strided convs give ⌈H/2⌉ and the
decoder resizes to each skip's exact size.
"""

from __future__ import annotations

import itertools
from typing import cast

import attrs
import torch
from torch import Tensor, nn

from pymtl.backbones._common import (
    checked,
    conv_bn_relu,
    init_kaiming,
    int_in,
    one_of,
    positive_int,
    resize_to,
    weights_path,
)
from pymtl.backbones.base import Backbone, Stage, Walk, keep
from pymtl.hookspecs import hookimpl

__all__ = ["ConvNet", "ConvNetConfig"]


@attrs.frozen(kw_only=True)
class ConvNetConfig:
    """Options of ``convnet``.

    Attributes:
        width: channels of the first encoder stage (stage k has width·2^k).
        depth: encoder stages, i.e. the coarsest stride is 2^depth (at most 6).
        output_stride: 2 (default, cheaper heads) or 1 (adds a full-resolution stem).
        norm: ``batch`` (BatchNorm) or ``group`` (GroupNorm: no batch statistics, so results
            do not depend on how a batch is split across processes).
        weights: a local ``.pt`` / ``.pth`` / ``.safetensors`` state dict ("": random init).
    """

    width: int = attrs.field(default=16, validator=positive_int)
    depth: int = attrs.field(default=3, validator=int_in(1, 6))
    output_stride: int = attrs.field(default=2, validator=one_of(1, 2))
    norm: str = attrs.field(default="batch", validator=one_of("batch", "group"))
    weights: str = attrs.field(default="", validator=weights_path)


class ConvNet(Backbone):
    """Small U-Net-style encoder-decoder for synthetic 64×64 scenes on a CPU [pymtl].

    Reference: pymtl's own design (module docstring); skip connections as in U-Net
    (Ronneberger et al., MICCAI 2015). ``forward`` returns [B, width, ⌈H/s⌉, ⌈W/s⌉] with
    s = ``output_stride``; ``multi_scale`` returns the decoder outputs from fine to coarse
    followed by the coarsest encoder stage (strides s, …, 2^depth).

    Args:
        in_channels: input image channels.
        width, depth, output_stride, weights: see :class:`ConvNetConfig`.

    Example:
        >>> import torch
        >>> net = ConvNet(width=8)
        >>> net(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 8, 32, 32])
    """

    name = "convnet"
    Config = ConvNetConfig

    def __init__(
        self,
        in_channels: int = 3,
        *,
        width: int = 16,
        depth: int = 3,
        output_stride: int = 2,
        norm: str = "batch",
        weights: str = "",
    ) -> None:
        super().__init__(in_channels)
        checked(
            ConvNetConfig,
            self.name,
            width=width,
            depth=depth,
            output_stride=output_stride,
            norm=norm,
            weights=weights,
        )
        chans = [width * 2**k for k in range(depth)]  # encoder stage k at stride 2^(k+1)
        self.stem = conv_bn_relu(in_channels, width, norm=norm) if output_stride == 1 else None
        prev = in_channels if self.stem is None else width
        downs = []
        for c in chans:
            downs.append(
                nn.Sequential(
                    conv_bn_relu(prev, c, stride=2, norm=norm), conv_bn_relu(c, c, norm=norm)
                )
            )
            prev = c
        self.down = nn.ModuleList(downs)
        # levels fine -> coarse (stem first when present); up[k] maps level k+1 onto level k
        levels = ([width] if self.stem is not None else []) + chans
        self.up = nn.ModuleList(
            conv_bn_relu(coarse + fine, fine, norm=norm)
            for fine, coarse in itertools.pairwise(levels)
        )
        self.out_channels = width
        self.output_stride = output_stride
        self._scale_channels = tuple(levels)
        init_kaiming(self)

    def multi_scale(self, x: Tensor) -> list[Tensor]:
        """Decoder outputs fine to coarse, then the coarsest encoder stage."""
        feats = []
        if self.stem is not None:
            x = self.stem(x)
            feats.append(x)
        for stage in self.down:
            x = stage(x)
            feats.append(x)
        outs = [x]
        for skip, up in zip(reversed(feats[:-1]), reversed(self.up), strict=True):
            outs.append(up(torch.cat([resize_to(outs[-1], skip), skip], dim=1)))
        return outs[::-1]

    def forward(self, x: Tensor) -> Tensor:
        """Features [B, width, ⌈H/s⌉, ⌈W/s⌉], s = ``output_stride``."""
        return self.multi_scale(x)[0]

    has_stages = True

    def walk(self, x: Tensor) -> Walk:
        """Stages ``stem`` (stride 1, if any), ``down0``…``down{depth-1}`` (before: the strided
        conv's output) and ``up{k}`` from coarse to fine (before: the upsampled coarse map
        concatenated with the skip); a replaced encoder output is also the decoder's skip."""
        feats = []
        if self.stem is not None:
            x = self.stem(x)
            x = keep((yield Stage("stem", x, x)), x)
            feats.append(x)
        for k, stage in enumerate(self.down):
            first, second = cast(nn.Sequential, stage)
            before = first(x)
            x = second(before)
            x = keep((yield Stage(f"down{k}", before, x)), x)
            feats.append(x)
        for k in reversed(range(len(self.up))):
            skip = feats[k]
            before = torch.cat([resize_to(x, skip), skip], dim=1)
            x = self.up[k](before)
            x = keep((yield Stage(f"up{k}", before, x)), x)
        return x

    @property
    def scale_channels(self) -> tuple[int, ...]:
        return self._scale_channels

    @property
    def scale_strides(self) -> tuple[int, ...]:
        return tuple(self.output_stride * 2**k for k in range(len(self._scale_channels)))


@hookimpl
def pymtl_register_backbones() -> list[type[Backbone]]:
    return [ConvNet]
