"""The training engine: build components from a run config, train, evaluate, checkpoint."""

from pymtl.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from pymtl.engine.loop import train
from pymtl.engine.step import StepResult, TrainStep

__all__ = [
    "CheckpointError",
    "StepResult",
    "TrainStep",
    "load_checkpoint",
    "save_checkpoint",
    "train",
]
