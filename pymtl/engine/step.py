"""One training step: forward, per-task losses, the balancer, gradients [pymtl].

The step asks the balancer what it needs (``Balancer.needs``) and computes exactly that, once,
here:

* ``LOSSES``: weights from the detached losses, one backward of ``Σ_t w_t L_t + aux``.
  Equal and fixed weights cost one backward pass.
* ``GRAM`` / ``JACOBIAN``: the per-task gradients J [T, P] of the shared parameters (one
  ``autograd.grad`` per task), ``G = gram(J)`` when asked; the shared parameters receive
  ``Jᵀ w`` and each task's own parameters ``s_t ∇θ_t L_t``.
* ``REPRESENTATION_*``: the same with respect to the shared representation Z: the decoder runs
  on a detached copy of Z, J_Z is taken there, and ``J_Zᵀ w`` is back-propagated through the
  encoder once.

Under ``torch.distributed`` the per-task gradients are averaged across processes before the
Gram matrix is built (SPEC-methods §0.1), and every gradient is averaged before the optimiser
step. The step never calls the optimiser: the loop does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs
import torch
import torch.distributed as dist
from torch import Tensor, nn

from pymtl.architectures.base import Architecture
from pymtl.balancers.base import Balancer, Needs, Weights
from pymtl.errors import PymtlError
from pymtl.ops.gram import gram
from pymtl.tasks.base import Task

__all__ = ["NonFiniteLossError", "StepResult", "TrainStep"]

_GRAM = (Needs.GRAM, Needs.REPRESENTATION_GRAM)
_REPRESENTATION = (Needs.REPRESENTATION_GRAM, Needs.REPRESENTATION_JACOBIAN)


class NonFiniteLossError(PymtlError):
    """A task loss became NaN or infinite."""


@attrs.frozen(eq=False)
class StepResult:
    """What one step produced (detached)."""

    losses: Tensor  # [T], averaged over processes under torch.distributed
    weights: Weights


def _device_type(rows: Sequence[Tensor]) -> str:
    return rows[0].device.type if rows else "cpu"


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _average(tensors: Sequence[Tensor]) -> None:
    """All-reduce-average ``tensors`` in place across processes (no-op without a group)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


