"""Distillation losses; each registers through ``pymtl_register_distillation_losses``."""

from pymtl.distillation.base import DistillationLoss, Signals, TeacherKind

__all__ = ["DistillationLoss", "Signals", "TeacherKind"]
