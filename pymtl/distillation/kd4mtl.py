"""KD4MTL (``kd4mtl``): match task-specific adaptors of the shared features to frozen
single-task teachers' features.

Reference: Li & Bilen, "Knowledge Distillation for Multi-task Learning", ECCV Workshops 2020,
Eq. 3–5 (SPEC-methods §3.1) [S][C:VICO-UoE/KD4MTL]. With φ_ℓ the features at layer ℓ of the
multi-task student (shared by all tasks) and of task t's single-task teacher,

    D_t = Σ_{ℓ ∈ layers} d(A_{t,ℓ}(φ_ℓ(x; θ^m)), φ_ℓ(x; θ^s_t)),
    d(a, b) = mean_{b,h,w} Σ_c (â − b̂)²,

where ``â`` is ``a`` divided by ``sqrt(Σ_c a² + 1e-6)`` at each (b, h, w) (``per_pixel``, the
reference code) or by ``sqrt(Σ_{c,h,w} a² + 1e-6)`` once per sample (``per_map``, the literal
reading of Eq. 4) [S][C]. The adaptor ``A_{t,ℓ}`` is a bias-free 1×1 conv C→C with Xavier-normal
init [C]; ablations: ``nonlinear`` (1×1 C→2C, ReLU, 1×1 2C→C, also bias-free and Xavier-normal
[pymtl]) and ``none`` (identity) [S]. Adaptors have their own optimiser group, lr 0.1 and weight
decay 5e-4 (the paper's Adam for adaptors) [S][C]. Image-level features [B, C] are read as
[B, C, 1, 1] maps [pymtl].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import attrs
import torch
from torch import Tensor, nn

from pymtl.distillation._common import check_same_shape, number, task_weights, weighted
from pymtl.distillation._common import weights_validator as _weights
from pymtl.distillation.base import DistillationLoss, Signals, TeacherKind
from pymtl.errors import PymtlError
from pymtl.hookspecs import hookimpl
from pymtl.tasks import Task

__all__ = ["KD4MTL", "KD4MTLConfig", "feature_distance"]

_LAYERS = {"last": ("last",), "mid+last": ("mid", "last")}
_EPS = 1e-6


def _channels(value: Any) -> tuple[int, ...]:
    items = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    if not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in items):
        raise ValueError(
            f"distillation loss 'kd4mtl': 'channels' must be a list of integers > 0, one per "
            f"layer (got {value!r})"
        )
    return items


@attrs.frozen(kw_only=True)
class KD4MTLConfig:
    """Options of ``kd4mtl``.

    Attributes:
        adaptor: ``"linear"`` (1×1 conv C→C), ``"nonlinear"`` (C→2C→C with ReLU) or ``"none"``.
        layers: ``"last"`` (the shared representation) or ``"mid+last"`` (also the coarsest
            backbone map, SegNet's bottleneck: the NYUv2 setting).
        normalize: ``"per_pixel"`` (over channels at each position) or ``"per_map"``.
        weights: λ_t per task name (1 for tasks not listed).
        adaptor_lr: learning rate of the adaptors' optimiser group.
        adaptor_weight_decay: weight decay of the adaptors' optimiser group.
        channels: feature channels per layer; empty: set by the engine
            (:meth:`KD4MTL.build_adaptors`).
    """

    adaptor: str = attrs.field(
        default="linear", validator=attrs.validators.in_(("linear", "nonlinear", "none"))
    )
    layers: str = attrs.field(default="last", validator=attrs.validators.in_(tuple(_LAYERS)))
    normalize: str = attrs.field(
        default="per_pixel", validator=attrs.validators.in_(("per_pixel", "per_map"))
    )
    weights: Mapping[str, float] = attrs.field(factory=dict, validator=_weights("kd4mtl"))
    adaptor_lr: float = attrs.field(default=0.1, validator=number("kd4mtl", low=0, open_low=True))
    adaptor_weight_decay: float = attrs.field(default=5e-4, validator=number("kd4mtl", low=0))
    channels: tuple[int, ...] = attrs.field(default=(), converter=_channels)


def feature_distance(a: Tensor, b: Tensor, normalize: str = "per_pixel") -> Tensor:
    """KD4MTL's distance ``mean_{b,h,w} Σ_c (â − b̂)²`` of two [B, C, H, W] maps [S][C].

    ``normalize="per_pixel"`` divides each (b, h, w) vector by ``sqrt(Σ_c x² + 1e-6)``;
    ``"per_map"`` divides each sample by ``sqrt(Σ_{c,h,w} x² + 1e-6)``.
    """
    if normalize not in ("per_pixel", "per_map"):
        raise ValueError(f"normalize must be 'per_pixel' or 'per_map' (got {normalize!r})")
    dims = (1,) if normalize == "per_pixel" else (1, 2, 3)
    a_hat = a / (a * a).sum(dim=dims, keepdim=True).add(_EPS).sqrt()
    b_hat = b / (b * b).sum(dim=dims, keepdim=True).add(_EPS).sqrt()
    return (a_hat - b_hat).pow(2).sum(dim=1).mean()


def _adaptor(kind: str, channels: int) -> nn.Module:
    if kind == "linear":
        module: nn.Module = nn.Conv2d(channels, channels, 1, bias=False)
    else:
        module = nn.Sequential(
            nn.Conv2d(channels, 2 * channels, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(2 * channels, channels, 1, bias=False),
        )
    for conv in module.modules():
        if isinstance(conv, nn.Conv2d):
            nn.init.xavier_normal_(conv.weight)
    return module


def _as_map(x: Tensor, where: str) -> Tensor:
    if x.dim() == 2:
        return x[:, :, None, None]
    if x.dim() != 4:
        raise ValueError(
            f"distillation loss 'kd4mtl': features at {where} must be [B, C, H, W] or [B, C] "
            f"(got shape {tuple(x.shape)})"
        )
    return x


class KD4MTL(DistillationLoss):
    """KD4MTL: task-specific adaptors of the shared features matched to single-task teachers [S].

    Reference: Li & Bilen, ECCV-W 2020 (Eq. 3–5). The engine calls :meth:`build_adaptors`
    with the feature channels of each layer once, before building the optimiser; the adaptors
    are then parameters of this module (in ``state_dict()``) optimised with
    :meth:`optimizer_groups`. The teacher features are detached.

    Args:
        tasks: the dataset's task declarations, in loss order.
        adaptor, layers, normalize, weights, adaptor_lr, adaptor_weight_decay, channels:
            see :class:`KD4MTLConfig` (non-empty ``channels`` builds the adaptors at once).

    Example:
        >>> from pymtl.tasks import DepthTask
        >>> loss = KD4MTL([DepthTask(name="depth")], channels=(8,))
        >>> z = torch.randn(2, 8, 4, 4)
        >>> s, t = Signals({"depth": [z]}, {}), Signals({"depth": [z.clone()]}, {})
        >>> loss(s, t, {}, 0.0).shape
        torch.Size([1])
    """

    name = "kd4mtl"
    Config = KD4MTLConfig
    teacher = TeacherKind.SINGLE_TASK
    reads_outputs = False

    def __init__(
        self,
        tasks: Sequence[Task],
        *,
        adaptor: str = "linear",
        layers: str = "last",
        normalize: str = "per_pixel",
        weights: Mapping[str, float] | None = None,
        adaptor_lr: float = 0.1,
        adaptor_weight_decay: float = 5e-4,
        channels: Sequence[int] = (),
    ) -> None:
        super().__init__(tasks)
        cfg = KD4MTLConfig(
            adaptor=adaptor,
            layers=layers,
            normalize=normalize,
            weights=dict(weights or {}),
            adaptor_lr=adaptor_lr,
            adaptor_weight_decay=adaptor_weight_decay,
            channels=tuple(channels),
        )
        self.adaptor, self.normalize = cfg.adaptor, cfg.normalize
        self.layers = _LAYERS[cfg.layers]
        self.lam = task_weights(self.name, cfg.weights, self.tasks)
        self.adaptor_lr, self.adaptor_weight_decay = cfg.adaptor_lr, cfg.adaptor_weight_decay
        self.adaptors = nn.ModuleList()  # [task][layer], filled by build_adaptors
        self.channels: tuple[int, ...] | None = None
        if cfg.channels:
            self.build_adaptors(cfg.channels)

    @property
    def built(self) -> bool:
        """Whether the loss is ready: adaptors built, or ``adaptor="none"``."""
        return self.adaptor == "none" or self.channels is not None

    def build_adaptors(
        self, channels: Sequence[int], *, device: torch.device | str | None = None
    ) -> None:
        """Create one adaptor per (task, layer); ``channels`` has one count per layer.

        Call once, before building the optimiser; a second call with the same channels does
        nothing, with different ones it is an error (the optimiser would hold stale tensors).
        """
        counts = _channels(channels)
        if len(counts) != len(self.layers):
            raise ValueError(
                f"distillation loss 'kd4mtl': build_adaptors needs one channel count per layer "
                f"{self.layers} (got {counts})"
            )
        if self.channels is not None:
            if counts != self.channels:
                raise PymtlError(
                    f"distillation loss 'kd4mtl': adaptors were built for channels "
                    f"{self.channels}; cannot rebuild them for {counts}"
                )
            return
        self.channels = counts
        if self.adaptor == "none":
            return
        for _ in self.tasks:
            self.adaptors.append(nn.ModuleList(_adaptor(self.adaptor, c) for c in counts))
        if device is not None:
            self.adaptors.to(device)

    def prepare(self, student: Signals, teacher: Signals) -> None:
        """Build the adaptors for the student's feature channels at each layer, on the
        features' device and in their dtype."""
        first = student.features[self.tasks[0]]
        self.build_adaptors([f.shape[1] for f in first])
        self.adaptors.to(device=first[0].device, dtype=first[0].dtype)

    def _require_built(self) -> None:
        if not self.built:
            raise PymtlError(
                f"distillation loss 'kd4mtl': adaptors are not built; call "
                f"build_adaptors(channels) with one channel count per layer {self.layers} "
                f"before the first forward and before optimizer_groups()"
            )

    def optimizer_groups(self) -> list[dict[str, Any]]:
        """One group: the adaptors' parameters with ``adaptor_lr`` and
        ``adaptor_weight_decay``; none for ``adaptor="none"``."""
        self._require_built()
        params = list(self.adaptors.parameters())
        if not params:
            return []
        return [
            {"params": params, "lr": self.adaptor_lr, "weight_decay": self.adaptor_weight_decay}
        ]

    def forward(
        self,
        student: Signals,
        teacher: Signals,
        batch: Mapping[str, Tensor],
        progress: float,
    ) -> Tensor:
        """[T] ``λ_t D_t``; ``batch`` and ``progress`` are not used."""
        self._require_built()
        terms = [self._task_term(i, student, teacher) for i in range(len(self.tasks))]
        return weighted(terms, self.lam)

    def _task_term(self, i: int, student: Signals, teacher: Signals) -> Tensor:
        task = self.tasks[i]
        s_feats, t_feats = student.features[task], teacher.features[task]
        for who, feats in (("student", s_feats), ("teacher", t_feats)):
            if len(feats) != len(self.layers):
                raise ValueError(
                    f"distillation loss 'kd4mtl': {who} features of task {task!r} must hold "
                    f"one map per layer {self.layers} (got {len(feats)})"
                )
        distances = []
        for j, layer in enumerate(self.layers):
            where = f"task {task!r}, layer {layer!r}"
            s, t = _as_map(s_feats[j], where), _as_map(t_feats[j], where).detach()
            check_same_shape(s, t, loss=self.name, where=where)
            if self.channels is not None and s.shape[1] != self.channels[j]:
                raise ValueError(
                    f"distillation loss 'kd4mtl': features at {where} have {s.shape[1]} "
                    f"channels; the adaptors were built for {self.channels[j]}"
                )
            if self.adaptor != "none":
                s = cast(nn.ModuleList, self.adaptors[i])[j](s)
            distances.append(feature_distance(s, t, self.normalize))
        return torch.stack(distances).sum()

    def extra_repr(self) -> str:
        return f"adaptor={self.adaptor!r}, layers={self.layers}, normalize={self.normalize!r}"


@hookimpl
def pymtl_register_distillation_losses() -> list[type[DistillationLoss]]:
    return [KD4MTL]
