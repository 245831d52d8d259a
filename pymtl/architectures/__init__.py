"""Multi-task architectures; each registers through ``pymtl_register_architectures``."""

from pymtl.architectures.base import Architecture

__all__ = ["Architecture"]
