"""Blocks shared by the decoder-focused architectures: PAD-Net, MTI-Net and PAP-Net
[S][C:MTL-PyTorch] (SPEC-methods §1.8, §1.9, §1.11).

Stable API (``papnet`` imports it; tensors are NCHW):

* :class:`InitialHeads` ``(in_channels, tasks, channels, *, block="bottleneck", norm="batch")``
  — per dense task, two residual blocks (Bottlenecks, or BasicBlocks for MTI-Net) giving the
  task features F_t^i, and a 1×1 conv giving the initial prediction ŷ_t^0 (its bias starts at
  ``task.head_bias()``). ``forward(x)`` takes one tensor (every task reads it) or a mapping
  task -> tensor and returns ``{task: F_t^i}`` [B, channels, h, w]; ``predict(features, size)``
  returns ``{task: up(ŷ_t^0)}`` [B, K_t, *size]. Ownership: ``.blocks`` (features read by the
  other tasks' messages) are shared; ``.predictors[t]`` belongs to task t.
* :func:`deep_supervision` ``(predictions, tag)`` — ``{aux_key(t, tag): y}``, the keys the
  training step adds to each task's loss (:mod:`pymtl.architectures.base`).
* :class:`Distillation` ``(tasks, channels, *, attention_source="sender")`` — PAD-Net's
  ``F_k^o = F_k^i + Σ_{l≠k} SA_{k,l}(F_l^i)``; ``.sa[k]`` belongs to task k.
* :class:`FinalHead` ``(in_channels, task, *, channels=None, norm="batch")`` — two Bottlenecks
  (in_channels -> channels, default in_channels), a 1×1 conv to K_t (bias from
  ``head_bias()``) and bilinear upsampling: ``forward(x, size)`` -> [B, K_t, *size]; it
  belongs to its task.
* :class:`SEBlock` ``(channels, reduction=16)`` and :class:`FPM`
  ``(tasks, channels, *, consecutive=False, norm="batch")`` — MTI-Net's squeeze-excitation and
  feature propagation module (entirely shared: it mixes tasks).
* :func:`bottleneck_pair`, :func:`basic_pair`, :func:`upsample`, :func:`checked_options`,
  :func:`dense_tasks`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pymtl.architectures.base import aux_key
from pymtl.architectures.heads import _init_bias
from pymtl.backbones.resnet import BasicBlock, Bottleneck
from pymtl.errors import ConfigError
from pymtl.tasks.base import Task

__all__ = [
    "ATTENTION_SOURCES",
    "FPM",
    "Distillation",
    "FinalHead",
    "InitialHeads",
    "SABlock",
    "SEBlock",
    "basic_pair",
    "bottleneck_pair",
    "checked_options",
    "deep_supervision",
    "dense_tasks",
    "upsample",
]

ATTENTION_SOURCES = ("sender", "receiver")
"""Whose features gate a PAD-Net message: the sender's (MTL-PyTorch) or the receiver's [P]."""

_C = TypeVar("_C")


def checked_options(config_cls: type[_C], arch: str, **fields: Any) -> _C:
    """``config_cls(**fields)``; a validation error becomes a ConfigError naming ``arch``."""
    try:
        return config_cls(**fields)
    except (TypeError, ValueError) as exc:
        text = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
        raise ConfigError(f"architecture {arch!r}: {text}") from exc


def dense_tasks(arch: str, tasks: Sequence[Task]) -> list[Task]:
    """The dense tasks, or a ConfigError when there are none to distil between."""
    dense = [t for t in tasks if t.dense]
    if not dense:
        raise ConfigError(
            f"architecture {arch!r} distils between dense tasks; got only image-level tasks "
            f"{[t.name for t in tasks]}; expected at least one dense task (or use 'hps')"
        )
    return dense


def upsample(y: Tensor, size: Sequence[int]) -> Tensor:
    """``y`` bilinearly resized (align_corners=False) to ``size`` = (H, W); as is if equal."""
    if tuple(y.shape[-2:]) == tuple(size):
        return y
    return F.interpolate(y, size=tuple(size), mode="bilinear", align_corners=False)


def bottleneck_pair(in_channels: int, channels: int, *, norm: str = "batch") -> nn.Sequential:
    """Two ResNet Bottlenecks in_channels -> channels (1×1 projection shortcut when the widths
    differ), PAD-Net's heads [C:MTL-PyTorch]; inner width channels / 4 (a multiple of 4)."""
    if channels < 4 or channels % 4:
        raise ValueError(
            f"bottleneck blocks need a width that is a multiple of 4 (got {channels}); "
            "the inner width is width / 4"
        )
    planes = channels // Bottleneck.expansion
    return nn.Sequential(
        Bottleneck(in_channels, planes, norm=norm), Bottleneck(channels, planes, norm=norm)
    )


