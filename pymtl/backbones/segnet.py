"""SegNet encoder-decoder (``segnet``) as MTAN and KD4MTL use it on NYUv2 and Cityscapes.

Reference: Badrinarayanan et al., TPAMI 2017 [P]; the layout of MTAN / KD4MTL
(SPEC-methods §1 [C:lorenmt/mtan, C:VICO-UoE/KD4MTL]). Encoder widths f = (64, 128, 256, 512,
512). Encoder stage j is conv3×3-BN-ReLU (``encoder_block[j]``: f[j-1] -> f[j]), then 1
(stages 0, 1) or 2 (stages 2-4) more conv3×3-BN-ReLU at f[j] (``conv_block_enc[j]``), then a
2×2 max-pool that keeps its indices. The decoder mirrors it: max-unpool with the stage's
indices, ``decoder_block[j]`` (f[j] -> f[j-1], f[0] -> f[0] for j = 0) and
``conv_block_dec[j]`` (1 or 2 more convs at that width), for j = 4 down to 0. Convs have biases;
init is Xavier-normal conv weights, zero biases, BN weight 1 / bias 0, as in both codes.
Module names equal theirs, so the shared part of an MTAN / KD4MTL checkpoint loads once its
head and attention keys are dropped.

[pymtl] extensions: ``width`` scales every width by width/64 (64 is the paper's network), and
inputs need not be multiples of 32: pooling floors odd sizes and unpooling restores the exact
pre-pool size (the dropped last row/column comes back as zeros before the decoder conv). For
sizes divisible by 32 this is exactly the reference network; inputs must be at least 32×32.
"""

from __future__ import annotations

from typing import NamedTuple

import attrs
import torch.nn.functional as F
from torch import Tensor, nn

from pymtl.backbones._common import checked, conv_bn_relu, positive_int, weights_path
from pymtl.backbones.base import Backbone, Stage, Walk, keep
from pymtl.hookspecs import hookimpl

__all__ = ["SegNet", "SegNetConfig", "SegNetTrace"]

WIDTHS = (1, 2, 4, 8, 8)
"""Stage widths as multiples of ``width`` (64, 128, 256, 512, 512 at width 64)."""
EXTRA_CONVS = (1, 1, 2, 2, 2)
"""Convs after the first one in each encoder (and mirrored decoder) stage."""


@attrs.frozen(kw_only=True)
class SegNetConfig:
    """Options of ``segnet``.

    Attributes:
        width: channels of the first stage; the stages have width × (1, 2, 4, 8, 8). 64 is
            the MTAN / KD4MTL network; smaller widths are for CPU tests.
        weights: a local ``.pt`` / ``.pth`` / ``.safetensors`` state dict ("": random init).
    """

    width: int = attrs.field(default=64, validator=positive_int)
    weights: str = attrs.field(default="", validator=weights_path)


class SegNetTrace(NamedTuple):
    """Every intermediate of one SegNet pass, for architectures that attach to its stages
    (MTAN's attention modules, KD4MTL's feature layers). Lists are indexed by stage j = 0..4.

    Attributes:
        enc_first: output of ``encoder_block[j]`` (the stage's first conv).
        enc_last: output of ``conv_block_enc[j]`` (the stage's last conv, before pooling).
        bottleneck: the last max-pool's output, [B, 8·width, ⌊H/32⌋, ⌊W/32⌋].
        unpooled: the unpooled input of decoder stage j.
        dec_last: output of ``conv_block_dec[j]`` (``dec_last[0]`` is :meth:`SegNet.forward`).
    """

    enc_first: list[Tensor]
    enc_last: list[Tensor]
    bottleneck: Tensor
    unpooled: list[Tensor]
    dec_last: list[Tensor]


def _extra(channels: int, n: int) -> nn.Sequential:
    # one extra conv is the conv-BN-ReLU Sequential itself; two are nested, as in the references
    if n == 1:
        return conv_bn_relu(channels, channels, bias=True)
    return nn.Sequential(*(conv_bn_relu(channels, channels, bias=True) for _ in range(n)))


