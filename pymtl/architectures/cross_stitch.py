"""Cross-stitch networks (``cross_stitch``): T task networks mixed linearly between stages.

Reference: Misra et al., "Cross-stitch Networks for Multi-task Learning", CVPR 2016; SPEC-methods
§1.3 [S][C:MTL-PyTorch]. Each task has its own copy of the backbone; after each selected stage s
every task's activation becomes a learned linear combination of all tasks' activations:

    x̃_i^s = Σ_j α_ij^s ⊙ x_j^s,    x_j^s: [B, C_s, H_s, W_s]

* ``granularity="channel"`` (default, MTL-PyTorch): α^s is [T, T, C_s], one weight per channel.
* ``granularity="scalar"``: α^s is [T, T], the paper's matrix of Eq. 1.
* ``init="balanced_rows"`` (default) [pymtl]: α_ii = 0.9 and α_ij = 0.1/(T−1), so rows sum to
  1 (for T = 2 the paper's 0.9/0.1); ``init="mtl_pytorch"``: every off-diagonal α_ij = 0.1,
  needed to reproduce the survey's PASCAL (T = 5) numbers [C:MTL-PyTorch].
* Stages: option ``stages`` (empty: every stage the backbone walks). SPEC's choice for ResNet
  is after layer1..layer4: ``stages = ["layer1", "layer2", "layer3", "layer4"]``.
* Optimiser: :meth:`lr_groups` gives α a 100× learning rate (``lr_multiplier``). MTL-PyTorch
  insists on SGD ("Adam seems to fail for cross-stitch") and starts every copy from ImageNet
  weights; the paper first trains the single-task networks [S].

Works with every backbone that has stages (convnet, resnet18/34/50, segnet, lenet); hrnet is
refused. Heads as in ``hps``, one per task on its own copy's output (image-level tasks get an
ImageHead and take part in the mixing like every task). Cost: T backbones, so parameters and
FLOPs are ≈ T single-task networks. Partition: see :mod:`pymtl.architectures._stagewise`.
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

__all__ = ["CrossStitch", "CrossStitchConfig", "CrossStitchUnit", "stitch_matrix"]

GRANULARITIES = ("channel", "scalar")
INITS = ("balanced_rows", "mtl_pytorch")


@attrs.frozen(kw_only=True)
class CrossStitchConfig(StagewiseConfig):
    """Options of ``cross_stitch`` (plus ``backbone``, ``stages``, ``lr_multiplier`` and the
    ``head_*`` options of :class:`~pymtl.architectures._stagewise.StagewiseConfig`).

    Attributes:
        granularity: ``channel`` (α [T, T, C_s]) or ``scalar`` (α [T, T]).
        init: ``balanced_rows`` (off-diagonal 0.1/(T−1)) or ``mtl_pytorch`` (off-diagonal 0.1).
    """

    granularity: str = attrs.field(default="channel", validator=attrs.validators.in_(GRANULARITIES))
    init: str = attrs.field(default="balanced_rows", validator=attrs.validators.in_(INITS))


def stitch_matrix(tasks: int, init: str) -> Tensor:
    """The initial [T, T] α: 0.9 on the diagonal, 0.1/(T−1) (``balanced_rows``) or 0.1
    (``mtl_pytorch``) elsewhere [pymtl][C:MTL-PyTorch]."""
    if init not in INITS:
        raise ValueError(f"cross-stitch init must be one of {INITS} (got {init!r})")
    off = 0.1 if init == "mtl_pytorch" else 0.1 / max(tasks - 1, 1)
    alpha = torch.full((tasks, tasks), off)
    alpha.fill_diagonal_(0.9)
    return alpha


class CrossStitchUnit(nn.Module):
    """One cross-stitch unit: T stage outputs [B, C, H, W] -> x̃_i = Σ_j α_ij ⊙ x_j [S].

    ``alpha`` is [T, T, C] (channel granularity) or [T, T] (scalar granularity).
    """

    def __init__(self, tasks: int, channels: int, *, granularity: str, init: str) -> None:
        super().__init__()
        if granularity not in GRANULARITIES:
            raise ValueError(
                f"cross-stitch granularity must be one of {GRANULARITIES} (got {granularity!r})"
            )
        alpha = stitch_matrix(tasks, init)
        if granularity == "channel":
            alpha = alpha[:, :, None].repeat(1, 1, channels)
        self.alpha = nn.Parameter(alpha)

    def forward(self, xs: Sequence[Tensor]) -> list[Tensor]:
        x = torch.stack(list(xs))  # [T, B, C, H, W]
        if self.alpha.dim() == 3:
            mixed = torch.einsum("ijc,jbchw->ibchw", self.alpha, x)
        else:
            mixed = torch.einsum("ij,jbchw->ibchw", self.alpha, x)
        return list(mixed.unbind(0))


class CrossStitch(StagewiseNet):
    """Cross-stitch network: T backbone copies, linearly mixed after selected stages [S].

    Reference: Misra et al., CVPR 2016; SPEC-methods §1.3 [C:MTL-PyTorch]. The units' α train
    at ``lr_multiplier`` × the run's rate (:meth:`lr_groups`).

    Args:
        tasks: the dataset's task declarations.
        in_channels: input image channels.
        backbone, stages, granularity, init, lr_multiplier, head_channels, head_rates,
            head_norm: see :class:`CrossStitchConfig`.

    Example:
        >>> from pymtl.tasks import DepthTask, NormalsTask
        >>> net = CrossStitch([DepthTask(name="depth"), NormalsTask(name="normals")])
        >>> net(torch.zeros(2, 3, 32, 32))["depth"].shape
        torch.Size([2, 1, 32, 32])
    """

    name = "cross_stitch"
    Config = CrossStitchConfig

    def __init__(
        self,
        tasks: Sequence[Task],
        in_channels: int = 3,
        *,
        backbone: BackboneSection | None = None,
        stages: Sequence[str] = (),
        granularity: str = "channel",
        init: str = "balanced_rows",
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
            self.units[s.name] = CrossStitchUnit(
                T, s.after_channels, granularity=granularity, init=init
            )


@hookimpl
def pymtl_register_architectures() -> list[type[Architecture]]:
    return [CrossStitch]
