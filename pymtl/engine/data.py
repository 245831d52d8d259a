"""Deterministic, resumable batching [pymtl].

The order of epoch ``e`` is a permutation drawn from a generator seeded with ``(seed, e)``, so
it does not depend on worker count, on earlier epochs, or on where a run was resumed: a
resumed run skips exactly the batches it had done. Under ``torch.distributed`` every process
draws the same permutation and takes its own slice of each global batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader

from pymtl.data.base import Dataset

__all__ = ["epoch_batches", "loader"]


def epoch_batches(
    n: int,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    rank: int = 0,
    world: int = 1,
    drop_last: bool = True,
) -> list[list[int]]:
    """Index lists of epoch ``epoch`` for process ``rank`` of ``world``."""
    if shuffle:
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(n, generator=gen).tolist()
    else:
        order = list(range(n))
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    batches = [order[i : i + batch_size] for i in range(0, stop, batch_size)]
    if world > 1:
        if batch_size % world:
            raise ValueError(f"batch size {batch_size} is not divisible by the {world} processes")
        batches = [b[rank::world] for b in batches]
    return batches


def loader(
    dataset: Dataset, batches: list[list[int]], *, workers: int = 0
) -> DataLoader[dict[str, torch.Tensor]]:
    """A DataLoader yielding exactly ``batches`` (collated dicts)."""
    return DataLoader(dataset, batch_sampler=batches, num_workers=workers, persistent_workers=False)


def take(it: Iterator[dict[str, torch.Tensor]], n: int) -> Iterator[dict[str, torch.Tensor]]:
    for i, item in enumerate(it):
        if i >= n:
            return
        yield item
