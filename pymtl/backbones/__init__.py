"""Backbones (feature extractors) architectures build on; each registers through
``pymtl_register_backbones``."""

from pymtl.backbones.base import Backbone, build_backbone, load_weights

__all__ = ["Backbone", "build_backbone", "load_weights"]