class TrainStep:
    """Computes losses and gradients for one batch as the balancer requires.

    Args:
        model: the architecture.
        tasks: the dataset's task declarations (model output keys).
        balancer: maps losses (and G / J) to weights.
    """

    def __init__(self, model: Architecture, tasks: Sequence[Task], balancer: Balancer) -> None:
        self.model = model
        self.tasks = tuple(tasks)
        self.balancer = balancer
        needs = balancer.needs
        # parameters that are not shared: each task's own, and the balancer's
        self.own = [p for t in model.tasks for p in model.task_parameters(t) if p.requires_grad]
        self.own += [p for p in balancer.parameters() if p.requires_grad]
        if needs in _REPRESENTATION and not model.has_shared_representation:
            raise PymtlError(
                f"balancer {balancer.name!r} needs the shared representation, but architecture "
                f"{model.name!r} has none; use an architecture with a shared encoder (e.g. hps)"
            )
        if needs not in _REPRESENTATION and needs is not Needs.LOSSES:
            self.shared = [p for p in model.shared_parameters() if p.requires_grad]
            if not self.shared:
                raise PymtlError(
                    f"balancer {balancer.name!r} needs gradients of shared parameters, but "
                    f"architecture {model.name!r} shares none"
                )

    def __call__(self, batch: Mapping[str, Tensor]) -> StepResult:
        needs = self.balancer.needs
        x = batch["image"]
        if needs in _REPRESENTATION:
            z = self.model.encode(x)
            z_leaf = z.detach().requires_grad_()
            outputs = self.model.decode(z_leaf, x.shape[-2:])
        else:
            outputs = self.model(x)
        losses = self.losses(outputs, batch)
        seen = losses.detach().clone()
        _average([seen])  # every process gives the balancer the same (global-batch) losses
        observe = getattr(self.balancer, "observe_kpis", None)
        if observe is not None and getattr(self.balancer, "kpi", None) == "batch":
            # balancers that weigh by task KPIs (DTP with kpi = "batch") see this batch's
            from pymtl.balancers.dtp import batch_kpis

            kpis = batch_kpis(self.tasks, {k: v.detach() for k, v in outputs.items()}, batch)
            _average([kpis])  # a NaN (unmeasured) task stays NaN on every process
            observe(kpis)
        if needs is Needs.LOSSES:
            weights = self.balancer(seen)
            if weights.task is not weights.shared and not torch.equal(weights.task, weights.shared):
                raise PymtlError(
                    f"balancer {self.balancer.name!r} needs only the losses but returned task "
                    "weights s different from the shared weights w; one backward pass can apply "
                    "only one of them (declare needs = Needs.GRAM or JACOBIAN to use both)"
                )
            total = (weights.shared * losses).sum()
            if weights.aux_loss is not None:
                total = total + weights.aux_loss
            total.backward()
        elif needs in _REPRESENTATION:
            weights = self._gradient_step(losses, seen, [z_leaf], representation=True)
            z.backward(z_leaf.grad)  # type: ignore[no-untyped-call]
        else:
            weights = self._gradient_step(losses, seen, list(self.shared), representation=False)
        if _world_size() > 1:
            _average([p.grad for p in self.model.parameters() if p.grad is not None])
        return StepResult(losses=seen, weights=weights)

    @torch.no_grad()
    def losses_after(self, batch: Mapping[str, Tensor]) -> Tensor:
        """[T] losses of ``batch`` with the current weights (after the optimiser step),
        process-averaged; for balancers that learn from the loss decrease (FAMO)."""
        # same mode as the step (BatchNorm uses batch statistics, as FAMO's reference does),
        # but the running statistics are restored: this extra pass leaves no trace
        saved = [b.clone() for b in self.model.buffers()]
        try:
            losses = self.losses(self.model(batch["image"]), batch)
        finally:
            for b, s in zip(self.model.buffers(), saved, strict=True):
                b.copy_(s)
        _average([losses])
        return losses

    def losses(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> Tensor:
        """[T] task losses, in task order; a NaN or infinite loss stops the run."""
        values = []
        for task in self.tasks:
            labelled = batch.get(f"{task.name}.mask")
            values.append(task.loss(outputs[task.name], batch[task.name], labelled))
        losses = torch.stack(values)
        if not torch.isfinite(losses).all():
            bad = [
                f"{t.name}={v:g}"
                for t, v in zip(self.tasks, losses.tolist(), strict=True)
                if not torch.isfinite(torch.tensor(v))
            ]
            raise NonFiniteLossError(f"non-finite loss: {', '.join(bad)}")
        return losses

    def _gradient_step(
        self, losses: Tensor, seen: Tensor, wrt: Sequence[Tensor], *, representation: bool
    ) -> Weights:
        rows = []
        for t in range(len(self.tasks)):
            grads = torch.autograd.grad(losses[t], wrt, retain_graph=True, allow_unused=True)
            rows.append(
                torch.cat(
                    [
                        (g if g is not None else torch.zeros_like(p)).reshape(-1)
                        for g, p in zip(grads, wrt, strict=True)
                    ]
                )
            )
        with torch.autocast(_device_type(rows), enabled=False):  # the T×T maths stays fp32+
            J = torch.stack(rows)
            J = J if J.dtype in (torch.float32, torch.float64) else J.float()  # amp: bf16 rows
            return self._apply(losses, seen, J, wrt, representation=representation)

    def _apply(
        self,
        losses: Tensor,
        seen: Tensor,
        J: Tensor,
        wrt: Sequence[Tensor],
        *,
        representation: bool,
    ) -> Weights:
        if representation:
            # Z is split by sample across processes: the global J_Z stacks the local ones, each
            # scaled by 1/W (the global loss averages the processes'), so G_Z = Σ_r G_r / W².
            G = gram(J)
            _average([G])
            G = G / _world_size()
        else:
            _average([J])  # the Gram of rank-averaged gradients (SPEC-methods §0.1)
            G = gram(J) if self.balancer.needs in _GRAM else J
        if self.balancer.needs in _GRAM:
            weights: Weights = self.balancer(seen, gram=G)
        else:
            weights = self.balancer(seen, jacobian=J)
        # task-specific (and balancer) parameters: s_t ∇θ_t L_t, without a pass through the
        # shared part, whose gradient is Jᵀ w (set below)
        task_total = (weights.task.to(losses) * losses).sum()
        if weights.aux_loss is not None:
            task_total = task_total + weights.aux_loss
        if self.own:
            torch.autograd.backward(task_total, inputs=self.own)
        combined = weights.shared.to(J) @ J
        offset = 0
        for p in wrt:
            g = combined[offset : offset + p.numel()].view_as(p)
            p.grad = g.to(p.dtype)  # a view into `combined`: no copy of the P-vector
            offset += p.numel()
        return weights


def zero_grad(model: nn.Module) -> None:
    """Drop every gradient (set to None) before the next step."""
    for p in model.parameters():
        p.grad = None