def basic_pair(in_channels: int, channels: int, *, norm: str = "batch") -> nn.Sequential:
    """Two ResNet BasicBlocks in_channels -> channels (1×1 projection shortcut when the widths
    differ), MTI-Net's per-scale initial module [C:MTL-PyTorch]."""
    return nn.Sequential(
        BasicBlock(in_channels, channels, norm=norm), BasicBlock(channels, channels, norm=norm)
    )


def _predictor(channels: int, task: Task) -> nn.Conv2d:
    conv = nn.Conv2d(channels, task.channels, 1)
    _init_bias(conv, task)
    return conv


class InitialHeads(nn.Module):
    """Per-task initial heads with deep supervision (PAD-Net, MTI-Net, PAP-Net) [S][C:MTL-PyTorch].

    Args:
        in_channels: channels of the input features.
        tasks: the dense tasks (image-level tasks have no initial head).
        channels: width of the task features F_t^i.
        block: ``bottleneck`` (PAD-Net, PAP-Net) or ``basic`` (MTI-Net).
        norm: ``batch`` or ``group`` normalisation in the blocks.
    """

    def __init__(
        self,
        in_channels: int,
        tasks: Sequence[Task],
        channels: int,
        *,
        block: str = "bottleneck",
        norm: str = "batch",
    ) -> None:
        super().__init__()
        if block not in ("bottleneck", "basic"):
            raise ValueError(f"unknown block {block!r}; expected 'bottleneck' or 'basic'")
        if flat := [t.name for t in tasks if not t.dense]:
            raise ValueError(f"initial heads are for dense tasks; got image-level tasks {flat}")
        pair = bottleneck_pair if block == "bottleneck" else basic_pair
        self.blocks = nn.ModuleDict({t.name: pair(in_channels, channels, norm=norm) for t in tasks})
        self.predictors = nn.ModuleDict({t.name: _predictor(channels, t) for t in tasks})

    def forward(self, x: Tensor | Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Task features ``{t: F_t^i}`` from one shared input or one input per task."""
        return {t: block(x if isinstance(x, Tensor) else x[t]) for t, block in self.blocks.items()}

    def predict(self, features: Mapping[str, Tensor], size: Sequence[int]) -> dict[str, Tensor]:
        """Initial predictions ``{t: up(ŷ_t^0)}`` at ``size``, keyed by task name."""
        return {t: upsample(conv(features[t]), size) for t, conv in self.predictors.items()}


def deep_supervision(predictions: Mapping[str, Tensor], tag: str) -> dict[str, Tensor]:
    """``{aux_key(t, tag): y}``: the predictions as deep-supervision outputs [pymtl]."""
    return {aux_key(t, tag): y for t, y in predictions.items()}


class SABlock(nn.Module):
    """Message ``Conv3×3(x) ⊙ σ(Conv3×3'(g))``, no biases; ``g = x`` unless given (PAD-Net's
    "receiver" attention) [S][C:MTL-PyTorch]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.gate = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x: Tensor, gate_input: Tensor | None = None) -> Tensor:
        g = x if gate_input is None else gate_input
        out: Tensor = self.conv(x) * torch.sigmoid(self.gate(g))
        return out


