"""Single-task learning (``stl``): one independent network per task — the baseline.

Reference: SPEC-methods §1.1 [S]. Each task gets its own backbone and head (the same ones
``hps`` uses, so Δ_MTL compares like with like); nothing is shared, so training them in one
run with equal weights is exactly training each alone (the optimisers act per parameter).
``pymtl baselines`` trains it and stores the per-task results Δ_MTL is measured against.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import cast

import attrs
from torch import Tensor, nn

from pymtl.architectures.base import Architecture
from pymtl.architectures.heads import make_head
from pymtl.architectures.hps import HardSharingConfig, _default_backbone
from pymtl.backbones.base import Backbone, build_backbone, coarsest
from pymtl.config import BackboneSection
from pymtl.distillation.base import Signals
from pymtl.errors import ConfigError
from pymtl.hookspecs import hookimpl
from pymtl.tasks.base import Task


@attrs.frozen(kw_only=True)
class SingleTaskConfig(HardSharingConfig):
    """Options of ``stl``: the same as ``hps`` (backbone and heads), one copy per task."""


class _TaskNet(nn.Module):
    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.backbone: Backbone = backbone
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

    def signals(self, x: Tensor, layers: Sequence[str] = ()) -> Signals:
        """Each task's own network's features at ``layers`` (``"last"``: its backbone output,
        ``"mid"``: its backbone's coarsest stage output) and outputs: single-task teachers."""
        if not layers:
            return Signals({}, self(x))
        unknown = sorted(set(layers) - {"last", "mid"})
        if unknown or ("mid" in layers and not self._stages):
            raise ConfigError(
                f"architecture 'stl' exposes layers 'last' and, on a backbone with stages, "
                f"'mid'; got {list(layers)}"
            )
        features, outputs = {}, {}
        for name in self.tasks:
            net = cast(_TaskNet, self.nets[name])
            if "mid" in layers:
                z, mid = coarsest(net.backbone, x)
                features[name] = [z if layer == "last" else mid for layer in layers]
            else:
                z = net.backbone(x)
                features[name] = [z for _ in layers]
            outputs[name] = net.head(z, x.shape[-2:])
        return Signals(features, outputs)

    @property
    def _stages(self) -> bool:
        return all(cast(_TaskNet, net).backbone.has_stages for net in self.nets.values())

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return iter(())

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        return self.nets[task].parameters()


@hookimpl
def pymtl_register_architectures() -> list[type[Architecture]]:
    return [SingleTask]
