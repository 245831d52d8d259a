"""Single-task learning (``stl``): one independent network per task — the baseline.

Reference: SPEC-methods §1.1 [S]. Each task gets its own backbone and head (the same ones
``hps`` uses, so Δ_MTL compares like with like); nothing is shared, so training them in one
run with equal weights is exactly training each alone (the optimisers act per parameter).
``pymtl baselines`` trains it and stores the per-task results Δ_MTL is measured against.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import attrs
from torch import Tensor, nn

from pymtl.architectures.base import Architecture
from pymtl.architectures.heads import make_head
from pymtl.architectures.hps import HardSharingConfig, _default_backbone
from pymtl.backbones.base import build_backbone
from pymtl.config import BackboneSection
from pymtl.hookspecs import hookimpl
from pymtl.tasks.base import Task


@attrs.frozen(kw_only=True)
class SingleTaskConfig(HardSharingConfig):
    """Options of ``stl``: the same as ``hps`` (backbone and heads), one copy per task."""


class _TaskNet(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: Tensor, size: Sequence[int]) -> Tensor:
        out: Tensor = self.head(self.backbone(x), size)
        return out


class SingleTask(Architecture):
    """One network (backbone + head) per task, nothing shared: the STL baseline [S].

    Reference: SPEC-methods §1.1; the survey's single-task baselines. ``shared_parameters``
    is empty and there is no shared representation.

    Args:
        tasks: the dataset's task declarations.
        in_channels: input image channels.
        backbone, head_channels, head_rates, head_norm: see :class:`SingleTaskConfig`.

    Example:
        >>> from pymtl.tasks import DepthTask, NormalsTask
        >>> net = SingleTask([DepthTask(name="depth"), NormalsTask(name="normals")])
        >>> sorted(net(torch.zeros(1, 3, 32, 32)))
        ['depth', 'normals']
    """

    name = "stl"
    Config = SingleTaskConfig
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
    ) -> None:
        super().__init__(tasks, in_channels)
        section = backbone or _default_backbone()
        nets = {}
        for t in self.task_specs:
            net = build_backbone(section, in_channels=in_channels)
            head = make_head(
                net.out_channels,
                t,
                channels=head_channels,
                rates=tuple(head_rates),
                norm=head_norm,
            )
            nets[t.name] = _TaskNet(net, head)
        self.nets = nn.ModuleDict(nets)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        size = x.shape[-2:]
        return {name: net(x, size) for name, net in self.nets.items()}

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return iter(())

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        return self.nets[task].parameters()


@hookimpl
def pymtl_register_architectures() -> list[type[Architecture]]:
    return [SingleTask]
