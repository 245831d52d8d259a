"""Datasets; each registers through ``pymtl_register_datasets``."""

from pymtl.data.base import Dataset

__all__ = ["Dataset"]
