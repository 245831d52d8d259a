"""The backbone contract [pymtl].

A backbone maps an image batch ``x`` [B, C_in, H, W] to features. It declares

* ``out_channels``: channels of :meth:`forward`'s output, [B, out_channels, H/s, W/s];
* ``output_stride``: ``s``, the spatial reduction of that output (1 for encoder-decoders that
  return full resolution; image-level nets return [B, out_channels, 1, 1] and stride 0);
* :meth:`multi_scale` (optional): a list of feature maps from fine to coarse, with
  ``scale_channels`` / ``scale_strides``, for multi-scale decoders (MTI-Net, PAD-Net);
* :meth:`walk` (optional, ``has_stages = True``): the network as a sequence of named stages,
  one :class:`Stage` at a time, so that architectures built from several copies of a backbone
  (cross-stitch, sluice, NDDR) can mix their activations between stages, and architectures
  that attend to a shared backbone (MTAN) can read each stage. :func:`lockstep` runs several
  walks side by side; :func:`probe_stages` reads the stages' shapes.

Weights come from a local ``.pt`` / ``.pth`` (a state dict, or a dict holding one under
``"state_dict"`` or ``"model"``) or ``.safetensors`` file named by the ``weights`` option;
nothing is downloaded.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from pymtl.component import Component
from pymtl.errors import ConfigError

__all__ = [
    "Backbone",
    "Stage",
    "StageShape",
    "Walk",
    "build_backbone",
    "coarsest",
    "drain",
    "keep",
    "load_weights",
    "lockstep",
    "probe_stages",
]


class Stage(NamedTuple):
    """One stage of a backbone's :meth:`~Backbone.walk`.

    Attributes:
        name: the stage's name, unique within the backbone (``"layer2"``, ``"down0"``, …).
        before: the input of the stage's last block (its first conv's output for plain
            conv stages) — the feature MTAN computes its attention masks from.
        after: the stage's output — what cross-stitch / NDDR / sluice mix and MTAN masks.
    """

    name: str
    before: Tensor
    after: Tensor


class StageShape(NamedTuple):
    """Channels and stride (relative to the input) of one stage's ``before`` and ``after``."""

    name: str
    before_channels: int
    after_channels: int
    before_stride: float
    after_stride: float


Walk = Generator[Stage, Tensor | None, Tensor]
"""A backbone pass that yields each :class:`Stage`; the caller may send back a tensor of the
same shape to replace that stage's ``after`` (``None`` keeps it); the generator returns the
backbone's output, exactly what :meth:`Backbone.forward` would return for the same sends."""


class Backbone(Component, nn.Module):
    """Base class of backbones.

    Subclasses set ``name`` and ``Config``, take ``in_channels`` first in ``__init__`` followed
    by their ``Config`` fields as keyword arguments, set ``out_channels`` and
    ``output_stride``, and implement :meth:`forward` (and :meth:`multi_scale` if they have
    several scales). A ``weights: str`` Config field (empty: random initialisation) is loaded
    by :meth:`from_config`.
    """

    kind: ClassVar[str] = "backbone"
    out_channels: int
    output_stride: int

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(
                f"backbone {self.name!r}: in_channels must be >= 1 (got {in_channels})"
            )
        self.in_channels = in_channels

    @classmethod
    def from_config(cls, config: Any, *, in_channels: int = 3) -> Backbone:
        """Build from a ``Config`` instance; load ``config.weights`` when it names a file."""
        fields = cls.config_fields(config)
        weights = fields.pop("weights", "")
        backbone = cls(in_channels, **fields)
        if weights:
            load_weights(backbone, weights)
        return backbone

    @abstractmethod
    def forward(self, x: Tensor) -> Tensor:
        """Features [B, out_channels, H / output_stride, W / output_stride]."""

    def multi_scale(self, x: Tensor) -> list[Tensor]:
        """Feature maps from fine to coarse (default: the single output of :meth:`forward`)."""
        return [self.forward(x)]

    has_stages: ClassVar[bool] = False
    """Whether :meth:`walk` is implemented."""

    def walk(self, x: Tensor) -> Walk:
        """The pass over ``x`` as a generator of :class:`Stage` (see :data:`Walk`).

        Backbones with ``has_stages = True`` implement it; with no replacement sent, the
        returned output equals ``forward(x)``.
        """
        raise ConfigError(
            f"backbone {self.name!r} has no sequential stages to walk (it is multi-branch or "
            "opaque); stage-wise architectures need one with has_stages = True, such as "
            "convnet, resnet18/34/50, segnet or lenet"
        )

    @property
    def scale_channels(self) -> tuple[int, ...]:
        return (self.out_channels,)

    @property
    def scale_strides(self) -> tuple[int, ...]:
        return (self.output_stride,)


