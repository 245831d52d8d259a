"""Small building blocks shared by pymtl's built-in backbones [pymtl].

Config validators with messages in pymtl's error shape, the conv-norm-ReLU unit, weight
initialisers and the resize used by decoders. Private to :mod:`pymtl.backbones`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import torch.nn.functional as F
from torch import Tensor, nn

_C = TypeVar("_C")
Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]

NORMS = ("batch", "group")
"""Normalisation layers a backbone may use: BatchNorm2d, or GroupNorm (see :func:`make_norm`)."""


def positive_int(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """attrs validator: ``value`` is an int >= 1 (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name!r} must be an integer >= 1 (got {value!r})")


def int_in(lo: int, hi: int) -> Validator:
    """attrs validator: ``value`` is an int in [lo, hi] (bools refused)."""

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(
                f"{attribute.name!r} must be an integer in [{lo}, {hi}] (got {value!r})"
            )

    return check


def one_of(*choices: Any) -> Validator:
    """attrs validator: ``value`` is one of ``choices``, of the same type (8.0 is not 8)."""

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not any(type(value) is type(c) and value == c for c in choices):
            expected = ", ".join(map(repr, choices))
            raise ValueError(f"{attribute.name!r} must be one of {expected} (got {value!r})")

    return check


def weights_path(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """attrs validator: ``value`` is a string (empty: random initialisation)."""
    if not isinstance(value, str):
        raise TypeError(f"{attribute.name!r} must be a file path string (got {value!r})")


def checked(config_cls: type[_C], backbone: str, **fields: Any) -> _C:
    """``config_cls(**fields)``, its validation errors prefixed with the backbone's name.

    Backbones call this in ``__init__`` so that direct construction is validated exactly like
    a config file.
    """
    try:
        return config_cls(**fields)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"backbone {backbone!r}: {exc}") from exc


def make_norm(kind: str, channels: int) -> nn.Module:
    """BatchNorm2d (``"batch"``) or GroupNorm (``"group"``) over ``channels``.

    GroupNorm uses ``gcd(32, channels)`` groups: 32 groups (Wu & He, ECCV 2018 [P]) whenever
    the width allows it, fewer for the narrow widths of tests.
    """
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    raise ValueError(f"unknown norm {kind!r}; expected one of {', '.join(NORMS)}")


def conv_bn_relu(
    cin: int, cout: int, *, stride: int = 1, bias: bool = False, norm: str = "batch"
) -> nn.Sequential:
    """3×3 convolution (padding 1), normalisation (:func:`make_norm`) and ReLU, as
    ``Sequential(conv, norm, relu)``."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias),
        make_norm(norm, cout),
        nn.ReLU(inplace=True),
    )


def init_kaiming(module: nn.Module) -> None:
    """He-normal conv weights (fan-out, ReLU gain), zero conv biases, norm weight 1 / bias 0.

    The initialisation of He et al. (ICCV 2015) [P] as torchvision's ResNet applies it.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def resize_to(x: Tensor, ref: Tensor) -> Tensor:
    """``x`` bilinearly resized (align_corners=False) to the spatial size of ``ref``."""
    if x.shape[-2:] == ref.shape[-2:]:
        return x
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)
