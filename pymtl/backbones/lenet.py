"""LeNet trunk for image-level tasks (``lenet``): MGDA's MultiLeNet shared representation.

Reference: LeCun et al., Proc. IEEE 1998 [P]; the shared part of MGDA's MultiMNIST network
(Sener & Koltun, NeurIPS 2018 [C:isl-org/MultiObjectiveOptimization multi_lenet.py]):
conv 5×5 (10) -> 2×2 max-pool -> ReLU -> conv 5×5 (20) -> channel dropout -> 2×2 max-pool ->
ReLU -> flatten -> linear (50) -> ReLU. For 28×28 inputs the flattened size is 20·4·4 = 320.
KD4MTL's SVHN & Omniglot trunk is "LeNet-style" without published layer sizes; using this one
there is a [R] choice.

Backbone contract (:mod:`pymtl.backbones.base`): an image-level net returns
[B, out_channels, 1, 1] with ``output_stride = 0``; here out_channels = ``features`` (50). The
linear layer fixes the input size, so ``input_size`` (square side) is an option, and other
sizes are refused with a message.

Differences from MGDA's code [pymtl]: dropout is ``nn.Dropout2d`` (a fresh per-sample channel
mask, scaled by 1/(1-p) in training, identity in eval); MGDA draws one channel mask for the
whole batch, shares it across the tasks' forward passes and does not rescale. Initialisation is
PyTorch's default, as in MGDA's code. Parameter names (``conv1``, ``conv2``, ``fc``) equal
MGDA's ``MultiLeNetR``.
"""

from __future__ import annotations

from typing import Any

import attrs
import torch.nn.functional as F
from torch import Tensor, nn

from pymtl.backbones._common import checked, positive_int, weights_path
from pymtl.backbones.base import Backbone, Stage, Walk, keep
from pymtl.hookspecs import hookimpl

__all__ = ["LeNet", "LeNetConfig"]


def _flat_side(size: int) -> int:
    """Side of the conv2 -> pool output for a ``size``×``size`` input (0 if too small)."""
    return max(((size - 4) // 2 - 4) // 2, 0)


def _input_size(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    positive_int(instance, attribute, value)
    if _flat_side(value) < 1:
        raise ValueError(f"'input_size' must be >= 16 for two 5×5 convs and pools (got {value})")


def _dropout(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"'dropout' must be a probability in [0, 1) (got {value!r})")


@attrs.frozen(kw_only=True)
class LeNetConfig:
    """Options of ``lenet``.

    Attributes:
        input_size: side of the square input images (28 MultiMNIST, 36 ParetoMTL's
            MultiMNIST, 32 SVHN).
        width: channels of conv1; conv2 has twice as many (10 and 20 in MGDA).
        features: size of the shared representation (the output channels).
        dropout: channel-dropout probability after conv2 (0 turns it off).
        weights: a local ``.pt`` / ``.pth`` / ``.safetensors`` state dict ("": random init).
    """

    input_size: int = attrs.field(default=28, validator=_input_size)
    width: int = attrs.field(default=10, validator=positive_int)
    features: int = attrs.field(default=50, validator=positive_int)
    dropout: float = attrs.field(default=0.5, validator=_dropout)
    weights: str = attrs.field(default="", validator=weights_path)


class LeNet(Backbone):
    """LeNet trunk of MGDA's MultiLeNet: image -> [B, 50, 1, 1] shared features [C:MGDA].

    Reference: LeCun et al., 1998; Sener & Koltun, NeurIPS 2018 (MultiMNIST). Image-level:
    ``output_stride`` is 0 and the output is a [B, features, 1, 1] map.

    Args:
        in_channels: input image channels (1 for MultiMNIST).
        input_size, width, features, dropout, weights: see :class:`LeNetConfig`.

    Example:
        >>> import torch
        >>> net = LeNet(1)
        >>> net(torch.zeros(4, 1, 28, 28)).shape
        torch.Size([4, 50, 1, 1])
    """

    name = "lenet"
    Config = LeNetConfig

    def __init__(
        self,
        in_channels: int = 3,
        *,
        input_size: int = 28,
        width: int = 10,
        features: int = 50,
        dropout: float = 0.5,
        weights: str = "",
    ) -> None:
        super().__init__(in_channels)
        checked(
            LeNetConfig,
            self.name,
            input_size=input_size,
            width=width,
            features=features,
            dropout=dropout,
            weights=weights,
        )
        self.input_size = input_size
        self.conv1 = nn.Conv2d(in_channels, width, 5)
        self.conv2 = nn.Conv2d(width, 2 * width, 5)
        self.conv2_drop = nn.Dropout2d(dropout)
        self.fc = nn.Linear(2 * width * _flat_side(input_size) ** 2, features)
        self.out_channels = features
        self.output_stride = 0

    has_stages = True

    def walk(self, x: Tensor) -> Walk:
        """Stages ``conv1`` and ``conv2`` (before: the conv's output; after: pooled and
        rectified) and ``fc`` (before = after: [B, features, 1, 1])."""
        self._check_size(x)
        before = self.conv1(x)
        x = F.relu(F.max_pool2d(before, 2))
        x = keep((yield Stage("conv1", before, x)), x)
        before = self.conv2_drop(self.conv2(x))
        x = F.relu(F.max_pool2d(before, 2))
        x = keep((yield Stage("conv2", before, x)), x)
        x = F.relu(self.fc(x.flatten(1)))[:, :, None, None]
        x = keep((yield Stage("fc", x, x)), x)
        return x

    def _check_size(self, x: Tensor) -> None:
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            raise ValueError(
                f"backbone 'lenet': input of spatial size {tuple(x.shape[-2:])}, but it was built "
                f"for {self.input_size}×{self.input_size} (set input_size = {x.shape[-1]} for "
                "square inputs of that size)"
            )

    def forward(self, x: Tensor) -> Tensor:
        """Shared representation [B, features, 1, 1] of a [B, C, input_size, input_size] batch."""
        self._check_size(x)
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = F.relu(self.fc(x.flatten(1)))
        return x[:, :, None, None]


@hookimpl
def pymtl_register_backbones() -> list[type[Backbone]]:
    return [LeNet]