class Distillation(nn.Module):
    """PAD-Net multi-modal distillation (survey Eq. 2) [S][C:MTL-PyTorch].

    ``F_k^o = F_k^i + Σ_{l≠k} SA_{k,l}(F_l^i)``. With ``attention_source="sender"`` the gate of
    SA_{k,l} reads F_l^i (MTL-PyTorch); with ``"receiver"`` it reads F_k^i (original paper [P]).

    Args:
        tasks: names of the tasks that exchange messages.
        channels: width of every F_t^i.
        attention_source: ``sender`` or ``receiver``.
    """

    def __init__(
        self, tasks: Sequence[str], channels: int, *, attention_source: str = "sender"
    ) -> None:
        super().__init__()
        if attention_source not in ATTENTION_SOURCES:
            raise ValueError(
                f"attention_source must be one of {', '.join(ATTENTION_SOURCES)} "
                f"(got {attention_source!r})"
            )
        self.attention_source = attention_source
        self.sa = nn.ModuleDict(
            {k: nn.ModuleDict({l: SABlock(channels) for l in tasks if l != k}) for k in tasks}
        )

    def forward(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Distilled features ``{k: F_k^o}``."""
        out = {}
        for k, blocks in self.sa.items():
            y = features[k]
            for l, sa in cast(nn.ModuleDict, blocks).items():
                gate = features[l] if self.attention_source == "sender" else features[k]
                y = y + sa(features[l], gate)
            out[k] = y
        return out


class FinalHead(nn.Module):
    """Final task head: two Bottlenecks, a 1×1 conv to K_t, bilinear upsampling [S][C:MTL-PyTorch].

    Args:
        in_channels: channels of the (distilled) task features.
        task: the dense task predicted; the 1×1 conv's bias starts at ``task.head_bias()``.
        channels, norm: width of the bottlenecks (default ``in_channels``), ``batch``/``group``.
    """

    def __init__(
        self, in_channels: int, task: Task, *, channels: int | None = None, norm: str = "batch"
    ) -> None:
        super().__init__()
        width = channels or in_channels
        self.blocks = bottleneck_pair(in_channels, width, norm=norm)
        self.classifier = _predictor(width, task)

    def forward(self, x: Tensor, size: Sequence[int]) -> Tensor:
        return upsample(self.classifier(self.blocks(x)), size)


class SEBlock(nn.Module):
    """Squeeze-excitation: GAP -> FC C/r -> ReLU -> FC C -> σ -> channel scale [S][C:MTL-PyTorch].

    The hidden width is ``max(1, channels // reduction)`` [pymtl] (narrow test nets)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        scale: Tensor = self.fc(x.mean(dim=(2, 3)))
        return x * scale[:, :, None, None]


class FPM(nn.Module):
    """MTI-Net feature propagation module [S][C:MTL-PyTorch] (SPEC-methods §1.11).

    ``Φ = concat_t F_t``; ``S = f(Φ)`` with f = BasicBlock(TC→TC/4) → BasicBlock(TC/4) →
    Conv1×1(TC/4→TC); ``Ψ = Mask(S) ⊙ Φ``; ``R = BasicBlock(TC→C)(Ψ)``; output
    ``SE_t(R) + F_t``. The mask is a softmax over tasks for every channel c (the stated
    semantics), or with ``consecutive=True`` over each group of T consecutive channels of the
    concatenation (MTL-PyTorch's reshape, for parity). TC/4 is at least 1 [pymtl].

    Args:
        tasks: names of the dense tasks, in concatenation order.
        channels: C, the width of every F_t.
        consecutive: the parity grouping (``mtl_pytorch_channel_grouping``).
        norm: ``batch`` or ``group``.
    """

    def __init__(
        self, tasks: Sequence[str], channels: int, *, consecutive: bool = False, norm: str = "batch"
    ) -> None:
        super().__init__()
        self.tasks = tuple(tasks)
        self.consecutive = consecutive
        tc = len(self.tasks) * channels
        mid = max(1, tc // 4)
        self.f = nn.Sequential(
            BasicBlock(tc, mid, norm=norm), BasicBlock(mid, mid, norm=norm), nn.Conv2d(mid, tc, 1)
        )
        self.reduce = BasicBlock(tc, channels, norm=norm)
        self.se = nn.ModuleDict({t: SEBlock(channels) for t in self.tasks})

    def mask(self, s: Tensor) -> Tensor:
        """The attention mask of ``s`` [B, T·C, H, W] (task-major), same shape, summing to 1
        over tasks per channel (or over T consecutive channels with ``consecutive``)."""
        B, TC, H, W = s.shape
        T = len(self.tasks)
        if self.consecutive:
            return torch.softmax(s.reshape(B, TC // T, T, H, W), dim=2).reshape(B, TC, H, W)
        return torch.softmax(s.reshape(B, T, TC // T, H, W), dim=1).reshape(B, TC, H, W)

    def forward(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Propagated features ``{t: SE_t(R) + F_t}``."""
        phi = torch.cat([features[t] for t in self.tasks], dim=1)
        r = self.reduce(self.mask(self.f(phi)) * phi)
        return {t: self.se[t](r) + features[t] for t in self.tasks}