def _read_state(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not (isinstance(obj, dict) and all(isinstance(v, Tensor) for v in obj.values())):
        raise ConfigError(
            f"weights file {str(path)!r} holds no state dict (got {type(obj).__name__}); expected "
            "a dict of tensors, or one under 'state_dict' or 'model'"
        )
    return obj


def load_weights(module: nn.Module, path: str | Path, *, strict: bool = True) -> None:
    """Load a local weights file into ``module``; a clear error for every mismatch."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"weights file {str(path)!r} does not exist (nothing is downloaded)")
    state = _read_state(path)
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if state[k].shape != own[k].shape
    ]
    if shapes or (strict and (missing or unexpected)):
        parts = [
            f"{len(missing)} missing (e.g. {missing[:3]})" if missing else "",
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})" if unexpected else "",
            "shape mismatches: " + "; ".join(shapes[:3]) if shapes else "",
        ]
        raise ConfigError(
            f"weights file {str(path)!r} does not fit {type(module).__name__}: "
            + ", ".join(p for p in parts if p)
        )
    module.load_state_dict(state, strict=strict)


def build_backbone(section: Any, *, in_channels: int = 3) -> Backbone:
    """The backbone a :class:`pymtl.config.BackboneSection` names (options default to its
    ``Config()`` when the section carries none)."""
    from pymtl.plugins import get_registry

    cls = get_registry().get("backbone", section.name)
    options = cls.Config() if section.options is None else section.options
    backbone: Backbone = cls.from_config(options, in_channels=in_channels)
    return backbone


def keep(sent: Tensor | None, x: Tensor) -> Tensor:
    """In a :meth:`Backbone.walk`: the tensor sent back for a stage, or the stage's own
    ``after`` when nothing was sent (``x = keep((yield Stage(name, before, x)), x)``)."""
    if sent is None:
        return x
    if sent.shape != x.shape:
        raise ValueError(
            f"walk: the tensor sent back for a stage has shape {tuple(sent.shape)}, expected the "
            f"stage output's shape {tuple(x.shape)}"
        )
    return sent


def drain(walk: Walk) -> Tensor:
    """Run ``walk`` to its end without replacing anything; its output."""
    stage, out = _send(walk, None)
    while stage is not None:
        stage, out = _send(walk, None)
    assert out is not None
    return out


def coarsest(backbone: Backbone, x: Tensor) -> tuple[Tensor, Tensor]:
    """The backbone's output for ``x`` and, from the same pass, its coarsest stage output
    (the first stage whose ``after`` has the fewest positions: SegNet's and the convnet's
    bottleneck, ResNet's last stage) — the ``"mid"`` feature layer of distillation."""
    walk = backbone.walk(x)
    best: Tensor | None = None
    stage, out = _send(walk, None)
    while stage is not None:
        if best is None or stage.after[0, 0].numel() < best[0, 0].numel():
            best = stage.after
        stage, out = _send(walk, None)
    assert out is not None
    assert best is not None
    return out, best


def _send(walk: Walk, value: Tensor | None) -> tuple[Stage | None, Tensor | None]:
    try:
        return walk.send(value), None
    except StopIteration as stop:
        return None, stop.value


def lockstep(
    walks: Sequence[Walk],
    mix: Callable[[Sequence[Stage]], Sequence[Tensor] | None],
) -> list[Tensor]:
    """Run several walks stage by stage; returns their outputs.

    At every stage, ``mix`` receives the walks' :class:`Stage` s (same names, in walk order)
    and returns the replacements of their ``after`` (one per walk) or ``None`` to keep them.
    The walks must have the same stages (copies of one backbone configuration).
    """
    stages: list[Stage | None] = []
    outs: list[Tensor | None] = []
    for w in walks:
        stage, out = _send(w, None)
        stages.append(stage)
        outs.append(out)
    while all(s is not None for s in stages):
        current = [s for s in stages if s is not None]
        if len({s.name for s in current}) != 1:
            raise ConfigError(f"lockstep: walks disagree on the stage: {[s.name for s in current]}")
        new = mix(current)
        sends = [None] * len(walks) if new is None else list(new)
        results = [_send(w, v) for w, v in zip(walks, sends, strict=True)]
        stages = [r[0] for r in results]
        outs = [r[1] for r in results]
    if any(s is not None for s in stages):
        raise ConfigError("lockstep: walks have different numbers of stages")
    return [o for o in outs if o is not None]


def probe_stages(backbone: Backbone, size: tuple[int, int] = (64, 64)) -> list[StageShape]:
    """The :class:`StageShape` of every stage of ``backbone``, read off one pass over a
    [1, C_in, *size] zero batch in eval mode (LeNet-like backbones use their ``input_size``)."""
    side = getattr(backbone, "input_size", None)
    if isinstance(side, int):
        size = (side, side)
    param = next(backbone.parameters(), None)
    x = torch.zeros(1, backbone.in_channels, *size, device=None if param is None else param.device)
    shapes = []
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            walk = backbone.walk(x)
            stage, _ = _send(walk, None)
            while stage is not None:
                b, a = stage.before, stage.after
                shapes.append(
                    StageShape(
                        stage.name,
                        b.shape[1],
                        a.shape[1],
                        size[0] / b.shape[-2],
                        size[0] / a.shape[-2],
                    )
                )
                stage, _ = _send(walk, None)
    finally:
        backbone.train(was_training)
    return shapes
