"""torchrun support: joining the process group, identical models on every process [pymtl].

``pymtl train`` under ``torchrun`` reads the group from the environment (``WORLD_SIZE``,
``RANK``, ``LOCAL_RANK``), uses gloo on CPU and NCCL on GPUs, and starts every process from
rank 0's weights. Gradient averaging happens in :mod:`pymtl.engine.step`.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from pymtl.architectures.base import Architecture

__all__ = ["init_distributed", "rank_world", "sync_model"]


def rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: str) -> tuple[torch.device, bool]:
    """Join the process group torchrun describes (WORLD_SIZE > 1); returns the device of this
    process and whether the group was created here."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1 or (dist.is_available() and dist.is_initialized()):
        return torch.device(device), False
    cuda = device.startswith("cuda")
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local), True
    return torch.device(device), True


def sync_model(model: Architecture, device: torch.device) -> Architecture:
    """Same initial weights on every process; synchronised BatchNorm on CUDA.

    On CPU, BatchNorm statistics stay per process (torch has no CPU SyncBatchNorm): results
    then depend on how the batch is split, exactly as with DDP; use GroupNorm
    (``norm = "group"``) for batch-split-independent results.
    """
    _, world = rank_world()
    if world == 1:
        return model
    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # type: ignore[no-untyped-call]
    for tensor in [*model.parameters(), *model.buffers()]:
        dist.broadcast(tensor.data, src=0)
    return model
