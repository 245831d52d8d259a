"""NDDR-CNN (``nddr``): T task networks fused between stages by 1×1 conv + BN + ReLU.

Reference: Gao et al., "NDDR-CNN: Layerwise Feature Fusing in Multi-Task CNNs by Neural
Discriminative Dimensionality Reduction", CVPR 2019; SPEC-methods §1.5 [S][C:MTL-PyTorch].
Each task has its own copy of the backbone; after each selected stage s the T activations are
concatenated along channels and every task reduces them back to C_s channels with its own
layer ("discriminative dimensionality reduction"):

    y_t^s = ReLU(BN_t(W_t^s * concat_j(x_j^s))),    W_t^s: [C_s, T·C_s, 1, 1], no bias

* Init: W_t = [β I, …, α I (block of task t), …, β I] with α = ``init_alpha`` = 0.9 and
  β = ``init_beta`` = 0.1; BN weight 1, bias 0, momentum 0.05. So before BN/ReLU the initial
  layer is the scalar cross-stitch 0.9/0.1 (``init="mtl_pytorch"``); with β = 0 and α = 1
  (and identity BN statistics) it passes each task's own (non-negative) activation through.
* Stages: option ``stages`` (empty: every stage the backbone walks). SPEC's choice for
  ResNet-50 is the stem and layer1..layer4, which is exactly the empty default on ResNets.
* Optimiser: :meth:`lr_groups` gives the NDDR layers (conv and BN) a 100× learning rate
  (``lr_multiplier``); the reference trains with SGD.

Works with every backbone that has stages (convnet, resnet18/34/50, segnet, lenet); hrnet is
refused. Heads as in ``hps``, one per task on its own copy's output (image-level tasks get an
ImageHead and take part in the fusion like every task). Cost: T backbones (≈ T single-task
networks in parameters and FLOPs) plus, per stage, T 1×1 convs from T·C_s to C_s channels.
Partition: see :mod:`pymtl.architectures._stagewise`.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import torch
from torch import Tensor, nn

from pymtl.architectures._stagewise import StagewiseConfig, StagewiseNet
from pymtl.architectures.base import Architecture
from pymtl.config import BackboneSection
from pymtl.hookspecs import hookimpl
from pymtl.tasks.base import Task

__all__ = ["NDDR", "NDDRConfig", "NDDRUnit", "nddr_weight"]

BN_MOMENTUM = 0.05
"""Momentum of the NDDR layers' BatchNorm [C:MTL-PyTorch]."""


@attrs.frozen(kw_only=True)
class NDDRConfig(StagewiseConfig):
    """Options of ``nddr`` (plus ``backbone``, ``stages``, ``lr_multiplier`` and the ``head_*``
    options of :class:`~pymtl.architectures._stagewise.StagewiseConfig`).

    Attributes:
        init_alpha: initial weight of a task's own block of W_t (0.9).
        init_beta: initial weight of the other tasks' blocks (0.1).
    """

    init_alpha: float = attrs.field(default=0.9)
    init_beta: float = attrs.field(default=0.1)


def nddr_weight(tasks: int, channels: int, task: int, *, alpha: float, beta: float) -> Tensor:
    """The initial W_t [C, T·C, 1, 1]: α·I in block ``task``, β·I in the others [S]."""
    eye = torch.eye(channels)
    blocks = [(alpha if j == task else beta) * eye for j in range(tasks)]
    return torch.cat(blocks, dim=1)[:, :, None, None]


class NDDRUnit(nn.Module):
    """One NDDR fusion: T stage outputs [B, C, H, W] -> y_t = ReLU(BN_t(W_t * concat_j x_j)) [S].

    ``layers[t]`` is task t's ``Sequential(conv, bn, relu)``.
    """

    def __init__(self, tasks: int, channels: int, *, alpha: float, beta: float) -> None:
        super().__init__()
        layers = []
        for t in range(tasks):
            conv = nn.Conv2d(tasks * channels, channels, 1, bias=False)
            with torch.no_grad():
                conv.weight.copy_(nddr_weight(tasks, channels, t, alpha=alpha, beta=beta))
            bn = nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)
            layers.append(nn.Sequential(conv, bn, nn.ReLU()))
        self.layers = nn.ModuleList(layers)

    def forward(self, xs: Sequence[Tensor]) -> list[Tensor]:
        x = torch.cat(list(xs), dim=1)  # [B, T·C, H, W]
        return [layer(x) for layer in self.layers]


class NDDR(StagewiseNet):
    """NDDR-CNN: T backbone copies fused after selected stages by per-task 1×1 conv-BN-ReLU [S].

    Reference: Gao et al., CVPR 2019; SPEC-methods §1.5 [C:MTL-PyTorch]. The NDDR layers train
    at ``lr_multiplier`` × the run's rate (:meth:`lr_groups`).

    Args:
        tasks: the dataset's task declarations.
        in_channels: input image channels.
        backbone, stages, init_alpha, init_beta, lr_multiplier, head_channels, head_rates,
            head_norm: see :class:`NDDRConfig`.

    Example:
        >>> from pymtl.tasks import DepthTask, NormalsTask
        >>> net = NDDR([DepthTask(name="depth"), NormalsTask(name="normals")])
        >>> net(torch.zeros(2, 3, 32, 32))["normals"].shape
        torch.Size([2, 3, 32, 32])
    """

    name = "nddr"
    Config = NDDRConfig

    def __init__(
        self,
        tasks: Sequence[Task],
        in_channels: int = 3,
        *,
        backbone: BackboneSection | None = None,
        stages: Sequence[str] = (),
        init_alpha: float = 0.9,
        init_beta: float = 0.1,
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
        T = len(self.tasks)
        for s in self.stage_shapes:
            self.units[s.name] = NDDRUnit(T, s.after_channels, alpha=init_alpha, beta=init_beta)


@hookimpl
def pymtl_register_architectures() -> list[type[Architecture]]:
    return [NDDR]
