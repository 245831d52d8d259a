"""The backbone contract [pymtl].

A backbone maps an image batch ``x`` [B, C_in, H, W] to features. It declares

* ``out_channels``: channels of :meth:`forward`'s output, [B, out_channels, H/s, W/s];
* ``output_stride``: ``s``, the spatial reduction of that output (1 for encoder-decoders that
  return full resolution; image-level nets return [B, out_channels, 1, 1] and stride 0);
* :meth:`multi_scale` (optional): a list of feature maps from fine to coarse, with
  ``scale_channels`` / ``scale_strides``, for multi-scale decoders (MTI-Net, PAD-Net).

Weights come from a local ``.pt`` / ``.pth`` (a state dict, or a dict holding one under
``"state_dict"`` or ``"model"``) or ``.safetensors`` file named by the ``weights`` option;
nothing is downloaded.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from pymtl.component import Component
from pymtl.errors import ConfigError

__all__ = ["Backbone", "build_backbone", "load_weights"]


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
