"""Hard parameter sharing (``hps``): one shared backbone, one head per task.

Reference: SPEC-methods §1.2 [S] — the "MTL baseline" of the survey (Vandenhende et al., TPAMI
2021) and of MTAN's NYUv2 experiments: every task reads the same backbone features Z, and task
t's head maps Z to its output. Z is the shared representation (``encode``) that representation-
level balancers and feature distillation use.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import attrs
from torch import Tensor, nn

from pymtl.architectures.base import Architecture
from pymtl.architectures.heads import make_head
from pymtl.backbones.base import build_backbone, coarsest
from pymtl.config import BackboneSection
from pymtl.hookspecs import hookimpl
from pymtl.tasks.base import Task


def _default_backbone() -> BackboneSection:
    from pymtl.backbones.convnet import ConvNet

    return BackboneSection(name=ConvNet.name, options=ConvNet.Config())


def _rates(instance: Any, attribute: attrs.Attribute[Any], value: tuple[int, ...]) -> None:
    if any(not isinstance(r, int) or r < 1 for r in value):
        raise ValueError(f"'head_rates' must be positive integers (got {value!r})")


@attrs.frozen(kw_only=True)
class HardSharingConfig:
    """Options of ``hps``.

    Attributes:
        backbone: the shared backbone (``[arch.backbone] name = "resnet18"`` and its options).
        head_channels: width of every dense head.
        head_rates: dilation rates of the dense heads' 3×3 ASPP branches.
        head_norm: ``batch`` or ``group`` normalisation in the dense heads.
    """

    backbone: BackboneSection = attrs.field(factory=_default_backbone)
    head_channels: int = attrs.field(default=16, validator=attrs.validators.gt(0))
    head_rates: tuple[int, ...] = attrs.field(default=(2, 4), converter=tuple, validator=_rates)
    head_norm: str = attrs.field(
        default="batch", validator=attrs.validators.in_(("batch", "group"))
    )


class HardSharing(Architecture):
    """Hard parameter sharing: a shared backbone and one head per task [S].

    Reference: Caruana 1997; the survey's MTL baseline (SPEC-methods §1.2). Heads are chosen
    by task kind (:mod:`pymtl.architectures.heads`).

    Args:
        tasks: the dataset's task declarations.
        in_channels: input image channels.
        backbone, head_channels, head_rates, head_norm: see :class:`HardSharingConfig`.

    Example:
        >>> from pymtl.tasks import DepthTask
        >>> net = HardSharing([DepthTask(name="depth")])
        >>> net(torch.zeros(2, 3, 32, 32))["depth"].shape
        torch.Size([2, 1, 32, 32])
    """

    name = "hps"
    Config = HardSharingConfig

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
        self.backbone = build_backbone(backbone or _default_backbone(), in_channels=in_channels)
        c = self.backbone.out_channels
        self.heads = nn.ModuleDict(
            {
                t.name: make_head(
                    c, t, channels=head_channels, rates=tuple(head_rates), norm=head_norm
                )
                for t in self.task_specs
            }
        )

    def encode(self, x: Tensor) -> Tensor:
        z: Tensor = self.backbone(x)
        return z

    def decode(self, z: Tensor, size: Sequence[int]) -> dict[str, Tensor]:
        return {name: head(z, size) for name, head in self.heads.items()}

    def encode_layers(self, x: Tensor, layers: Sequence[str]) -> tuple[Tensor, dict[str, Tensor]]:
        """Z, plus ``"mid"``: the backbone's coarsest stage output (:func:`coarsest`)."""
        if "mid" not in layers:
            return super().encode_layers(x, layers)
        if not self.backbone.has_stages:
            super().encode_layers(x, layers)  # the contract's error: no 'mid' to expose
        z, mid = coarsest(self.backbone, x)
        return z, {"mid": mid}

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return self.backbone.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        return self.heads[task].parameters()


@hookimpl
def pymtl_register_architectures() -> list[type[Architecture]]:
    return [HardSharing]
