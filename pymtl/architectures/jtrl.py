"""Joint Task-Recursive Learning (``jtrl``): two dense tasks predicted alternately, coarse to fine.

Reference: SPEC-methods §1.10 [S][P][R]; Zhang et al., "Joint Task-Recursive Learning for
Semantic Segmentation and Depth Estimation", ECCV 2018 [P]; the survey (Vandenhende et al.,
TPAMI 2021) lists it and states that it cannot be extended beyond two tasks [S].

Idea [S][P]. With tasks A and B (the dataset's task order; depth and segmentation in the
paper), the states A_1, B_1, A_2, B_2, … are computed one after the other, one pair per
backbone scale from the coarsest to the finest. Each new state is made by a Task-Attentional
Module (TAM) from the task's own earlier states ("experience") and the other task's latest
state, and every state predicts its task (deep supervision).

State k (pair p = k // 2, task t = A if k is even else B, scale s_p) [R] — the exact layers
were not recoverable:

* ``a = ReLU(BN(Conv1×1([up(t's earlier states); F_p])))`` — the task's earlier states, resized
  to s_p, concatenated with the backbone feature F_p of scale s_p, projected to C channels
  (this is how the backbone enters every state [R]);
* ``b = up(latest state of the other task)``; the very first state has none, so its TAM skips
  the gate (u = a) [R];
* balance gate ``γ = σ(Conv3×3([a; b]))``, ``u = γ ⊙ a + (1 − γ) ⊙ b``;
* hourglass attention ``m = σ(Up(Conv(Down(u))))`` (Down: 2×2 max-pool, Conv: 3×3 conv-BN-ReLU
  then 1×1 conv, Up: bilinear to u's size), ``v = u + u ⊙ m``;
* state ``S_k = ResBlock(v)`` (two 3×3 conv-BN, identity shortcut), prediction
  ``ŷ_k = Conv1×1(S_k)`` upsampled to the input.

Scales [R]: the ``scales`` finest of the backbone's ``multi_scale`` maps, visited coarsest
first (SPEC: strides 16, 8, 4, 2); ``scales = 0`` takes all of them up to 4.

Outputs: the final predictions are those of the last two states; in training mode the earlier
states' predictions are returned as ``aux_key(task, f"state{k}")`` (k = 0 … 2S−3) [pymtl] —
the last two states are supervised through the task keys themselves, so no loss is counted
twice.

Partition (honest, by what each output depends on): every state but the last feeds the other
task's next state, so the backbone and the state modules of states 0 … 2S−2 are shared; each
state's prediction conv feeds only its own task's loss, so it is that task's; the last state
(task B's) feeds nothing else, so its whole module is task B's.

Backbones: any with at least 2 ``multi_scale`` maps — convnet (depth ≥ 2 or output stride 1,
default), resnet18/34/50, segnet, hrnet; not lenet. Cost: 2S TAMs of width C; the finest pair
dominates (its states run at the finest selected scale).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pymtl.architectures._distill import checked_options
from pymtl.architectures.base import Architecture, aux_key
from pymtl.architectures.heads import _init_bias
from pymtl.architectures.hps import _default_backbone
from pymtl.backbones._common import int_in, make_norm, one_of, positive_int
from pymtl.backbones.base import Backbone, build_backbone
from pymtl.config import BackboneSection
from pymtl.errors import ConfigError
from pymtl.hookspecs import hookimpl
from pymtl.tasks.base import Task

__all__ = ["JTRL", "JTRLConfig", "TaskAttention"]

MAX_DEFAULT_SCALES = 4
MAX_SCALES = 8
WORKING_BACKBONES = "convnet (depth >= 2), resnet18, resnet34, resnet50, segnet, hrnet"


def _conv_norm(cin: int, cout: int, k: int, norm: str, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)]
    layers.append(make_norm(norm, cout))
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _resize(x: Tensor, size: Sequence[int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


@attrs.frozen(kw_only=True)
class JTRLConfig:
    """Options of ``jtrl``.

    Attributes:
        backbone: a multi-scale backbone (at least 2 ``multi_scale`` maps).
        head_channels: C, the width of every state and TAM.
        head_norm: ``batch`` or ``group`` normalisation in the state modules.
        scales: state pairs, one per backbone scale from the finest ``scales`` maps, coarsest
            first; 0: all the backbone's scales, at most 4.
    """

    backbone: BackboneSection = attrs.field(factory=_default_backbone)
    head_channels: int = attrs.field(default=16, validator=positive_int)
    head_norm: str = attrs.field(default="batch", validator=one_of("batch", "group"))
    scales: int = attrs.field(default=0, validator=int_in(0, MAX_SCALES))


class TaskAttention(nn.Module):
    """Task-Attentional Module [R]: gate two states, then an hourglass self-attention.

    ``forward(a, b)`` with a, b [B, C, h, w] returns ``u + u ⊙ m`` where
    ``γ = σ(Conv3×3([a; b]))``, ``u = γ ⊙ a + (1 − γ) ⊙ b`` and ``m = σ(Up(Conv(Down(u))))``.
    With ``gated = False`` (the first state, which has no other-task state) ``u = a``.
    """

    def __init__(self, channels: int, *, norm: str = "batch", gated: bool = True) -> None:
        super().__init__()
        self.gate = nn.Conv2d(2 * channels, channels, 3, padding=1) if gated else None
        self.down = nn.MaxPool2d(2, ceil_mode=True)
        self.attend = nn.Sequential(
            _conv_norm(channels, channels, 3, norm), nn.Conv2d(channels, channels, 1)
        )

    def forward(self, a: Tensor, b: Tensor | None = None) -> Tensor:
        if self.gate is None:
            u = a
        else:
            if b is None:
                raise ValueError("TaskAttention: a gated module needs the other task's state b")
            gamma = torch.sigmoid(self.gate(torch.cat([a, b], dim=1)))
            u = gamma * a + (1 - gamma) * b
        m = torch.sigmoid(_resize(self.attend(self.down(u)), u.shape[-2:]))
        return u + u * m


class _ResBlock(nn.Module):
    """ReLU(x + BN(Conv3×3(ReLU(BN(Conv3×3(x))))))."""

    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv_norm(channels, channels, 3, norm),
            _conv_norm(channels, channels, 3, norm, relu=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x + self.body(x))


class _State(nn.Module):
    """One recursive state: experience projection, TAM and residual block [R]."""

    def __init__(self, in_channels: int, channels: int, norm: str, gated: bool) -> None:
        super().__init__()
        self.project = _conv_norm(in_channels, channels, 1, norm)
        self.tam = TaskAttention(channels, norm=norm, gated=gated)
        self.block = _ResBlock(channels, norm)

    def forward(self, own: Sequence[Tensor], feature: Tensor, other: Tensor | None) -> Tensor:
        size = feature.shape[-2:]
        a = self.project(torch.cat([_resize(s, size) for s in own] + [feature], dim=1))
        b = None if other is None else _resize(other, size)
        out: Tensor = self.block(self.tam(a, b))
        return out


def _check_tasks(tasks: Sequence[Task]) -> None:
    names = ", ".join(repr(t.name) for t in tasks)
    if len(tasks) != 2:
        raise ConfigError(
            f"architecture 'jtrl' needs exactly 2 dense tasks (got {len(tasks)}: {names}); its "
            "alternating task recursion cannot be extended beyond two tasks (SPEC-methods §1.10)"
        )
    for t in tasks:
        if not t.dense:
            raise ConfigError(
                f"architecture 'jtrl' needs exactly 2 dense tasks, but task {t.name!r} is "
                f"image-level ({t.kind}); expected two dense tasks such as depth and segmentation"
            )


def _pick_scales(backbone: Backbone, scales: int, section: BackboneSection) -> int:
    n = len(backbone.scale_channels)
    if n < 2:
        raise ConfigError(
            f"architecture 'jtrl' needs a multi-scale backbone (at least 2 multi_scale maps), "
            f"but backbone {section.name!r} has {n}; backbones that work: {WORKING_BACKBONES}"
        )
    if scales > n:
        strides = ", ".join(map(str, backbone.scale_strides))
        raise ConfigError(
            f"architecture 'jtrl': scales = {scales}, but backbone {section.name!r} has {n} "
            f"scales (strides {strides}); expected 0 (all, at most {MAX_DEFAULT_SCALES}) or 1..{n}"
        )
    return scales or min(n, MAX_DEFAULT_SCALES)


class JTRL(Architecture):
    """Joint Task-Recursive Learning: alternating TAM states of two dense tasks [S][P][R].

    Reference: Zhang et al., ECCV 2018 [P]; SPEC-methods §1.10. See the module docstring for
    the equations, the partition and the backbones it works with.

    Args:
        tasks: exactly two dense task declarations (task A, task B in this order).
        in_channels: input image channels.
        backbone, head_channels, head_norm, scales: see :class:`JTRLConfig`.

    Raises:
        ConfigError: not exactly two dense tasks, a backbone with fewer than 2 scales, or more
            ``scales`` than the backbone has.

    Example:
        >>> from pymtl.tasks import DepthTask, SegmentationTask
        >>> net = JTRL([DepthTask(name="depth"), SegmentationTask(name="seg", num_classes=3)])
        >>> net.eval()(torch.zeros(1, 3, 32, 32))["seg"].shape
        torch.Size([1, 3, 32, 32])
    """

    name = "jtrl"
    Config = JTRLConfig
    has_shared_representation = False

    def __init__(
        self,
        tasks: Sequence[Task],
        in_channels: int = 3,
        *,
        backbone: BackboneSection | None = None,
        head_channels: int = 16,
        head_norm: str = "batch",
        scales: int = 0,
    ) -> None:
        _check_tasks(tasks)
        super().__init__(tasks, in_channels)
        section = backbone or _default_backbone()
        checked_options(
            JTRLConfig,
            self.name,
            backbone=section,
            head_channels=head_channels,
            head_norm=head_norm,
            scales=scales,
        )
        self.backbone = build_backbone(section, in_channels=in_channels)
        self.num_scales = _pick_scales(self.backbone, scales, section)
        widths = self.backbone.scale_channels[: self.num_scales][::-1]  # coarsest first
        C = head_channels
        states, heads = [], []
        for k in range(2 * self.num_scales):
            p, task = divmod(k, 2)
            states.append(_State(p * C + widths[p], C, head_norm, gated=k > 0))
            heads.append(nn.Conv2d(C, self.task_specs[task].channels, 1))
            _init_bias(heads[-1], self.task_specs[task])
        self.states = nn.ModuleList(states)
        self.heads = nn.ModuleList(heads)

    def state_tasks(self) -> list[str]:
        """The task of every state, in the order they are computed (A, B, A, B, …)."""
        return [self.tasks[k % 2] for k in range(len(self.states))]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        feats = self.backbone.multi_scale(x)[: self.num_scales][::-1]  # coarsest first
        size, last = x.shape[-2:], len(self.states) - 2
        history: dict[str, list[Tensor]] = {t: [] for t in self.tasks}
        latest: Tensor | None = None
        out: dict[str, Tensor] = {}
        for k, task in enumerate(self.state_tasks()):
            latest = self.states[k](history[task], feats[k // 2], latest)
            history[task].append(latest)
            if k >= last or self.training:
                key = task if k >= last else aux_key(task, f"state{k}")
                out[key] = _resize(self.heads[k](latest), size)
        return out

    def _own(self, task: str) -> list[int]:
        """Indices of the states whose module belongs to ``task`` alone (the last one, B's)."""
        return [len(self.states) - 1] if task == self.tasks[1] else []

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.backbone.parameters()
        for state in self.states[: len(self.states) - 1]:
            yield from state.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        if task not in self.tasks:
            raise KeyError(f"architecture 'jtrl' has no task {task!r} (tasks: {self.tasks})")
        mine = [k for k, owner in enumerate(self.state_tasks()) if owner == task]
        for k in mine[::-1]:  # the final prediction conv first, as split_outputs orders outputs
            yield from self.heads[k].parameters()
        for k in self._own(task):
            yield from self.states[k].parameters()


@hookimpl
def pymtl_register_architectures() -> list[type[Architecture]]:
    return [JTRL]
