"""Checkpoints: written atomically, validated on load [pymtl].

A checkpoint holds everything needed to continue a run exactly: model, optimiser, LR schedule
and balancer states, the position (epoch, step within the epoch, global step), the torch RNG
states, the run's config hash and the pymtl version. It is written to a temporary file in the
same folder and renamed over the old one (``os.replace`` is atomic on POSIX), so a run killed
while saving leaves the previous checkpoint intact. Loading refuses a file that is not a pymtl
checkpoint, is truncated, or belongs to a different configuration, and says which.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

import pymtl
from pymtl.errors import PymtlError

__all__ = ["FORMAT", "CheckpointError", "load_checkpoint", "save_checkpoint"]

FORMAT = "pymtl-checkpoint-1"
_REQUIRED = (
    "format",
    "config_hash",
    "epoch",
    "step_in_epoch",
    "global_step",
    "model",
    "optimizer",
    "scheduler",
    "balancer",
    "rng",
)


class CheckpointError(PymtlError):
    """A checkpoint file is missing, unreadable, or does not belong to this run."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Atomically write ``state`` (plus format and version tags) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "pymtl_version": pymtl.__version__, **state}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, *, config_hash: str | None = None) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` and check it fits this run.

    Raises:
        CheckpointError: the file is missing, corrupt, not a pymtl checkpoint, or was written
            by a run with a different ``config_hash``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle garbage, ...
        raise CheckpointError(
            f"checkpoint {str(path)!r} is unreadable ({type(exc).__name__}: {exc}); "
            "it may be truncated or not a checkpoint"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{str(path)!r} is not a pymtl checkpoint (format {got!r}, expected {FORMAT!r})"
        )
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} lacks {', '.join(missing)}")
    if config_hash is not None and state["config_hash"] != config_hash:
        raise CheckpointError(
            f"checkpoint {str(path)!r} was written by another configuration (config hash "
            f"{state['config_hash']}, this run {config_hash}); resume with the run's own "
            "config.toml or start a new run directory"
        )
    return state
