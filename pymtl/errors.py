"""Exceptions raised by pymtl.

Every message has one shape: what went wrong, what was given, what was expected, and where
(the config path, the plugin's distribution, the op's argument).
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataFormatError",
    "OpError",
    "PluginError",
    "PymtlError",
    "UnknownComponentError",
]


class PymtlError(Exception):
    """Base class of every error pymtl raises on purpose."""


class PluginError(PymtlError):
    """A plugin could not be loaded, or registered something invalid or clashing."""


class UnknownComponentError(PluginError, LookupError):
    """A component name that no loaded plugin registers."""


class ConfigError(PymtlError, ValueError):
    """A configuration file, section, key or value is invalid."""


class DataFormatError(PymtlError, ValueError):
    """A dataset file is missing, unreadable, or does not hold what its format says."""


class OpError(PymtlError, ValueError):
    """A compiled op was called with a tensor of the wrong dtype, shape, device or layout."""