class SegNet(Backbone):
    """SegNet encoder-decoder of MTAN / KD4MTL: full-resolution features [C:lorenmt/mtan].

    Reference: Badrinarayanan et al., TPAMI 2017; Liu et al., CVPR 2019 (MTAN); Li & Bilen,
    ECCV-W 2020 (KD4MTL). ``forward`` returns the last decoder conv's output, [B, width, H, W]
    (64 channels at full resolution in MTAN). ``multi_scale`` returns the decoder stages' outputs
    from fine to coarse followed by the bottleneck (strides 1, 2, 4, 8, 16, 32): KD4MTL's "last"
    and "mid" layers are its first and last entries. :meth:`trace` exposes every stage.

    Args:
        in_channels: input image channels.
        width, weights: see :class:`SegNetConfig`.

    Example:
        >>> import torch
        >>> net = SegNet(width=8)
        >>> net(torch.zeros(1, 3, 64, 96)).shape
        torch.Size([1, 8, 64, 96])
    """

    name = "segnet"
    Config = SegNetConfig

    def __init__(self, in_channels: int = 3, *, width: int = 64, weights: str = "") -> None:
        super().__init__(in_channels)
        checked(SegNetConfig, self.name, width=width, weights=weights)
        f = [width * m for m in WIDTHS]
        prev = [in_channels, *f[:-1]]
        self.encoder_block = nn.ModuleList(
            [conv_bn_relu(prev[j], f[j], bias=True) for j in range(5)]
        )
        self.conv_block_enc = nn.ModuleList([_extra(f[j], EXTRA_CONVS[j]) for j in range(5)])
        dec_out = [f[0], *f[:-1]]
        self.decoder_block = nn.ModuleList(
            [conv_bn_relu(f[j], dec_out[j], bias=True) for j in range(5)]
        )
        self.conv_block_dec = nn.ModuleList([_extra(dec_out[j], EXTRA_CONVS[j]) for j in range(5)])
        self.out_channels = f[0]
        self.output_stride = 1
        self._scale_channels = (*dec_out, f[4])
        self._init_weights()

    @staticmethod
    def _check_size(x: Tensor) -> None:
        if min(x.shape[-2:]) < 32:
            raise ValueError(
                f"backbone 'segnet': input of spatial size {tuple(x.shape[-2:])} is too small; "
                "expected at least 32×32 (five 2×2 max-pools)"
            )

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def trace(self, x: Tensor) -> SegNetTrace:
        """Run the network and return every stage's features (see :class:`SegNetTrace`)."""
        self._check_size(x)
        enc_first, enc_last, indices = [], [], []
        for j in range(5):
            x = self.encoder_block[j](x)
            enc_first.append(x)
            x = self.conv_block_enc[j](x)
            enc_last.append(x)
            x, idx = F.max_pool2d(x, 2, stride=2, return_indices=True)
            indices.append(idx)
        bottleneck = x
        unpooled: list[Tensor] = [x] * 5
        dec_last: list[Tensor] = [x] * 5
        for j in reversed(range(5)):
            size = enc_last[j].shape[-2:]
            x = F.max_unpool2d(x, indices[j], (2, 2), stride=(2, 2), output_size=size)
            unpooled[j] = x
            x = self.conv_block_dec[j](self.decoder_block[j](x))
            dec_last[j] = x
        return SegNetTrace(enc_first, enc_last, bottleneck, unpooled, dec_last)

    has_stages = True

    def walk(self, x: Tensor) -> Walk:
        """Stages ``enc0``…``enc4`` (before: the stage's first conv; after: its last conv,
        before the 2×2 max-pool) and ``dec4``…``dec0`` (before: the first conv after
        unpooling; after: the stage's last conv), as MTAN's SegNet version attends to them
        [C:lorenmt/mtan]."""
        self._check_size(x)
        indices = []
        for j in range(5):
            before = self.encoder_block[j](x)
            x = self.conv_block_enc[j](before)
            x = keep((yield Stage(f"enc{j}", before, x)), x)
            x, idx = F.max_pool2d(x, 2, stride=2, return_indices=True)
            indices.append((idx, before.shape[-2:]))
        for j in reversed(range(5)):
            idx, size = indices[j]
            x = F.max_unpool2d(x, idx, (2, 2), stride=(2, 2), output_size=size)
            before = self.decoder_block[j](x)
            x = self.conv_block_dec[j](before)
            x = keep((yield Stage(f"dec{j}", before, x)), x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        """Features [B, width, H, W] (output stride 1)."""
        return self.trace(x).dec_last[0]

    def multi_scale(self, x: Tensor) -> list[Tensor]:
        """Decoder stage outputs at strides 1, 2, 4, 8, 16, then the stride-32 bottleneck."""
        t = self.trace(x)
        return [*t.dec_last, t.bottleneck]

    @property
    def scale_channels(self) -> tuple[int, ...]:
        return self._scale_channels

    @property
    def scale_strides(self) -> tuple[int, ...]:
        return (1, 2, 4, 8, 16, 32)


@hookimpl
def pymtl_register_backbones() -> list[type[Backbone]]:
    return [SegNet]
