"""Loads the compiled extension ``pymtl._C`` when it is there.

Three cases, all reported by :func:`status`:

* built and importable: ops use its CPU (and, if compiled, CUDA) kernels;
* not built (``PYMTL_NO_EXT=1`` install) or disabled at run time (``PYMTL_DISABLE_EXT=1``):
  every op uses its pure-PyTorch reference, silently;
* built but not importable (wrong Python, missing runtime library): the references are used
  and a ``RuntimeWarning`` says why.
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType

import torch  # noqa: F401  (torch and its libgomp are loaded before our extension)

__all__ = ["ENV_DISABLE_EXT", "extension", "status"]

ENV_DISABLE_EXT = "PYMTL_DISABLE_EXT"


def _load() -> tuple[ModuleType | None, str]:
    if os.environ.get(ENV_DISABLE_EXT, "").strip().lower() in ("1", "true", "yes", "on"):
        return None, f"disabled by {ENV_DISABLE_EXT}"
    try:
        # importlib, not `from . import _C`: the latter reports a misleading circular import
        module = importlib.import_module("pymtl._C")
    except ModuleNotFoundError as exc:
        if exc.name == "pymtl._C":
            return None, "not built (pure-Python install)"
        reason = f"{type(exc).__name__}: {exc}"
    except ImportError as exc:
        reason = f"{type(exc).__name__}: {exc}"
    else:
        return module, "compiled"
    warnings.warn(
        f"pymtl: compiled ops unavailable ({reason}); using the PyTorch references",
        RuntimeWarning,
        stacklevel=2,
    )
    return None, reason


extension, _reason = _load()


def status() -> str:
    """One line: which kernels are available, or why none are."""
    if extension is None:
        return f"PyTorch references ({_reason})"
    parts = ["cpu" + (" (OpenMP)" if extension.has_openmp else "")]
    if extension.has_cuda:
        parts.append("cuda")
    return "compiled: " + ", ".join(parts)
