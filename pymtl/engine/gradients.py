"""The gradient engine: per-task gradients J, their Gram matrices, and how to get them [pymtl].

Modes (``train.grad_mode``):

* ``sequential``: one ``autograd.grad`` per task, the rows stacked into J [T, P]. This is how
  most MTL libraries do it; here it is the fallback and the benchmark baseline.
* ``batched``: one vectorised backward (``autograd.grad(..., is_grads_batched=True)``, a vmap
  over the T unit cotangents) gives all T rows at once; J [T, P] is materialised.
* ``gram``: J is never materialised. The shared parameters are split into chunks whose rows fit
  the memory budget; one batched backward per chunk gives that chunk's rows, which are folded
  into the Gram matrix and dropped. The update is then one weighted backward of ``Σ_t w_t L_t``
  (one per parameter group when the balancer weighs groups separately). Costs one backward
  per chunk plus one; one chunk when everything fits.
* ``auto`` (default): J is materialised when it (and its stacking copy) fits
  ``train.grad_memory_mb`` or when the balancer needs J itself, else ``gram``. The rows come
  from the vectorised backward on CUDA and from T backward calls on the CPU, where the
  vectorised backward measured 5–25% slower (bench/README.md, "Training step").
  Representation-mode balancers always materialise J_Z (the size of one activation).

If the vectorised backward fails for a model (an op without a batching rule), the step falls
back to ``sequential`` for the rest of the run and says so once.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import attrs
import torch
from torch import Tensor

from pymtl.balancers.base import GROUPS, Needs
from pymtl.ops.gram import gram

__all__ = [
    "MODES",
    "GradientPlan",
    "chunk_parameters",
    "group_bounds",
    "jacobian",
    "plan_gradients",
    "stacked_grams",
]

MODES = ("auto", "sequential", "batched", "gram")


@attrs.frozen
class GradientPlan:
    """How the step gets per-task gradients.

    Attributes:
        mode: ``losses``, ``sequential``, ``batched`` or ``gram``.
        batched: rows come from one vectorised backward (else one backward per task).
        chunks: for ``gram``, ``(start, stop)`` ranges of parameter indices, one backward
            (or T) each.
        reason: why this mode (logged by the training loop).
    """

    mode: str
    batched: bool = False
    chunks: tuple[tuple[int, int], ...] = ()
    reason: str = ""


def _mb(nbytes: float) -> str:
    return f"{nbytes / 2**20:.1f} MB"


def plan_gradients(
    needs: Needs,
    params: Sequence[Tensor],
    num_tasks: int,
    *,
    mode: str = "auto",
    budget_mb: float = 1024.0,
    device: torch.device | str = "cpu",
) -> GradientPlan:
    """Choose the gradient mode for a balancer's ``needs`` and the shared ``params``.

    Args:
        needs: what the balancer declares.
        params: the tensors the per-task gradients are taken of (shared parameters, W, or Z's
            stand-in: only sizes and dtypes are read).
        num_tasks: T.
        mode: the requested mode (``auto`` chooses).
        budget_mb: memory allowed for J and its stacking copy.
        device: where the model lives (``auto`` uses the vectorised backward on CUDA only).
    """
    if mode not in MODES:
        raise ValueError(f"train.grad_mode must be one of {', '.join(MODES)} (got {mode!r})")
    if needs is Needs.LOSSES:
        return GradientPlan("losses", reason="the balancer needs the losses only: one backward")
    sizes = [p.numel() * p.element_size() for p in params]
    total = num_tasks * sum(sizes)
    budget = budget_mb * 2**20
    representation = needs in (Needs.REPRESENTATION_GRAM, Needs.REPRESENTATION_JACOBIAN)
    needs_jacobian = needs in (Needs.JACOBIAN, Needs.REPRESENTATION_JACOBIAN)
    what = f"J [{num_tasks}, {sum(p.numel() for p in params)}] = {_mb(total)}"
    if representation:
        what = "J_Z [T, |Z|] of the shared activation"
    batched = mode == "batched" or (
        mode in ("auto", "gram") and torch.device(device).type == "cuda"
    )
    rows = "one vectorised backward" if batched else f"{num_tasks} backward calls"
    if mode in ("sequential", "batched"):
        return GradientPlan(mode, batched=batched, reason=f"requested; {what}")
    if mode == "gram" and (representation or needs_jacobian):
        kind = "J_Z (representation)" if representation else "J itself"
        return GradientPlan(
            "batched" if batched else "sequential",
            batched=batched,
            reason=f"gram mode requested, but the balancer needs {kind}; {rows}",
        )
    fits = 2 * total <= budget
    if mode == "auto" and (representation or needs_jacobian or fits):
        why = "within" if fits or representation else "over (the balancer needs J itself)"
        return GradientPlan(
            "batched" if batched else "sequential",
            batched=batched,
            reason=f"{what}, {why} the budget of {_mb(budget)}; {rows}",
        )
    chunks = chunk_parameters(sizes, budget / (2 * num_tasks))
    why = "requested" if mode == "gram" else f"over the budget of {_mb(budget)}"
    return GradientPlan(
        "gram",
        batched=batched,
        chunks=chunks,
        reason=f"{why}; {what} never stored: {len(chunks)} chunk(s) of {rows}, "
        "then a weighted backward",
    )


def chunk_parameters(sizes: Sequence[int], limit: float) -> tuple[tuple[int, int], ...]:
    """Consecutive ``(start, stop)`` ranges of parameter indices whose byte ``sizes`` sum to at
    most ``limit`` each (a parameter larger than ``limit`` gets a range of its own)."""
    chunks, start, used = [], 0, 0
    for i, size in enumerate(sizes):
        if i > start and used + size > limit:
            chunks.append((start, i))
            start, used = i, 0
        used += size
    chunks.append((start, len(sizes)))
    return tuple(chunks)


def jacobian(losses: Tensor | Sequence[Tensor], wrt: Sequence[Tensor], *, batched: bool) -> Tensor:
    """J [T, Σ numel]: row t is ``∇_wrt losses[t]`` flattened (zeros where unused).

    ``batched``: one vectorised backward over the T unit cotangents; else T backward calls,
    best given the T scalar losses before stacking (a backward from ``stack(...)[t]`` also
    runs through the other tasks' graphs with zero gradients). The graph is retained.
    """
    T = len(losses)
    if batched:
        losses = losses if isinstance(losses, Tensor) else torch.stack(list(losses))
        eye = torch.eye(T, dtype=losses.dtype, device=losses.device)
        grads = torch.autograd.grad(
            losses, wrt, grad_outputs=eye, retain_graph=True, allow_unused=True,
            is_grads_batched=True,
        )  # fmt: skip
        return torch.cat(
            [
                (g if g is not None else p.new_zeros((T, *p.shape))).reshape(T, -1)
                for g, p in zip(grads, wrt, strict=True)
            ],
            dim=1,
        )
    rows = []
    for t in range(T):
        grads = torch.autograd.grad(losses[t], wrt, retain_graph=True, allow_unused=True)
        rows.append(
            torch.cat(
                [
                    (g if g is not None else torch.zeros_like(p)).reshape(-1)
                    for g, p in zip(grads, wrt, strict=True)
                ]
            )
        )
    return torch.stack(rows)


def group_bounds(names: Sequence[str], params: Sequence[Tensor], groups: str) -> list[int]:
    """Column boundaries ``[b_0 = 0, …, b_K = P]`` of the parameter groups in J.

    ``whole_model``: one group; ``per_tensor``: one per parameter; ``per_layer``: one per
    module (consecutive parameters sharing the name prefix before the last dot).
    """
    if groups not in GROUPS:
        raise ValueError(f"parameter groups must be one of {', '.join(GROUPS)} (got {groups!r})")
    bounds, offset, last = [0], 0, None
    for name, p in zip(names, params, strict=True):
        key = name if groups == "per_tensor" else name.rpartition(".")[0]
        if groups != "whole_model" and last is not None and key != last:
            bounds.append(offset)
        offset += p.numel()
        last = key
    bounds.append(offset)
    return bounds


def stacked_grams(J: Tensor, bounds: Sequence[int], *, grouped: bool) -> Tensor:
    """The Gram of J's column groups: [T, T] for one group, else [K, T, T]."""
    if not grouped:
        return gram(J)
    return torch.stack([gram(J[:, a:b]) for a, b in itertools.pairwise(bounds)])
